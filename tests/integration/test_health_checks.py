"""[health] rules broken by real processes: each is stopped (its whole tree) within its window, and the
rule and its evidence are recorded where a user looks (the task's reason, events, the signal files)."""

from __future__ import annotations

import json
import sqlite3
import sys
import textwrap

import pytest

from tests.conftest import gputui

WORKER = textwrap.dedent(
    """
    import math, os, subprocess, sys, time
    mode = sys.argv[1]
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])  # a tree, not one process
    open(os.environ["GPUTUI_TASK_ID"] + ".child", "w").write(str(child.pid))
    for step in range(1, 400):
        if mode == "nan":
            loss = 1.0 / step if step < 5 else float("nan")
            print(f"step {step} loss={loss} lr=0.001", flush=True)
        elif mode == "late_nan":  # diverges well after a window of 0.5 s
            loss = 1.0 / step if step < 25 else float("nan")
            print(f"step {step} loss={loss} lr=0.001", flush=True)
        elif mode == "explode":
            print(f"step {step} loss={1.0 if step < 6 else 1e6:g} lr=0.001", flush=True)
        elif mode == "lr_zero":
            print(f"step {step} loss={1.0 / step:.4f} lr={0.001 if step < 5 else 0.0}", flush=True)
        elif mode == "oom" and step == 4:
            print("Traceback (most recent call last):", flush=True)
            print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", flush=True)
        elif mode == "hang" and step > 2:
            time.sleep(300)
        elif mode in ("ok", "oom", "hang"):
            print(f"step {step} loss={1.0 / step:.4f}", flush=True)
        if mode == "ok" and step == 12:
            break
        time.sleep(0.1)
    """
)


def job(tmp_path, mode: str, health: str, attempts: int = 1):
    (tmp_path / "worker.py").write_text(WORKER)
    path = tmp_path / "job.toml"
    path.write_text(
        f"""
[job]
name = "h"
kind = "pipeline"
stop_grace_s = 1
[[pipeline.step]]
name = "train"
command = "{sys.executable} worker.py {mode}"
[health]
{health}
[resources]
gpus_per_worker = 0
[retry]
max_attempts = {attempts}
backoff_s = 0
"""
    )
    return path


def outcome(tmp_path):
    db = sqlite3.connect(tmp_path / "runs" / "h" / "state.db")
    status, reason, attempts = db.execute("SELECT status, reason, attempts FROM tasks WHERE id='train'").fetchone()
    events = [r[0] for r in db.execute("SELECT message FROM events WHERE kind='health'")]
    return status, reason, attempts, events


@pytest.mark.parametrize(
    "mode, health, evidence",
    [
        ("nan", "window_s = 60", "loss=nan at step 5"),
        ("explode", "explode_above = 1000", "loss=1e+06 at step 6"),
        ("lr_zero", "window_s = 60", "lr=0 at step 5"),
        ("oom", "window_s = 60", "CUDA out of memory"),
        ("hang", "no_output_s = 2", "no log line or event for"),
    ],
)
def test_a_broken_rule_stops_the_task_with_its_evidence(tmp_path, mode, health, evidence):
    import psutil

    r = gputui("run", "--jobs", job(tmp_path, mode, health), timeout=90)
    assert r.returncode == 1, r.stdout + r.stderr
    status, reason, attempts, events = outcome(tmp_path)
    assert status == "failed" and reason.startswith("health check:") and evidence in reason, reason
    assert attempts == 1 and len(events) == 1 and evidence in events[0]
    child = int((tmp_path / "train.child").read_text())
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE  # whole tree
    failed = json.loads((tmp_path / "runs" / "h" / "signals" / "train.failed.json").read_text())
    assert failed["status"] == "failed" and evidence in failed["reason"]
    assert (tmp_path / "runs" / "h" / "signals" / "train.failed").exists()


def test_deterministic_breaks_are_not_retried_but_an_oom_follows_retry(tmp_path):
    r = gputui("run", "--jobs", job(tmp_path, "nan", "window_s = 60", attempts=3), timeout=90)
    assert r.returncode == 1 and "not retried" in r.stdout
    assert outcome(tmp_path)[2] == 1
    oom = tmp_path / "oom"
    oom.mkdir()
    r = gputui("run", "--jobs", job(oom, "oom", "window_s = 60", attempts=2), timeout=90)
    assert r.returncode == 1
    status, reason, attempts, events = outcome(oom)
    assert (status, attempts, len(events)) == ("failed", 2, 2)


