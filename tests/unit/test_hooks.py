"""Worker hooks write one whole JSON line per call, and EventReader reads exactly those lines back."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from gputui import hooks
from gputui.hooks.reader import EventReader, Latest, read_all


@pytest.fixture
def events_file(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "events.jsonl"
    monkeypatch.setenv(hooks.ENV_VAR, str(path))
    return path


def test_outside_gputui_every_call_is_a_noop(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for value in (None, ""):
        if value is None:
            monkeypatch.delenv(hooks.ENV_VAR, raising=False)
        else:
            monkeypatch.setenv(hooks.ENV_VAR, value)
        assert not hooks.enabled()
        hooks.progress(1, 10)
        hooks.log_metrics(1, loss=0.5)
        hooks.mark_healthy()
        hooks.phase("eval")
        hooks.mark_done(loss=0.1)
        hooks.mark_failed("boom")
    assert list(tmp_path.iterdir()) == []


def test_each_call_is_read_back(events_file):
    assert hooks.enabled()
    reader = EventReader(events_file)
    hooks.progress(3, 10)
    hooks.log_metrics(3, loss=0.5, lr=1e-3, ok=True, n=7)
    hooks.mark_healthy()
    first = reader.read()
    assert [e.kind for e in first] == ["progress", "metrics", "healthy"]
    assert (first[0].done, first[0].total) == (3, 10)
    assert first[1].step == 3
    assert first[1].values == {"loss": 0.5, "lr": 1e-3, "ok": 1.0, "n": 7.0}
    assert reader.read() == []  # nothing new

    hooks.mark_done(loss=0.25)
    hooks.mark_failed("CUDA out of memory")
    second = reader.read()
    assert [e.kind for e in second] == ["done", "failed"]
    assert second[0].values == {"loss": 0.25}
    assert second[1].reason == "CUDA out of memory"
    assert all(e.t > 1e9 for e in first + second)
    assert reader.bad_lines == 0

    line = json.loads(events_file.read_text().splitlines()[1])
    assert line["event"] == "metrics" and line["step"] == 3 and line["values"]["loss"] == 0.5


def test_non_numbers_are_dropped_and_scalars_with_item_accepted(events_file, capsys):
    class Scalar:
        def item(self):
            return 2.5

    hooks.log_metrics(1, loss=Scalar(), name="resnet", acc=0.9)
    (ev,) = read_all(events_file)
    assert ev.values == {"loss": 2.5, "acc": 0.9}
    assert "name" in capsys.readouterr().err


def test_non_finite_values_round_trip(events_file):
    hooks.log_metrics(5, loss=float("nan"), up=float("inf"), down=float("-inf"))
    hooks.mark_done(loss=float("nan"))
    raw = events_file.read_text()
    assert "NaN" not in raw and "Infinity" not in raw
    for line in raw.splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    metrics, done = read_all(events_file)
    assert math.isnan(metrics.values["loss"]) and math.isnan(done.values["loss"])
    assert metrics.values["up"] == math.inf and metrics.values["down"] == -math.inf


def test_phases_are_read_back(events_file):
    hooks.phase("eval")
    hooks.phase("train")
    eval_, train = read_all(events_file)
    assert (eval_.kind, eval_.phase, train.kind, train.phase) == ("phase", "eval", "phase", "train")
    assert not Latest().feed([eval_, train]).failed  # a kind the views need not know


def test_partial_last_line_is_held_until_complete(tmp_path):
    path = tmp_path / "events.jsonl"
    reader = EventReader(path)
    assert reader.read() == []  # a missing file is no events
    line = json.dumps({"t": 1.0, "event": "metrics", "step": 1, "values": {"loss": 1.0}}) + "\n"
    with open(path, "ab") as f:
        f.write(line.encode() + line[:20].encode())
    assert [e.step for e in reader.read()] == [1]
    assert reader.read() == []
    with open(path, "ab") as f:
        f.write(line[20:].encode() + b"not json\n" + b'{"event": "metrics"}\n' + b"\n")
    got = reader.read()
    assert [e.step for e in got] == [1]
    assert reader.bad_lines == 2  # blank lines are not bad
    assert len(read_all(path)) == 2


def test_a_replaced_or_truncated_events_file_is_read_from_its_start(tmp_path):
    path = tmp_path / "events.jsonl"
    line = json.dumps({"t": 1.0, "event": "metrics", "step": 1, "values": {"loss": 1.0}}) + "\n"
    path.write_text(line)
    reader = EventReader(path)
    assert [e.step for e in reader.read()] == [1]
    fresh = tmp_path / "fresh.jsonl"
    fresh.write_text(line.replace('"step": 1', '"step": 2') * 3)
    fresh.replace(path)  # another file, longer than what was read: its first bytes are not skipped
    assert [e.step for e in reader.read()] == [2, 2, 2]
    path.write_text(line.replace('"step": 1', '"step": 3'))  # truncated
    assert [e.step for e in reader.read()] == [3] and reader.bad_lines == 0


def test_threads_writing_concurrently_produce_only_whole_lines(events_file):
    n_threads, per_thread = 8, 300

    def work(tid: int) -> None:
        for i in range(per_thread):
            hooks.log_metrics(i, **{f"m{tid}_{k}": float(i) for k in range(20)})

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reader = EventReader(events_file)
    events = reader.read()
    assert reader.bad_lines == 0
    assert len(events) == n_threads * per_thread
    assert all(len(e.values) == 20 for e in events)


def test_env_var_change_switches_files(tmp_path, monkeypatch):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    monkeypatch.setenv(hooks.ENV_VAR, str(a))
    hooks.progress(1, 2)
    monkeypatch.setenv(hooks.ENV_VAR, str(b))
    hooks.progress(2, 2)
    assert [e.done for e in read_all(a)] == [1]
    assert [e.done for e in read_all(b)] == [2]


def test_io_error_warns_once_and_never_raises(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(hooks.ENV_VAR, str(tmp_path / "missing-dir" / "events.jsonl"))
    hooks._warned.discard("io")
    hooks.progress(1, 2)
    hooks.mark_done(loss=1.0)
    assert capsys.readouterr().err.count("cannot write events") == 1


def test_latest_aggregates_and_bounds_series(events_file):
    for step in range(1, 11):
        hooks.log_metrics(step, loss=1.0 / step)
        hooks.progress(step, 10)
    hooks.log_metrics(10, val_acc=0.9)
    hooks.mark_healthy()
    hooks.mark_failed("diverged")
    latest = Latest(max_series=4).feed(read_all(events_file))
    assert (latest.progress_done, latest.progress_total, latest.fraction) == (10, 10, 1.0)
    assert latest.metrics == {"loss": 0.1, "val_acc": 0.9}
    assert latest.metric_step == 10
    assert latest.healthy and latest.failed and not latest.done and latest.reason == "diverged"
    assert [s for s, _ in latest.series] == [8, 9, 10, 10]
    assert latest.series[-1] == (10, {"val_acc": 0.9})
    assert latest.last_t is not None and latest.progress_t is not None


def test_subprocess_reports_through_the_env_var(tmp_path):
    path = tmp_path / "attempt-1" / "events.jsonl"
    path.parent.mkdir()
    script = textwrap.dedent(
        """
        from gputui import hooks
        for step in range(1, 6):
            hooks.log_metrics(step, loss=1.0 / step)
            hooks.progress(step, 5)
        hooks.mark_done(loss=0.2)
        """
    )
    env = {**os.environ, hooks.ENV_VAR: str(path), "PYTHONPATH": str(Path(__file__).parents[2])}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
    latest = Latest().feed(read_all(path))
    assert latest.done and latest.metrics["loss"] == 0.2
    assert latest.fraction == 1.0 and latest.metric_step == 5
