from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import psutil

from gputui import ownership
from gputui.ownership import ProcessRef


def _sleeper(env_extra=None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUTUI_")} | (env_extra or {})
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)


def test_send_refuses_a_pid_whose_start_time_differs():
    p = _sleeper()
    try:
        real = ownership.ref_of(p.pid)
        stale = ProcessRef(p.pid, real.ctime - 50)
        assert not ownership.send(stale, signal.SIGKILL, {(stale.pid, stale.ctime)})
        assert not ownership.send(real, signal.SIGKILL, set())  # not recorded: never signalled
        assert p.poll() is None
        assert ownership.send(real, signal.SIGKILL, {(real.pid, real.ctime)})
        assert p.wait(5) == -signal.SIGKILL
    finally:
        p.kill()


def test_find_tagged_matches_scheduler_and_task_only():
    sid = str(uuid.uuid4())
    ours = _sleeper({ownership.TAG_SCHEDULER: sid, ownership.TAG_TASK: "shard-1"})
    other_task = _sleeper({ownership.TAG_SCHEDULER: sid, ownership.TAG_TASK: "shard-2"})
    other_run = _sleeper({ownership.TAG_SCHEDULER: str(uuid.uuid4()), ownership.TAG_TASK: "shard-1"})
    untagged = _sleeper()
    try:
        found = ownership.find_tagged(sid, ["shard-1"])
        assert [r.pid for r in found["shard-1"]] == [ours.pid]
        assert set(found) == {"shard-1"}
        tree = ownership.task_tree(sid, "shard-2", None)
        assert [r.pid for r in tree] == [other_task.pid]
    finally:
        for p in (ours, other_task, other_run, untagged):
            p.kill()
            p.wait()


def test_task_tree_includes_descendants_of_the_recorded_worker():
    sid = str(uuid.uuid4())
    code = (
        "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        "time.sleep(60)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUTUI_")}
    parent = subprocess.Popen([sys.executable, "-c", code], env=env)  # untagged, known by pid + start time
    try:
        psutil.Process(parent.pid)
        import time

        deadline = time.time() + 10
        while not psutil.Process(parent.pid).children() and time.time() < deadline:
            time.sleep(0.02)
        tree = ownership.task_tree(sid, "shard-0", ownership.ref_of(parent.pid))
        assert tree[0].pid == parent.pid and len(tree) == 2
    finally:
        for c in psutil.Process(parent.pid).children(recursive=True):
            c.kill()
        parent.kill()
        parent.wait()
