"""The pure rules behind `gputui set max_parallel=...` and [job].time_limit_s."""

from __future__ import annotations

import pytest

from gputui.api.verbs import SetParallel, setting
from gputui.engine.control import parallel_setting
from gputui.engine.rules.parallel import BadSetting, change_line, new_limit, origin, parse_value
from gputui.engine.rules.time_limit import RunClock, limit_spelled, over, paused_for, reason, spelled


def test_a_value_is_a_number_a_step_or_the_job_files():
    assert parse_value("5") == (5, 0)
    assert parse_value("+2") == (None, 2) and parse_value("-1") == (None, -1)
    assert parse_value("job") == (None, 0)
    for bad in ("0", "-0", "+0", "x", "", "1.5", "jobs"):
        with pytest.raises(BadSetting, match="expected a whole number 1 or more"):
            parse_value(bad)


def test_the_new_limit_never_falls_below_one_and_a_step_needs_a_number_now():
    assert new_limit(4, None, 1, 8) == 5 and new_limit(1, None, -1, 8) == 1
    assert new_limit(4, 2, 0, 8) == 2 and new_limit(4, None, 0, 8) == 8
    with pytest.raises(BadSetting, match="give a number"):
        new_limit(None, None, 1, None)
    with pytest.raises(BadSetting):
        new_limit(4, 0, 0, 8)


def test_what_a_control_carries_becomes_what_the_run_keeps():
    assert parallel_setting(4, {"to": None, "by": 0}, 8) is None  # back to the job file's
    assert parallel_setting(4, {"to": 6, "by": 0}, 8) == 6
    assert parallel_setting(4, {"to": None, "by": -1}, 8) == 3


def test_the_cli_setting_names_what_it_expects():
    assert setting("max_parallel=3") == SetParallel(to=3)
    assert setting("max_parallel=-1") == SetParallel(by=-1)
    assert setting("max_parallel=job") == SetParallel()
    assert SetParallel(to=3).args == {"to": 3, "by": 0}
    with pytest.raises(ValueError, match="unknown setting 'gpus'; expected one of: max_parallel=N"):
        setting("gpus=2")
    with pytest.raises(ValueError, match="is not KEY=VALUE"):
        setting("max_parallel")


def test_the_words_for_a_change_and_its_origin():
    assert change_line(4, 5, live=True) == "max_parallel 4 → 5 (more tasks start at once from now)"
    assert change_line(4, 2, live=True).startswith("max_parallel 4 → 2 (running tasks go on;")
    assert change_line(None, 3, live=True) == "max_parallel auto → 3"
    assert "next start" in change_line(1, 2, live=False)
    assert origin(3, 8) == "3 (set; job file says 8)"
    assert origin(3, None) == "3 (set; the job file sets none)"
    assert origin(None, 8) == ""


def test_durations_as_people_write_them():
    assert [spelled(s) for s in (0.2, 1, 59.6, 90, 3600, 3601, 3661, 90000)] == [
        "0s", "1s", "1m0s", "1m30s", "1h0m", "1h0m", "1h1m", "1d1h"
    ]  # fmt: skip
    assert [limit_spelled(s) for s in (1, 30, 90, 3600, 5400, 86400, 1.5)] == [
        "1s", "30s", "90s", "1h", "90m", "1d", "1.5s"
    ]  # fmt: skip
    assert reason(3600, 3600.4) == "time limit (1h) reached after 1h0m"


def test_the_run_clock_holds_while_paused():
    clock = RunClock(ran_s=2.0, last=100.0)
    assert clock.tick(103.0, running=True) == 5.0
    assert clock.tick(110.0, running=False) == 5.0  # paused: not run time
    assert clock.tick(111.0, running=True) == 6.0
    assert not over(None, 1e9) and not over(7, 6.0) and over(6, 6.0)


def test_a_re_adopted_attempt_leaves_out_the_pauses_recorded_since_its_start():
    marks = [(50.0, "paused"), (60.0, "resumed"), (105.0, "paused"), (110.0, "resumed"), (120.0, "paused")]
    assert paused_for(marks, since=100.0, now=130.0) == 5.0 + 10.0  # the one before its start is not its own
    assert paused_for([], since=100.0, now=130.0) == 0.0
    assert paused_for([(101.0, "resumed"), (102.0, "paused"), (103.0, "paused")], 100.0, 104.0) == 2.0
