"""The thread count a local worker is given: pure values."""

from __future__ import annotations

from gputui.engine.rules.threads import thread_env


def test_cores_are_shared_among_the_parallel_workers():
    assert thread_env(set(), 16, 4) == {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"}
    assert thread_env(set(), 16, 5) == {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3"}  # rounded down


def test_at_least_one_thread_each():
    assert thread_env(set(), 2, 8) == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    assert thread_env(set(), 1, 1) == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def test_a_variable_already_set_is_left_alone():
    assert thread_env({"OMP_NUM_THREADS", "PATH"}, 16, 4) == {"MKL_NUM_THREADS": "4"}
    assert thread_env({"OMP_NUM_THREADS", "MKL_NUM_THREADS"}, 16, 4) == {}


def test_nothing_is_set_where_the_workers_are_not_bounded():
    assert thread_env(set(), 16, None) == {}
