from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
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
        assert not ownership.send(stale, signal.SIGKILL)
        assert p.poll() is None
        assert ownership.send(real, signal.SIGKILL)
        assert p.wait(5) == -signal.SIGKILL
    finally:
        p.kill()


def test_tagged_ref_requires_this_scheduler_task_and_attempt():
    sid = str(uuid.uuid4())
    p = _sleeper({ownership.TAG_SCHEDULER: sid, ownership.TAG_TASK: "shard-5", ownership.TAG_ATTEMPT: "2"})
    try:
        assert ownership.tagged_ref(p.pid, sid, "shard-5", 2) is not None
        assert ownership.tagged_ref(p.pid, sid, "shard-0") is None  # another task's worker: never ours
        assert ownership.tagged_ref(p.pid, sid, "shard-5", 1) is None  # another attempt
        assert ownership.tagged_ref(p.pid, str(uuid.uuid4()), "shard-5") is None
    finally:
        p.kill()
        p.wait()


def test_recorded_worker_of_another_task_is_not_part_of_this_tree():
    sid = str(uuid.uuid4())
    p = _sleeper({ownership.TAG_SCHEDULER: sid, ownership.TAG_TASK: "shard-5"})
    try:
        # A stale record names shard-5's worker as shard-0's: the tree of shard-0 must stay empty.
        assert ownership.task_tree(sid, "shard-0", ownership.ref_of(p.pid)) == []
    finally:
        p.kill()
        p.wait()


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


def test_task_tree_includes_untagged_descendants_of_the_recorded_worker():
    sid = str(uuid.uuid4())
    # The child clears its environment (env -i), so only its parentage makes it ours.
    code = (
        "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], "
        "env={}); time.sleep(60)"
    )
    parent = _sleeper({ownership.TAG_SCHEDULER: sid, ownership.TAG_TASK: "shard-0"})
    parent.kill()
    parent.wait()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUTUI_")}
    env |= {ownership.TAG_SCHEDULER: sid, ownership.TAG_TASK: "shard-0"}
    parent = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.time() + 10
        while not psutil.Process(parent.pid).children() and time.time() < deadline:
            time.sleep(0.02)
        child = psutil.Process(parent.pid).children()[0]
        assert ownership.tags(child)[0] is None
        tree = ownership.task_tree(sid, "shard-0", ownership.ref_of(parent.pid))
        assert [r.pid for r in tree] == [parent.pid, child.pid]
    finally:
        for c in psutil.Process(parent.pid).children(recursive=True):
            c.kill()
        parent.kill()
        parent.wait()
