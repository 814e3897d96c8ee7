"""Resident workers: the job file's key, the pure rules that hand tasks to them and let them go, and the worker
side of the protocol (gputui.hooks.resident_tasks) against a socket standing in for its waiter."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections import Counter
from pathlib import Path

import pytest

from gputui import hooks
from gputui.engine.rules.resident import pair, surplus
from gputui.jobs.loader import load_jobspec
from gputui.jobs.spec import JobSpecError

SHARDS = """\
[job]
name = "demo"
command = "python worker.py --low {low} --high {high}"
resident = true

[shards]
input = "data.csv"
num_workers = 2
"""


@pytest.fixture
def jobdir(tmp_path: Path) -> Path:
    (tmp_path / "data.csv").write_text("data_id,text\n1,a\n2,b\n")
    return tmp_path


def load(folder: Path, text: str):
    path = folder / "job.toml"
    path.write_text(text)
    return load_jobspec(path)


def error_of(folder: Path, text: str) -> str:
    with pytest.raises(JobSpecError) as info:
        load(folder, text)
    return str(info.value)


def test_resident_is_read_from_the_job_table_and_checked(jobdir: Path) -> None:
    assert load(jobdir, SHARDS).resident is True
    assert load(jobdir, SHARDS.replace("resident = true\n", "")).resident is False
    assert "[job].resident: expected true or false, got 'yes' (str)" in error_of(
        jobdir, SHARDS.replace("resident = true", 'resident = "yes"')
    )


def test_resident_workers_are_refused_on_a_cluster_and_for_unlike_tasks(jobdir: Path) -> None:
    on_ray = error_of(jobdir, SHARDS + '[executor]\nkind = "ray"\n')
    assert "[job].resident: resident workers run on the local executor only, not on ray" in on_ray
    on_slurm = error_of(jobdir, SHARDS + '[executor]\nkind = "slurm"\n')
    assert "[job].resident:" in on_slurm and "not on slurm" in on_slurm
    sweep = '[job]\nname = "s"\nkind = "sweep"\ncommand = "true"\nresident = true\n[sweep]\nmetric = "loss"\n'
    sweep += '[[sweep.stage]]\nname = "a"\nparams = [{ lr = 1 }]\n'
    assert "[job].resident: only workers of alike tasks (shards) can be resident, not a sweep job's" in error_of(
        jobdir, sweep
    )


def test_ready_tasks_go_in_order_to_idle_workers_holding_as_many_gpus() -> None:
    pairs, left = pair([("a", 2), ("b", 4), ("c", 2), ("d", 2)], [2, 4, 2])
    assert pairs == [("a", 0), ("b", 1), ("c", 2)] and left == ["d"]
    assert pair([("a", 1)], []) == ([], ["a"])
    assert pair([("a", 0), ("b", 0)], [0]) == ([("a", 0)], ["b"])  # CPU workers hold no GPU


def test_idle_workers_no_waiting_task_will_take_are_let_go() -> None:
    assert surplus([2, 2, 2], Counter({2: 1})) == [1, 2]  # one task waits (a retry not yet due): one is kept
    assert surplus([2, 2], Counter()) == [0, 1]  # nothing waits: every idle worker goes
    assert surplus([2, 4], Counter({4: 3})) == [0]  # a task needing 4 GPUs takes no 2-GPU worker
    assert surplus([0], Counter({0: 5})) == []


def test_outside_gputui_the_loop_runs_once_over_the_command_line(monkeypatch) -> None:
    monkeypatch.delenv("GPUTUI_RESIDENT", raising=False)
    monkeypatch.setattr("sys.argv", ["worker.py", "--low", "0", "--high", "5"])
    tasks = list(hooks.resident_tasks())
    assert [t.args for t in tasks] == [["--low", "0", "--high", "5"]]
    assert [t.args for t in hooks.resident_tasks(["--x"])] == [["--x"]]
    tasks[0].fail("bad row")
    assert tasks[0].exit_code == 1


def test_a_resident_worker_takes_tasks_until_its_waiter_has_no_more(monkeypatch, tmp_path) -> None:
    """The worker's side against a socket standing in for its waiter: each task's arguments, placeholders and
    variables; each end told with its exit status (after the last one's output is flushed); the loop ends when
    the waiter closes its end."""
    for name in ("GPUTUI_TASK_ID", "GPUTUI_ATTEMPT", "GPUTUI_EVENTS"):  # set for each task: restored after
        monkeypatch.delenv(name, raising=False)
    waiter, worker = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    os.set_inheritable(worker.fileno(), True)
    monkeypatch.setenv("GPUTUI_RESIDENT", str(worker.detach()))
    monkeypatch.setattr("sys.argv", ["worker.py", "--low", "0", "--high", "5"])
    events = tmp_path / "events.jsonl"

    def task(name: str, low: int, high: int) -> bytes:
        env = {"GPUTUI_TASK_ID": name, "GPUTUI_ATTEMPT": "1", "GPUTUI_EVENTS": str(events) + name}
        argv = ["python", "worker.py", "--low", str(low), "--high", str(high)]
        return json.dumps({"task": name, "attempt": 1, "argv": argv, "env": env, "values": {"low": low}}).encode()

    told: list[dict] = []

    def serve() -> None:
        for message in (task("shard-0", 0, 5), task("shard-1", 5, 9)):
            waiter.send(message)
            told.append(json.loads(waiter.recv(4096)))
        waiter.close()

    server = threading.Thread(target=serve)
    server.start()
    seen = []
    for t in hooks.resident_tasks():
        seen.append((t.task_id, t.args, t.values, os.environ["GPUTUI_TASK_ID"]))
        hooks.progress(1, 2)  # to this task's own events file
        if t.task_id == "shard-1":
            t.fail("no luck", code=4)
    server.join(5)
    assert seen == [
        ("shard-0", ["--low", "0", "--high", "5"], {"low": 0}, "shard-0"),
        ("shard-1", ["--low", "5", "--high", "9"], {"low": 5}, "shard-1"),
    ]
    assert told == [{"end": 0, "task": "shard-0", "attempt": 1}, {"end": 4, "task": "shard-1", "attempt": 1}]
    assert (tmp_path / "events.jsonlshard-0").exists() and (tmp_path / "events.jsonlshard-1").exists()
    assert "GPUTUI_RESIDENT" not in os.environ  # a process it starts is no resident worker
