"""The [alerts] command is fire-and-forget: emitting never waits for it, one that hangs is killed after its
time, and what goes wrong is said, never raised."""

from __future__ import annotations

import os

from gputui.engine import alerter
from gputui.engine.alerter import Alerter
from gputui.executors.ownership import alive, ref_of
from gputui.rundir.alerts_file import AlertReader, alert


def _alerter(tmp_path, command, said):
    return Alerter(
        tmp_path / "alerts.jsonl",
        command,
        cwd=tmp_path,
        env=dict(os.environ),
        log_path=tmp_path / "alert-command.log",
        say=said.append,
    )


def test_a_command_that_hangs_does_not_hold_up_emit_and_is_killed_after_its_time(tmp_path, monkeypatch):
    said: list[str] = []
    a = _alerter(tmp_path, "exec sleep 600", said)
    a.emit(alert("gpu_idle", "GPU 0 idle", task_id="shard-0", gpu=0))  # returns while the command sleeps
    assert [e["kind"] for e in AlertReader(tmp_path / "alerts.jsonl").new()] == ["gpu_idle"]
    ((proc, _, _),) = a.running
    assert proc.poll() is None
    ref = ref_of(proc.pid)
    monkeypatch.setattr(alerter, "COMMAND_TIMEOUT_S", 0.0)
    a.running = [(proc, 0.0, "gpu_idle shard-0")]  # its time is up
    a.poll()
    assert a.running == [] and not alive(ref)
    assert said == ["alert command for gpu_idle shard-0 ran past 0s and was killed"]


def test_an_alerts_file_that_cannot_be_written_is_said_once_never_raised(tmp_path):
    said: list[str] = []
    a = Alerter(
        tmp_path / "missing" / "alerts.jsonl",
        None,
        cwd=tmp_path,
        env=dict(os.environ),
        log_path=tmp_path / "x.log",
        say=said.append,
    )
    a.emit(alert("task_failed", "x"))
    a.emit(alert("task_failed", "y"))
    assert len(said) == 1 and "cannot write alerts" in said[0]