def test_a_task_through_its_window_is_marked_healthy_and_done(tmp_path):
    r = gputui("run", "--jobs", job(tmp_path, "ok", "window_s = 0.5"), timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr
    signals = tmp_path / "runs" / "h" / "signals"
    healthy = json.loads((signals / "train.healthy.json").read_text())
    done = json.loads((signals / "train.done.json").read_text())
    assert healthy["status"] == "healthy" and healthy["step"] is not None
    assert done["status"] == "done" and done["exit_code"] == 0 and done["duration"] > 0


def test_the_health_sample_stops_the_exploding_trial_and_ranks_the_other(tmp_path):
    """sample_jobs/health.toml end to end, with the real tiny trainer: lr = 1000 blows the loss up."""
    import csv
    import os
    from pathlib import Path

    sample = Path(__file__).resolve().parents[2] / "sample_jobs" / "health.toml"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    run_dir = tmp_path / "run"
    r = gputui("run", "--jobs", sample, "--run-dir", run_dir, timeout=120, env=env)
    assert r.returncode == 1, r.stdout + r.stderr  # one trial failed: the run says so
    rows = {row["trial_id"]: row for row in csv.DictReader((run_dir / "results" / "results.csv").open())}
    assert rows["lr-0"]["status"] == "done" and rows["lr-0"]["rank"] == "1"
    assert rows["lr-1"]["status"] == "failed" and rows["lr-1"]["note"] == "not ranked: failed"
    db = sqlite3.connect(run_dir / "state.db")
    reason, attempts = db.execute("SELECT reason, attempts FROM tasks WHERE id='lr-1'").fetchone()
    assert reason.startswith("health check: loss=") and ("(explode)" in reason or "(nan)" in reason), reason
    assert attempts == 1  # deterministic: not retried although [retry] allows 2
    assert "health check: loss=" in (run_dir / "report.md").read_text()


HOOKED = textwrap.dedent(
    """
    import signal, sys, time
    from gputui import hooks
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # as Lightning: told to stop, it ends cleanly
    for step in range(1, 400):
        hooks.log_metrics(step, loss=1.0 / step if step < 4 else float("nan"))
        time.sleep(0.1)
    """
)


def test_a_task_stopped_for_a_nan_loss_says_so_in_strict_json_though_it_exited_0(tmp_path):
    job(tmp_path, "nan", "window_s = 60")
    (tmp_path / "worker.py").write_text(HOOKED)
    r = gputui("run", "--jobs", tmp_path / "job.toml", timeout=90)
    assert r.returncode == 1, r.stdout + r.stderr

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    text = (tmp_path / "runs" / "h" / "signals" / "train.failed.json").read_text()
    failed = json.loads(text, parse_constant=refuse)  # strict: a bare NaN is refused
    assert failed["status"] == "failed" and failed["exit_code"] == 0 and failed["stopped_by"] == "health: nan"
    assert failed["loss"] is None and "loss=nan at step 4" in failed["reason"]


@pytest.mark.parametrize(
    "last_words, evidence",
    [
        ("from gputui import hooks; hooks.log_metrics(3, loss=float('nan'))", "loss=nan at step 3"),
        ("print('step 3 loss=nan', end='')", "loss=nan at step 3"),  # its last line, unterminated
    ],
)
def test_a_nan_written_just_before_a_clean_exit_still_breaks_the_rule(tmp_path, last_words, evidence):
    """Checks come once a second: what a short run wrote between the last check and its exit is read too."""
    job(tmp_path, "nan", "window_s = 60")
    (tmp_path / "worker.py").write_text(last_words + "\n")
    r = gputui("run", "--jobs", tmp_path / "job.toml", timeout=90)
    assert r.returncode == 1, r.stdout + r.stderr
    status, reason, attempts, events = outcome(tmp_path)
    assert status == "failed" and reason == f"health check: {evidence} (nan)" and events == [reason]


def test_a_divergence_after_the_window_stops_a_task_already_marked_healthy(tmp_path):
    r = gputui("run", "--jobs", job(tmp_path, "late_nan", "window_s = 0.5"), timeout=90)
    assert r.returncode == 1, r.stdout + r.stderr
    status, reason, attempts, events = outcome(tmp_path)
    assert status == "failed" and "loss=nan at step 25 (nan)" in reason, reason
    signals = tmp_path / "runs" / "h" / "signals"
    assert json.loads((signals / "train.healthy.json").read_text())["status"] == "healthy"
    assert "loss=nan at step 25" in json.loads((signals / "train.failed.json").read_text())["reason"]


STEPS_THEN_PRINTS = textwrap.dedent(
    """
    import sys, time
    from gputui import hooks
    in_eval = sys.argv[1] == "eval"
    for step in range(1, 61):  # 6 s of steps: the scheduler's polls, once a second, each see new ones
        hooks.log_metrics(step, loss=1.0 / step)
        print(f"step {step} loss={1.0 / step:.4f}", flush=True)
        time.sleep(0.1)
    if in_eval:
        hooks.phase("eval")
    for i in range(70):  # 7 s that print but make no step: a stuck loader, or a validation
        print(f"Validation batch {i}: heartbeat", flush=True)
        time.sleep(0.1)
    if in_eval:
        hooks.phase("train")
    for step in range(61, 66):
        hooks.log_metrics(step, loss=1.0 / step)
        time.sleep(0.1)
    """
)


def test_a_task_that_prints_but_stops_stepping_is_stopped_unless_it_said_it_is_in_eval(tmp_path):
    (tmp_path / "worker.py").write_text(STEPS_THEN_PRINTS)
    (tmp_path / "job.toml").write_text(
        f"""
[job]
name = "h"
kind = "pipeline"
stop_grace_s = 1
[[pipeline.step]]
name = "stuck"
command = "{sys.executable} worker.py stuck"
[[pipeline.step]]
name = "evaluating"
command = "{sys.executable} worker.py eval"
[health]
stall_factor = 2
[resources]
gpus_per_worker = 0
max_parallel = 2
[retry]
max_attempts = 1
"""
    )
    r = gputui("run", "--jobs", tmp_path / "job.toml", timeout=90)
    assert r.returncode == 1, r.stdout + r.stderr
    db = sqlite3.connect(tmp_path / "runs" / "h" / "state.db")
    rows = dict(db.execute("SELECT id, status || ': ' || coalesce(reason, '') FROM tasks"))
    assert rows["evaluating"] == "done: ", rows
    assert rows["stuck"].startswith("failed: health check: stalled: no new step for "), rows
    assert "after step 60 (median step" in rows["stuck"] and "stall_factor = 2) (stall)" in rows["stuck"]
