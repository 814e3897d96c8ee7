"""Resident workers ([job] resident = true): one process takes shard after shard, and each shard is still a task
of its own: its attempt, its log, its retry, its kill, its done-manifest. Real schedulers, waiters and workers
(tests/workers/resident_worker.py, which records every shard it serves with its pid)."""

from __future__ import annotations

import csv
import json
import os
import signal
import sys
from pathlib import Path

import psutil

from gputui.api import open_run
from tests.conftest import gone, gputui, gputui_bg, proc_state, wait_for

WORKER = Path(__file__).parents[1] / "workers" / "resident_worker.py"


class ResidentJob:
    def __init__(self, root: Path):
        self.root = root
        self.record = root / "served.jsonl"
        self.stall = root / "stall"  # while it exists, the stalled attempt waits

    def __call__(
        self, *, ids=24, shards=6, max_parallel=1, worker_args="", resident=True, gpus=0, backoff_s=0.05
    ) -> Path:
        with open(self.root / "data.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["data_id", "value"])
            w.writerows([i, f"row{i}"] for i in range(ids))
        command = (
            f"{sys.executable} {WORKER} --input {{input}} --output {{output}} --low {{low}} --high {{high}} "
            f"--record {self.record} --stall-file {self.stall} {worker_args}"
        )
        job = self.root / "job.toml"
        job.write_text(f"""
[job]
name = "resident"
command = "{command}"
resident = {str(resident).lower()}
stop_grace_s = 1
[shards]
input = "data.csv"
num_workers = {shards}
[resources]
gpus_per_worker = {gpus}
max_parallel = {max_parallel}
[retry]
max_attempts = 3
backoff_s = {backoff_s}
[outputs]
pattern = "out_{{low}}_{{high}}.csv"
merged = "merged.csv"
""")
        return job

    @property
    def run_dir(self) -> Path:
        return self.root / "runs" / "resident"

    def events(self, kind: str | None = None) -> list[dict]:
        if not self.record.exists():
            return []
        found = [json.loads(line) for line in self.record.read_text().splitlines() if line.strip()]
        return [e for e in found if kind is None or e["event"] == kind]

    def served(self) -> dict[tuple[str, int], int]:
        """(task, attempt) -> the pid that served it."""
        return {(e["task"], e["attempt"]): e["pid"] for e in self.events("start")}

    def attempts(self) -> dict[tuple[str, int], object]:
        return {(a.task_id, a.number): a for a in open_run(self.run_dir).status().attempts}

    def merged_ids(self) -> list[int]:
        with open(self.run_dir / "outputs" / "merged.csv", newline="") as f:
            return [int(r["data_id"]) for r in csv.DictReader(f)]


def _stalled(job: ResidentJob, task: str, attempt: int = 1) -> int:
    """The pid of the resident worker once it is on `task` (stalled there while job.stall exists)."""
    return wait_for(lambda: job.served().get((task, attempt)), what=f"{task} attempt {attempt} started")


def test_one_process_serves_many_shards_each_its_own_attempt_log_and_manifest(tmp_path):
    job = ResidentJob(tmp_path)
    path = job(shards=8, max_parallel=2, worker_args="--fail shard-2:1")
    r = gputui("run", "--jobs", path)
    assert r.returncode == 0, r.stdout + r.stderr
    served = job.served()
    assert len(job.events("load")) == 2  # two workers, each loaded once, served the 8 shards and a retry
    assert len(set(served.values())) == 2 and len(served) == 9
    attempts = job.attempts()
    assert set(attempts) == set(served)  # one attempt per shard served, with its own record
    for (task, n), a in attempts.items():
        assert a.worker.pid == served[(task, n)]  # recorded as that attempt's worker, whatever it served before
        log = Path(a.log_path).read_text()
        assert f"shard {task} " in log and f"attempt {n} on pid" in log  # its own lines, and no other task's
        assert all(f"shard {other} " not in log for other, _ in attempts if other != task)
    failed = attempts[("shard-2", 1)]
    assert failed.exit_code == 1 and failed.status == "failed" and "failing shard-2:1" in (failed.reason or "")
    assert attempts[("shard-2", 2)].exit_code == 0
    statuses = {t.id: (t.status, t.attempts) for t in open_run(job.run_dir).tasks()}
    assert statuses == {f"shard-{i}": ("done", 2 if i == 2 else 1) for i in range(8)}
    for out in (job.run_dir / "outputs").glob("out_*.csv"):
        assert Path(f"{out}.done.json").exists()  # each vouched as today
    assert job.merged_ids() == list(range(24))
    assert all(gone(pid) for pid in set(served.values()))  # stopped when the run ended


def test_sixteen_shards_on_four_gpu_sets_load_four_times_each_worker_on_its_own_gpus(tmp_path):
    job = ResidentJob(tmp_path)
    r = gputui("run", "--jobs", job(ids=32, shards=16, max_parallel=8, gpus=2), "--simulate", "8x24")
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(job.events("load")) == 4
    gpus_of: dict[int, set] = {}
    for e in job.events("start"):
        gpus_of.setdefault(e["pid"], set()).add(e["gpus"])
    assert all(len(g) == 1 for g in gpus_of.values())  # a worker keeps its GPU set, task after task
    assert sorted(g for gs in gpus_of.values() for g in gs) == ["0,1", "2,3", "4,5", "6,7"]
    assert job.merged_ids() == list(range(32))


def test_a_worker_that_will_not_stop_is_ended_before_the_run_returns(tmp_path):
    job = ResidentJob(tmp_path)
    r = gputui("run", "--jobs", job(shards=3, worker_args="--linger"))  # stop_grace_s = 1
    assert r.returncode == 0, r.stdout + r.stderr
    (pid,) = {e["pid"] for e in job.events("linger")}
    assert gone(pid)  # told there were no more tasks, then SIGTERM (ignored), then SIGKILL
    assert job.merged_ids() == list(range(24))


def test_the_same_worker_runs_alone_outside_resident_mode(tmp_path):
    job = ResidentJob(tmp_path)
    r = gputui("run", "--jobs", job(shards=3, max_parallel=1, resident=False))
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(job.events("load")) == 3 and len(set(job.served().values())) == 3  # a process per shard
    assert job.merged_ids() == list(range(24))


def test_a_resident_worker_killed_mid_shard_loses_only_that_shard(tmp_path, reaper):
    job = ResidentJob(tmp_path)
    job.stall.touch()
    path = job(shards=6, worker_args="--stall shard-3:1 --die shard-4:1")
    sched = gputui_bg("run", "--jobs", path, log=tmp_path / "sched.log")
    reaper.append(sched)
    pid = _stalled(job, "shard-3")
    assert {job.served()[(f"shard-{i}", 1)] for i in range(3)} == {pid}  # one worker served the first shards
    os.kill(pid, signal.SIGKILL)  # mid-shard, from outside
    wait_for(lambda: len(set(job.served().values())) == 2, what="a new worker for the shards left")
    job.stall.unlink()
    assert sched.wait(60) == 0, (tmp_path / "sched.log").read_text()
    attempts = job.attempts()
    assert attempts[("shard-3", 1)].exit_code == -signal.SIGKILL
    assert attempts[("shard-4", 1)].exit_code == 3  # died on its own: its process's exit status
    assert sorted(k for k, a in attempts.items() if a.exit_code != 0) == [("shard-3", 1), ("shard-4", 1)]
    assert {t.id: t.attempts for t in open_run(job.run_dir).tasks()} == {
        "shard-0": 1, "shard-1": 1, "shard-2": 1, "shard-3": 2, "shard-4": 2, "shard-5": 1,
    }  # fmt: skip
    assert len(job.events("load")) == 3  # a new worker after each death, for the shards left
    assert job.merged_ids() == list(range(24))


def test_pause_resume_and_kill_reach_only_that_shard(tmp_path, reaper):
    job = ResidentJob(tmp_path)
    job.stall.touch()
    sched = gputui_bg("run", "--jobs", job(shards=4, worker_args="--stall shard-2:1"), log=tmp_path / "sched.log")
    reaper.append(sched)
    pid = _stalled(job, "shard-2")
    assert job.served()[("shard-0", 1)] == pid
    r = gputui("pause", "--run-dir", job.run_dir, "shard-2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert proc_state(pid) == psutil.STATUS_STOPPED
    r = gputui("resume", "--run-dir", job.run_dir, "shard-2")
    assert r.returncode == 0 and proc_state(pid) != psutil.STATUS_STOPPED
    r = gputui("kill", "--run-dir", job.run_dir, "shard-2")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: gone(pid), what="the resident worker ended")
    sched.wait(60)
    tasks = {t.id: t.status for t in open_run(job.run_dir).tasks()}
    assert tasks == {"shard-0": "done", "shard-1": "done", "shard-2": "killed", "shard-3": "done"}
    served = job.served()
    assert served[("shard-3", 1)] != pid and len(job.events("load")) == 2  # a new worker for the rest
    assert ("shard-2", 2) not in served  # a killed task is not retried


def test_a_worker_stopped_between_tasks_goes_on_with_its_next_one(tmp_path, reaper):
    """A pause that crosses the end of the task it was for (or any SIGSTOP between tasks) leaves no task stuck
    behind a stopped worker: no task is paused, so the next one is started on it."""
    job = ResidentJob(tmp_path)
    # a back-off long enough that the SIGSTOP below lands while the worker is idle even on a loaded machine
    # (with 1.5 s it once landed after the retry had started: a worker stopped mid-task, which nothing resumes)
    path = job(shards=2, worker_args="--fail shard-1:1", backoff_s=5)
    sched = gputui_bg("run", "--jobs", path, log=tmp_path / "sched.log")
    reaper.append(sched)
    (pid,) = wait_for(lambda: [e["pid"] for e in job.events("fail")], what="shard-1 failed once")
    os.kill(pid, signal.SIGSTOP)  # idle: shard-1 waits out its back-off
    assert sched.wait(30) == 0, (tmp_path / "sched.log").read_text()
    assert job.served()[("shard-1", 2)] == pid and job.merged_ids() == list(range(24))


def test_scheduler_killed_and_restarted_neither_loses_nor_repeats_a_shard(tmp_path, reaper):
    job = ResidentJob(tmp_path)
    job.stall.touch()
    path = job(shards=6, max_parallel=2, worker_args="--stall shard-0:1,shard-1:1")
    sched = gputui_bg("run", "--jobs", path, log=tmp_path / "sched.log")
    reaper.append(sched)
    wait_for(lambda: len(job.served()) == 2 and job.served(), what="two shards started")
    sched.send_signal(signal.SIGKILL)  # the waiters and their resident workers go on
    sched.wait(5)
    again = gputui_bg("run", "--jobs", path, log=tmp_path / "again.log")
    reaper.append(again)
    wait_for(lambda: "re-adopted" in (tmp_path / "again.log").read_text(), what="the running shards re-adopted")
    job.stall.unlink()
    assert again.wait(60) == 0, (tmp_path / "again.log").read_text()
    starts = [(e["task"], e["attempt"]) for e in job.events("start")]
    assert sorted(starts) == [(f"shard-{i}", 1) for i in range(6)]  # each shard served once, none twice
    assert {t.id: (t.status, t.attempts) for t in open_run(job.run_dir).tasks()} == {
        f"shard-{i}": ("done", 1) for i in range(6)
    }
    assert job.merged_ids() == list(range(24))
    pids = {e["pid"] for e in job.events("load")}
    wait_for(lambda: all(gone(p) for p in pids), what="the old resident workers stopped")


def test_a_waiter_killed_mid_shard_costs_nothing_its_keeper_records_the_shard(tmp_path, reaper):
    job = ResidentJob(tmp_path)
    job.stall.touch()
    sched = gputui_bg("run", "--jobs", job(shards=4, worker_args="--stall shard-1:1"), log=tmp_path / "sched.log")
    reaper.append(sched)
    pid = _stalled(job, "shard-1")
    os.kill(psutil.Process(pid).ppid(), signal.SIGKILL)  # its waiter; the worker finishes the shard regardless
    job.stall.unlink()
    assert sched.wait(60) == 0, (tmp_path / "sched.log").read_text()
    assert {t.id: (t.status, t.attempts) for t in open_run(job.run_dir).tasks()} == {
        f"shard-{i}": ("done", 1) for i in range(4)
    }
    assert job.attempts()[("shard-1", 1)].exit_code == 0  # the worker's exit, recorded by the keeper
    assert "finished shard-1" in Path(job.attempts()[("shard-1", 1)].log_path).read_text()  # copied on
    assert len(job.events("load")) == 2 and job.merged_ids() == list(range(24))


def test_ctrl_c_stops_resident_workers_and_the_next_run_finishes(tmp_path, reaper):
    job = ResidentJob(tmp_path)
    job.stall.touch()
    path = job(shards=4, max_parallel=2, worker_args="--stall shard-0:1,shard-1:1,shard-2:1,shard-3:1")
    sched = gputui_bg("run", "--jobs", path, log=tmp_path / "sched.log")
    reaper.append(sched)
    wait_for(lambda: len(job.served()) == 2, what="two shards started")
    pids = set(job.served().values())
    sched.send_signal(signal.SIGINT)
    assert sched.wait(30) == 130
    assert all(gone(p) for p in pids)  # gone when the run returns
    assert {t.status for t in open_run(job.run_dir).tasks()} == {"pending"}
    job.stall.unlink()
    r = gputui("run", "--jobs", path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert job.merged_ids() == list(range(24))
