"""The runner on a cluster's node, run here: the command as a tree of its own, obeying the attempt's signal
file, and the first line of its log saying where it ran (what the app's GPUs column reads back)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

from gputui.executors import node_runner, ownership, ray_client
from gputui.executors.node_tree import TAG_RUNNER, Mark, Seen, look, members, new_mark
from gputui.executors.ownership import TAG_ATTEMPT, TAG_SCHEDULER, TAG_TASK, ProcessRef


def test_the_log_says_where_the_command_ran_and_placement_reads_it_back(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")  # what the cluster gave the task
    log = tmp_path / "t.attempt1.log"
    before = time.time()
    code = node_runner.run(["sh", "-c", "echo $CUDA_VISIBLE_DEVICES"], {}, str(log), str(tmp_path), "", 5.0)
    assert code == 0
    first, output = log.read_text().splitlines()
    assert output == "2,3"
    placed = node_runner.placement(str(log))
    assert before - 0.01 <= placed.pop("since") <= time.time()  # its GPU time counts from then
    assert placed == {"node": socket.gethostname(), "pid": os.getpid(), "node_id": "", "gpus": "2,3"}
    assert first.startswith(f"gputui: on Ray node {socket.gethostname()} (pid {os.getpid()}), GPUs 2,3, since ")


def test_an_attempt_ended_while_queued_never_starts(tmp_path):
    signals = tmp_path / "t.signals"
    ray_client.tell(signals, "TERM")  # a kill that reached the attempt before the cluster started it
    log = tmp_path / "t.log"
    code = node_runner.run(["sh", "-c", "touch ran"], {}, str(log), str(tmp_path), str(signals), 5.0)
    assert code == -signal.SIGTERM and not (tmp_path / "ran").exists()
    assert node_runner.placement(str(log)) is None
    assert "ended before it started" in log.read_text()


def test_a_queued_attempt_has_no_placement(tmp_path):
    assert node_runner.placement(str(tmp_path / "missing.log")) is None
    (tmp_path / "other.log").write_text("gputui: Slurm job 12: pending (Resources)\n")
    assert node_runner.placement(str(tmp_path / "other.log")) is None


def test_words_in_the_signal_file_stop_continue_and_end_the_whole_tree(tmp_path):
    signals = tmp_path / "t.signals"
    log = tmp_path / "t.log"
    ended: list[int] = []
    # The command forks a child; both must be stopped, continued and ended.
    argv = ["sh", "-c", "sleep 60 & echo $! > child; wait"]
    runner = threading.Thread(
        target=lambda: ended.append(node_runner.run(argv, {}, str(log), str(tmp_path), str(signals), 1.0))
    )
    runner.start()
    deadline = time.monotonic() + 10
    while not (tmp_path / "child").exists() or not (tmp_path / "child").read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    child = int((tmp_path / "child").read_text())

    def state() -> str:
        with open(f"/proc/{child}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]

    def becomes(want: str) -> None:
        deadline = time.monotonic() + 5
        while state() != want:
            assert time.monotonic() < deadline, f"pid {child} is {state()}, not {want}"
            time.sleep(0.02)

    ray_client.tell(signals, "STOP")
    becomes("T")
    ray_client.tell(signals, "CONT")
    becomes("S")
    ray_client.tell(signals, "TERM")
    runner.join(10)
    assert ended == [-signal.SIGTERM]
    assert not os.path.exists(f"/proc/{child}") or state() == "Z"


# -- which processes are the attempt's, as plain values (node_tree.members) ------------------------------------
MARK = Mark("sched-1", "shard-0", "1", "100.5000.abcd")


def seen(pid: int, parent: int, mark: Mark | None = None, start: int | None = None) -> Seen:
    return Seen(ProcessRef(pid, pid * 10 if start is None else start), parent, mark)


def test_the_tree_is_the_commands_descendants_and_what_carries_the_attempts_mark_with_theirs():
    leader = ProcessRef(200, 2000)
    found = members(
        leader,
        MARK,
        [
            seen(100, 1),  # the runner
            seen(200, 100),  # the command's first process
            seen(201, 200),  # its child
            seen(202, 201, start=1),  # a grandchild that scrubbed its environment: a descendant all the same
            seen(300, 1, MARK),  # a child that left the session and lost its parent: it carries the mark
            seen(301, 300),  # its child (environment scrubbed)
            seen(400, 1),  # a look-alike running the same command, untagged
            seen(401, 1, MARK._replace(scheduler="another run")),  # another run's tags, copied mark
            seen(402, 1, MARK._replace(attempt="2")),  # another attempt of the same task
            seen(403, 1, MARK._replace(runner="100.5000.ffff")),  # another runner's attempt
            seen(404, 400),  # the look-alike's child
        ],
        me=100,
    )
    assert [r.pid for r in found] == [202, 200, 201, 300, 301]  # oldest first
    assert found[0] == ProcessRef(202, 1)


def test_a_reused_pid_is_not_the_command_and_the_runner_is_never_in_its_own_tree():
    stranger = [seen(200, 1, start=2001), seen(201, 200)]  # pid 200 again, started a tick later
    assert members(ProcessRef(200, 2000), MARK, stranger, me=100) == []
    assert members(None, MARK, [seen(100, 1, MARK), seen(101, 100)], me=100) == []  # the runner, its children
    assert members(None, MARK, [], me=100) == []


def test_a_mark_is_read_from_an_environment_and_new_ones_differ():
    env = {TAG_SCHEDULER: "s", TAG_TASK: "t", TAG_ATTEMPT: "3"}
    assert Mark.of(env) is None  # the attempt's tags alone (its stand-in's, a forger's): not the runner's mark
    mark = new_mark(env)
    assert Mark.of(env | {TAG_RUNNER: mark.runner}) == mark == ("s", "t", "3", mark.runner)
    assert mark.runner.startswith(f"{os.getpid()}.") and new_mark(env) != mark


def test_a_look_at_proc_reads_the_mark_of_what_carries_it_and_nothing_when_nothing_is_the_attempts():
    tags = {TAG_SCHEDULER: "s", TAG_TASK: "t", TAG_ATTEMPT: "1"}
    mark = new_mark(tags)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUTUI_")} | tags | {TAG_RUNNER: mark.runner}
    marked = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    try:
        _wait(lambda: Mark.of(ownership.environ(marked.pid) or {}))  # it runs python now, with its environment
        seen = look(os.getpid(), mark._replace(scheduler=None, task=None, attempt=None), None)
        assert seen == [], "no process carries that mark (another attempt's), and no command runs: none looked at"
        seen = {s.ref.pid: s for s in look(os.getpid(), mark, None)}
        assert seen[marked.pid].mark == mark and seen[marked.pid].parent == os.getpid()
        assert os.getpid() not in seen and all(s.mark is None for pid, s in seen.items() if pid != marked.pid)
    finally:
        marked.kill()
        marked.wait()


# -- the runner reaches a child that left the session, and nothing else ----------------------------------------
def test_stop_continue_and_kill_reach_a_child_that_left_the_session_and_spare_look_alikes(tmp_path):
    """The command starts a child in a session of its own, then exits: the child is nobody's descendant of
    the runner's any more, yet it is stopped, continued and killed; processes running the same command
    (untagged, with the attempt's tags but not its runner's mark, with another attempt's) are untouched."""
    signals, log = tmp_path / "t.signals", tmp_path / "t.log"
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    tags = {TAG_SCHEDULER: str(uuid.uuid4()), TAG_TASK: "shard-0", TAG_ATTEMPT: "1"}
    spawn = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen({sleeper!r}, start_new_session=True)\n"
        f"open({str(tmp_path / 'child')!r}, 'w').write(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GPUTUI_")}
    decoys = [
        subprocess.Popen(sleeper, env=clean | extra)
        for extra in ({}, tags, tags | {TAG_ATTEMPT: "2", TAG_RUNNER: "1.1.x"})
    ]
    ended: list[int] = []
    runner = threading.Thread(
        target=lambda: ended.append(
            node_runner.run([sys.executable, "-c", spawn], tags, str(log), str(tmp_path), str(signals), 1.0)
        )
    )
    runner.start()
    try:
        child = int(_wait(lambda: (tmp_path / "child").exists() and (tmp_path / "child").read_text()))
        assert os.getsid(child) == child  # a session of its own
        _wait(lambda: Mark.of(ownership.environ(child) or {}))  # it runs the sleeper now, with the mark
        ray_client.tell(signals, "STOP")
        _wait(lambda: _state(child) == "T")
        ray_client.tell(signals, "CONT")
        _wait(lambda: _state(child) in ("S", "R"))
        ray_client.tell(signals, "KILL")
        runner.join(10)
        assert ended == [-signal.SIGKILL]
        _wait(lambda: _state(child) in ("Z", "gone"))
        for d in decoys:
            assert d.poll() is None and _state(d.pid) != "T", "a look-alike was signalled"
    finally:
        for d in decoys:
            d.kill()
            d.wait()


def test_what_is_left_of_the_tree_when_its_command_ends_is_killed(tmp_path):
    log = tmp_path / "t.log"
    sleeper = "import time; time.sleep(60)"
    argv = ["sh", "-c", f"setsid {sys.executable} -c '{sleeper}' & echo $! > left; sleep 0.3; exit 3"]
    code = node_runner.run(argv, {}, str(log), str(tmp_path), str(tmp_path / "t.signals"), 5.0)
    assert code == 3
    left = int((tmp_path / "left").read_text())
    _wait(lambda: _state(left) in ("Z", "gone"))


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except OSError:
        return "gone"


def _wait(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return value
