"""Alerts with real workers: what lands in alerts.jsonl is what the [alerts] command gets on its stdin, and a
command that fails never stops the run."""

from __future__ import annotations

import json
from pathlib import Path

from gputui.rundir.meta import read_meta
from gputui.rundir.store import Store
from tests.conftest import gputui, wait_for


def _with_alerts(job: Path, table: str) -> Path:
    job.write_text(job.read_text() + f"\n[alerts]\n{table}\n")
    return job


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_task_that_fails_for_good_is_alerted_and_the_command_gets_the_alert_on_stdin(make_job, tmp_path):
    got = tmp_path / "got.jsonl"
    job = make_job(num_workers=2, max_attempts=1, worker_args="--fail-attempts 1 --fail-mode oom")
    _with_alerts(job, f'command = "cat >> {got}"\nbell = true')
    r = gputui("run", "--jobs", job)
    assert r.returncode == 1, r.stdout + r.stderr

    alerts = _lines(make_job.run_dir / "alerts.jsonl")
    failed = {a["task_id"]: a for a in alerts if a["kind"] == "task_failed"}
    assert sorted(failed) == ["shard-0", "shard-1"]
    for task_id, a in failed.items():
        assert "failed for good" in a["message"] and "CUDA out of memory" in a["message"]
        assert (
            a["log_path"].endswith(f"{task_id}.attempt1.log")
            and "CUDA out of memory" in Path(a["log_path"]).read_text()
        )
        assert set(a) >= {"time", "kind", "task_id", "gpu", "message", "log_path"}
    assert sorted(a["task_id"] for a in alerts if a["kind"] == "out_of_memory") == ["shard-0", "shard-1"]
    # Each alert reached the command, whole, as one JSON object on its stdin.
    wait_for(lambda: len(_lines(got)) == len(alerts), what="every alert at the command")
    assert sorted(_lines(got), key=json.dumps) == sorted(alerts, key=json.dumps)
    # The app rings the bell on alerts: told through the run's state.
    store = Store.open(make_job.run_dir / "state.db", readonly=True)
    assert read_meta(store).job.alert_bell is True
    store.close()


def test_a_failing_alert_command_is_reported_and_the_run_goes_on_to_the_end(make_job):
    job = make_job(num_workers=2, max_attempts=2, worker_args="--fail-attempts 1 --fail-mode oom")
    _with_alerts(job, 'command = "echo notifier broke >&2; exit 3"')
    r = gputui("run", "--jobs", job)
    assert r.returncode == 0, r.stdout + r.stderr  # every task retried and done, merged
    assert (make_job.run_dir / "outputs" / "merged.csv").exists()
    assert "alert command for out_of_memory shard-0 failed (exit 3)" in r.stdout
    assert "notifier broke" in (make_job.run_dir / "logs" / "alert-command.log").read_text()
    kinds = [a["kind"] for a in _lines(make_job.run_dir / "alerts.jsonl")]
    assert sorted(kinds) == ["out_of_memory", "out_of_memory"]  # retried and done: no task_failed


def test_a_missing_alert_command_is_reported_and_nothing_else_changes(make_job, tmp_path):
    job = make_job(num_workers=1, max_attempts=1, worker_args="--fail-attempts 1")
    _with_alerts(job, f'command = "{tmp_path}/no-such-notifier"')
    r = gputui("run", "--jobs", job)
    assert r.returncode == 1 and "Traceback" not in r.stdout + r.stderr
    assert "alert command for task_failed shard-0 failed (exit 127)" in r.stdout
    assert "no-such-notifier" in (make_job.run_dir / "logs" / "alert-command.log").read_text()
    assert [a["kind"] for a in _lines(make_job.run_dir / "alerts.jsonl")] == ["task_failed"]
    assert "exit code 3" in _lines(make_job.run_dir / "alerts.jsonl")[0]["message"]
