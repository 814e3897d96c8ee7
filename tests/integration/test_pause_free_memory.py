"""`gputui pause --free-memory` on a live run, against the fake NVML (the worker listed as a CUDA process) and a
fake cuda-checkpoint that records each call with the state of the process it names: the task's CUDA process is
checkpointed before its SIGSTOP and restored after its SIGCONT; refused, with the reason, where it cannot be."""

from __future__ import annotations

import json
import os
import signal

import psutil
import pytest

from gputui.views.runview import RunView
from tests.conftest import gputui, gputui_bg, proc_state, wait_for

pytestmark = pytest.mark.fake_nvml


def fake_tool(folder):
    """cuda-checkpoint: each call a line, "ARGS state=S" (the named process's state then, from /proc)."""
    folder.mkdir()
    tool = folder / "cuda-checkpoint"
    tool.write_text(
        "#!/bin/sh\n"
        'state=$(sed -e "s/.*) //" /proc/$3/stat | cut -d" " -f1)\n'
        f'echo "$* state=$state" >> "{folder}/calls"\n'
    )
    tool.chmod(0o755)
    return folder / "calls"


def spec(driver: str, pids) -> dict:
    processes = [{"pid": p, "used_memory_mib": 2048} for p in pids]
    return {
        "driver_version": driver,
        "devices": [
            {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-0", "memory_total_mib": 81920, "processes": processes}
        ],
    }


def read_json(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def lines(record) -> list[str]:
    return record.read_text().splitlines() if record.exists() else []


def task_of(run_dir, task: str) -> dict:
    out = json.loads(gputui("status", "--run-dir", run_dir, "--json").stdout)
    return {t["id"]: t for t in out["tasks"]}[task]


def status_of(run_dir, task: str) -> str:
    return task_of(run_dir, task)["status"]


def cards(run_dir) -> dict[int, list[str]]:
    """What the app's GPU cards say of the run's tasks on each GPU."""
    view = RunView(run_dir)
    try:
        return view.snapshot().gpu_holders(states=True)
    finally:
        view.close()


def gpu0_note() -> dict | None:
    """The note of the reservation of the fake's GPU 0, as `gputui gpus --json` shows it."""
    r = gputui("gpus", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)["gpus"][0]["held_by"]


@pytest.fixture
def live(make_job, reaper, tmp_path, fake_nvml, monkeypatch):
    """A live run of one long task, the fake cuda-checkpoint on PATH (its record returned)."""
    record = fake_tool(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    fake_nvml.write(spec("550.54.15", []))
    job = make_job(
        ids=4,
        num_workers=1,
        max_parallel=1,
        gpus_per_worker=1,  # on the fake's GPU 0, which it reserves
        sleep=600,
        stop_grace_s=1,
        worker_args=f"--spawn-children --children-file {tmp_path}/children.json",
    )
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "sched.log")
    reaper.append(sched)
    pid = wait_for(lambda: make_job.running().get("shard-0"), what="the worker")
    children = wait_for(lambda: read_json(tmp_path / "children.json"), what="children")
    return make_job.run_dir, pid, children, record


def test_pause_frees_gpu_memory_before_sigstop_and_restores_after_sigcont(live, fake_nvml):
    run_dir, pid, children, record = live
    fake_nvml.write(spec("550.54.15", [pid]))

    r = gputui("pause", "--run-dir", run_dir, "--free-memory", "shard-0")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "GPU memory was freed" in r.stdout and f"pid {pid}" in r.stdout
    (first,) = lines(record)
    assert first.startswith(f"--toggle --pid {pid} state=") and not first.endswith("state=T")  # before SIGSTOP
    assert proc_state(pid) == psutil.STATUS_STOPPED and status_of(run_dir, "shard-0") == "paused"
    # Said where the task and its GPU are shown: its reason, and its GPU's reservation (`gputui gpus`, other runs).
    assert task_of(run_dir, "shard-0")["reason"] == "paused, memory freed"
    assert gpu0_note()["task"] == "shard-0" and gpu0_note()["state"] == "paused, memory freed"
    assert "shard-0 since" in gputui("gpus").stdout and "paused, memory freed" in gputui("gpus").stdout
    assert cards(run_dir) == {0: ["shard-0 (paused, memory freed)"]}  # the app's GPU card of it

    r = gputui("resume", "--run-dir", run_dir, "shard-0")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "GPU memory was restored" in r.stdout
    assert task_of(run_dir, "shard-0")["reason"] is None and "state" not in gpu0_note()
    assert cards(run_dir) == {0: ["shard-0"]}
    first_again, second = lines(record)
    assert first_again == first
    assert second.startswith(f"--toggle --pid {pid} state=") and not second.endswith("state=T")  # after SIGCONT
    assert proc_state(pid) != psutil.STATUS_STOPPED and status_of(run_dir, "shard-0") == "running"

    # A plain pause and resume never call it.
    assert gputui("pause", "--run-dir", run_dir, "shard-0").returncode == 0
    assert gputui("resume", "--run-dir", run_dir, "shard-0").returncode == 0
    assert len(lines(record)) == 2


@pytest.mark.parametrize(
    ("driver", "which", "reason"),
    [
        ("535.104", "worker", "driver 535.104 is older than 550"),
        ("550.54.15", "all", "3 CUDA processes (an NCCL job): not supported"),
        ("550.54.15", "none", "no CUDA process"),
        ("550.54.15", "no tool", "cuda-checkpoint is not installed"),
    ],
)
def test_free_memory_is_refused_with_the_reason(live, fake_nvml, monkeypatch, driver, which, reason):
    run_dir, pid, children, record = live
    pids = {"worker": [pid], "all": [pid, *children], "none": [], "no tool": [pid]}[which]
    fake_nvml.write(spec(driver, pids))
    if which == "no tool":
        (record.parent / "cuda-checkpoint").unlink()  # the scheduler's PATH still names the folder

    r = gputui("pause", "--run-dir", run_dir, "--free-memory", "shard-0")
    assert r.returncode == 1, r.stdout + r.stderr
    assert reason in r.stdout and "cannot pause and free its GPU memory" in r.stdout
    assert lines(record) == [] and proc_state(pid) != psutil.STATUS_STOPPED
    assert status_of(run_dir, "shard-0") == "running"


def test_without_a_scheduler_the_caller_frees_and_restores_it(live, fake_nvml, make_job, reaper):
    run_dir, pid, children, record = live
    sched = reaper[-1]
    sched.send_signal(signal.SIGKILL)  # the worker goes on, orphaned; the verbs act directly
    sched.wait(5)
    fake_nvml.write(spec("550.54.15", [pid]))
    r = gputui("pause", "--run-dir", run_dir, "--free-memory", "shard-0")
    assert r.returncode == 0, r.stdout + r.stderr
    assert proc_state(pid) == psutil.STATUS_STOPPED and len(lines(record)) == 1
    r = gputui("resume", "--run-dir", run_dir, "shard-0")
    assert r.returncode == 0 and "GPU memory was restored" in r.stdout, r.stdout + r.stderr
    second = lines(record)[1]
    assert second.startswith(f"--toggle --pid {pid} ") and not second.endswith("state=T")


def checkpoint_records(run_dir) -> list:
    return sorted((run_dir / "checkpoints").glob("*.json")) if (run_dir / "checkpoints").exists() else []


def test_kill_of_a_task_paused_with_memory_freed_restores_it_first_then_ends_it(live, fake_nvml):
    """Restored after SIGCONT and before SIGTERM (while checkpointed its CUDA calls would block: a worker saving
    its state on SIGTERM would hang until SIGKILL); the record of the checkpoint is cleared."""
    run_dir, pid, children, record = live
    fake_nvml.write(spec("550.54.15", [pid]))
    assert gputui("pause", "--run-dir", run_dir, "--free-memory", "shard-0").returncode == 0
    assert len(checkpoint_records(run_dir)) == 1

    r = gputui("kill", "--run-dir", run_dir, "shard-0")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"shard-0: its GPU memory was restored first (cuda-checkpoint of pid {pid})" in r.stdout
    first, second = lines(record)
    assert second.startswith(f"--toggle --pid {pid} state=") and not second.endswith("state=T")  # running again
    wait_for(lambda: proc_state(pid) == "gone" or proc_state(pid) == psutil.STATUS_ZOMBIE, what="the worker ended")
    assert status_of(run_dir, "shard-0") == "killed"
    assert checkpoint_records(run_dir) == []


def test_kill_of_a_task_paused_with_memory_freed_ends_it_where_it_cannot_be_restored(live, fake_nvml, monkeypatch):
    """The utility gone: the process is killed while checkpointed (it just ends; its GPU memory is free)."""
    run_dir, pid, children, record = live
    fake_nvml.write(spec("550.54.15", [pid]))
    assert gputui("pause", "--run-dir", run_dir, "--free-memory", "shard-0").returncode == 0
    (record.parent / "cuda-checkpoint").unlink()

    r = gputui("kill", "--run-dir", run_dir, "shard-0")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (
        "shard-0: its GPU memory cannot be restored: cuda-checkpoint is gone; killed while checkpointed"
        in r.stdout
    )
    assert len(lines(record)) == 1  # the pause's call only
    wait_for(lambda: proc_state(pid) == "gone" or proc_state(pid) == psutil.STATUS_ZOMBIE, what="the worker ended")
    assert status_of(run_dir, "shard-0") == "killed"
    assert checkpoint_records(run_dir) == []
