from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from gputui.files import atomic
from gputui.files.atomic import atomic_write_json, atomic_write_text


def test_numpy_and_pandas_values_become_plain_json(tmp_path):
    import pandas as pd

    obj = {
        "rows": np.int64(7),
        "mean": np.float32(0.5),
        "ids": np.arange(3),
        "when": pd.Timestamp("2026-01-02"),
        "path": Path("/x"),
        "tags": {"b", "a"},
    }
    atomic_write_json(tmp_path / "s.json", obj)
    assert json.loads((tmp_path / "s.json").read_text()) == {
        "rows": 7,
        "mean": 0.5,
        "ids": [0, 1, 2],
        "when": "2026-01-02T00:00:00",
        "path": "/x",
        "tags": ["a", "b"],
    }


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "summary.json"
    atomic_write_text(target, "old")
    try:
        atomic_write_json(target, {"bad": object()})
    except TypeError:
        pass
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_new_files_get_the_users_normal_mode_and_replaced_files_keep_theirs(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "report.md", "x")
        assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o640
        (tmp_path / "report.md").chmod(0o604)
        atomic_write_text(tmp_path / "report.md", "y")
        assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o604
    finally:
        os.umask(old)


@pytest.mark.parametrize("write", [atomic._write_unnamed, atomic._write_named], ids=["unnamed", "mkstemp"])
def test_both_ways_of_writing_replace_whole_files_with_the_usual_modes(tmp_path, write):
    """The unnamed-file way (O_TMPFILE, linked in) and mkstemp (where a filesystem has no O_TMPFILE)."""
    old = os.umask(0o027)
    try:
        target = str(tmp_path / "summary.json")
        write(target, str(tmp_path), b"first", True)
        assert (tmp_path / "summary.json").read_bytes() == b"first"
        assert os.stat(target).st_mode & 0o777 == 0o640
        os.chmod(target, 0o604)
        write(target, str(tmp_path), b"second, longer", False)
        assert (tmp_path / "summary.json").read_bytes() == b"second, longer"
        assert os.stat(target).st_mode & 0o777 == 0o604
    finally:
        os.umask(old)
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temp name left behind


def test_a_write_into_a_missing_folder_makes_it(tmp_path):
    atomic_write_text(tmp_path / "tasks" / "shard-3" / "summary.json", "{}")
    assert (tmp_path / "tasks" / "shard-3" / "summary.json").read_text() == "{}"


def test_open_append_creates_a_log_once_and_appends_to_it(tmp_path):
    log = str(tmp_path / "shard-0.attempt1.log")
    old = os.umask(0o022)
    try:
        first = atomic.open_append(log)
    finally:
        os.umask(old)
    assert os.readlink(f"/proc/self/fd/{first}") == log  # where a worker's output goes, as ls -l /proc shows it
    second = atomic.open_append(log)  # another writer (the node's runner) opens the same file
    try:
        os.write(first, b"gputui: launch\n")
        os.write(second, b"worker line\n")
        os.write(first, b"gputui: exit 0\n")
    finally:
        os.close(first)
        os.close(second)
    assert Path(log).read_text() == "gputui: launch\nworker line\ngputui: exit 0\n"
    assert os.stat(log).st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["shard-0.attempt1.log"]


def test_a_second_name_replaces_what_was_there_and_shares_the_file(tmp_path):
    facts, marker = tmp_path / "t.done.json", tmp_path / "t.done"
    marker.write_text("stale")
    atomic_write_text(facts, '{"status": "done"}')
    atomic.atomic_link(facts, marker)
    assert marker.read_text() == '{"status": "done"}'
    assert marker.stat().st_ino == facts.stat().st_ino  # one file, two names
    atomic_write_text(facts, '{"status": "done", "again": true}')  # the twin replaced: the marker follows
    atomic.atomic_link(facts, marker)
    assert json.loads(marker.read_text()) == {"status": "done", "again": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.done", "t.done.json"]


def _strict(text: str):
    """Parse as strict JSON (RFC 8259): Python's json would take NaN and Infinity."""

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_numbers_that_are_not_finite_are_written_as_null_strict_json(tmp_path):
    obj = {"loss": float("nan"), "up": [1.5, float("inf")], "pair": (2, float("-inf")), "np": np.float32("nan")}
    atomic_write_json(tmp_path / "s.json", obj)
    expected = {"loss": None, "up": [1.5, None], "pair": [2, None], "np": None}
    assert _strict((tmp_path / "s.json").read_text()) == expected
    assert atomic.dumps_json({"ok": 0.25}, indent=None) == '{"ok": 0.25}'


def test_a_file_written_in_pieces_replaces_the_old_one_whole_or_not_at_all(tmp_path):
    path = tmp_path / "tasks.json"
    atomic.atomic_write_chunks(path, (f"{i}\n".encode() for i in range(3)))
    assert path.read_text() == "0\n1\n2\n"

    def failing():
        yield b"half"
        raise RuntimeError("the database went away")

    with pytest.raises(RuntimeError):
        atomic.atomic_write_chunks(path, failing())
    assert path.read_text() == "0\n1\n2\n" and sorted(p.name for p in tmp_path.iterdir()) == ["tasks.json"]


def test_open_append_with_a_kept_proc_descriptor_creates_the_log_and_keeps_the_descriptor(tmp_path):
    """A waiter keeps its own descriptor of /proc/self/fd for the logs it creates, attempt after attempt."""
    proc = atomic.open_proc_fds()
    assert proc is not None
    try:
        for n in (1, 2):
            log = str(tmp_path / f"shard-0.attempt{n}.log")
            fd = atomic.open_append(log, proc)
            try:
                assert os.readlink(f"/proc/self/fd/{fd}") == log
                os.write(fd, b"line\n")
            finally:
                os.close(fd)
            assert Path(log).read_text() == "line\n"
        assert os.readlink(f"/proc/self/fd/{proc}") == f"/proc/{os.getpid()}/fd"  # still ours, still open
    finally:
        os.close(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-0.attempt1.log", "shard-0.attempt2.log"]
