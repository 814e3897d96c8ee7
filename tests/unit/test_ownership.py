from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import psutil
import pytest

from gputui.executors import cgroup as cgroups
from gputui.executors import ownership
from gputui.executors.cgroup import CgroupHome
from gputui.executors.ownership import ProcessRef


def _sleeper(env_extra=None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUTUI_")} | (env_extra or {})
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)


def test_send_refuses_a_pid_whose_start_time_differs_by_a_single_tick():
    p = _sleeper()
    try:
        real = ownership.ref_of(p.pid)
        for stale in (ProcessRef(p.pid, real.start - 1), ProcessRef(p.pid, real.start + 1)):
            assert not ownership.alive(stale)
            assert not ownership.send(stale, signal.SIGKILL)
        assert p.poll() is None
        assert ownership.send(real, signal.SIGKILL)
        assert p.wait(5) == -signal.SIGKILL
        assert not ownership.alive(real)  # gone, and its pid may be someone else's soon
    finally:
        p.kill()


def test_find_tagged_notices_this_scheduler_and_task_only():
    sid = str(uuid.uuid4())
    ours = _sleeper({ownership.TAG_SCHEDULER: sid, ownership.TAG_TASK: "shard-1", ownership.TAG_ATTEMPT: "2"})
    other_task = _sleeper({ownership.TAG_SCHEDULER: sid, ownership.TAG_TASK: "shard-2"})
    other_run = _sleeper({ownership.TAG_SCHEDULER: str(uuid.uuid4()), ownership.TAG_TASK: "shard-1"})
    untagged = _sleeper()
    try:
        _wait_exec(ours, other_task, other_run, untagged)
        found = ownership.find_tagged(sid, ["shard-1"])
        assert [r.pid for r in found["shard-1"]] == [ours.pid]
        assert set(found) == {"shard-1"}
        assert ownership.tags(ours.pid) == (sid, "shard-1", "2")
    finally:
        for p in (ours, other_task, other_run, untagged):
            p.kill()
            p.wait()


def test_a_forged_tag_does_not_make_a_process_part_of_an_attempt():
    """Tags are for noticing only: a stranger that copied a worker's tags is never in its tree."""
    sid = str(uuid.uuid4())
    worker = _sleeper({ownership.TAG_SCHEDULER: sid, ownership.TAG_TASK: "shard-0", ownership.TAG_ATTEMPT: "1"})
    forger = _sleeper({ownership.TAG_SCHEDULER: sid, ownership.TAG_TASK: "shard-0", ownership.TAG_ATTEMPT: "1"})
    try:
        _wait_exec(worker, forger)
        procs = ownership.AttemptProcesses(waiter=None, worker=ownership.ref_of(worker.pid), cgroup=None)
        assert [r.pid for r in procs.tree()] == [worker.pid]
        assert forger.pid in {r.pid for r in ownership.find_tagged(sid)["shard-0"]}  # noticed, not targeted
    finally:
        for p in (worker, forger):
            p.kill()
            p.wait()


def test_attempt_tree_holds_the_waiters_descendants_even_with_a_scrubbed_environment():
    # The "waiter" here is a process whose child clears its environment (env={}) and starts a grandchild.
    code = (
        "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
        '\'import subprocess, sys, time; subprocess.Popen([sys.executable, "-c", "import time; '
        "time.sleep(60)\"]); time.sleep(60)'], env={}); time.sleep(60)"
    )
    waiter = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 10
        while len(psutil.Process(waiter.pid).children(recursive=True)) < 2 and time.time() < deadline:
            time.sleep(0.02)
        below = psutil.Process(waiter.pid).children(recursive=True)
        assert len(below) == 2 and all(ownership.tags(c.pid)[0] is None for c in below)
        procs = ownership.AttemptProcesses(waiter=ownership.ref_of(waiter.pid), worker=None, cgroup=None)
        tree = [r.pid for r in procs.tree()]
        assert sorted(tree) == sorted(c.pid for c in below) and waiter.pid not in tree
        # A record of the waiter with another start time (a reused pid) names nothing at all.
        reused = ProcessRef(waiter.pid, ownership.ref_of(waiter.pid).start + 1)
        assert ownership.AttemptProcesses(reused, None, None).tree() == []
    finally:
        for c in psutil.Process(waiter.pid).children(recursive=True):
            c.kill()
        waiter.kill()
        waiter.wait()


def _wait_exec(*procs: subprocess.Popen) -> None:
    """Until each child has exec'd (its environment is readable as the new program's)."""
    deadline = time.time() + 10
    while time.time() < deadline and not all("python" in " ".join(psutil.Process(p.pid).cmdline()) for p in procs):
        time.sleep(0.01)


def test_where_an_attempt_has_a_cgroup_membership_decides_what_its_tags_mean(tmp_path):
    """A process that copied an attempt's tags but is outside its cgroup is not the attempt's; one in a
    cgroup the worker made below the attempt's still is; a removed cgroup holds nothing; without a cgroup
    a tag cannot be checked either way."""
    sid = str(uuid.uuid4())
    home = CgroupHome.open(sid)
    if home is None:
        pytest.skip("cgroup v2 with cgroup.kill is not writable here")
    tags = {ownership.TAG_SCHEDULER: sid, ownership.TAG_TASK: "shard-0", ownership.TAG_ATTEMPT: "1"}
    worker, cgroup = home.spawn_inside("shard-0.1", lambda: _sleeper(tags))
    forger = _sleeper(tags)
    try:
        assert cgroup is not None
        below = os.path.join(cgroup, "own")  # the worker's own cgroup below the attempt's
        os.mkdir(below)
        with open(os.path.join(below, "cgroup.procs"), "w") as f:
            f.write(str(worker.pid))
        _wait_exec(worker, forger)
        tagged = ownership.tagged_as(sid, "shard-0", 1)
        assert {r.pid for r in tagged} == {worker.pid, forger.pid}
        procs = ownership.AttemptProcesses(waiter=None, worker=None, cgroup=cgroup)
        assert [r.pid for r in procs.tree()] == [worker.pid]  # a member, though not of the top cgroup itself
        unprovable, copied = procs.sort_tagged(tagged)
        assert unprovable == [] and [r.pid for r in copied] == [forger.pid]
        no_cgroup = ownership.AttemptProcesses(waiter=None, worker=None, cgroup=None)
        assert no_cgroup.sort_tagged(tagged) == (tagged, [])
        worker.kill()
        worker.wait()
        os.rmdir(below)
        os.rmdir(cgroup)
        assert procs.tree() == [] and procs.sort_tagged(tagged) == ([], tagged)  # removed: it holds nothing
        elsewhere = ownership.AttemptProcesses(None, None, str(tmp_path / "not-a-cgroup" / "shard-0.1"))
        assert elsewhere.sort_tagged(tagged) == (tagged, [])  # no cgroup file system there: cannot tell
    finally:
        for p in (worker, forger):
            p.kill()
            p.wait()
        for path in (os.path.join(cgroup or "", "own"), cgroup):
            if path and os.path.isdir(path):
                os.rmdir(path)
        home.close()


def test_an_attempts_cgroup_is_found_at_or_below_it_and_only_there():
    """How a rebuild tells that a tagged process is in its attempt's cgroup of this run: the path may go on
    below `gputui-<scheduler>/<task>.<n>` (a cgroup the worker made), the attempt's own is what counts."""
    sid = str(uuid.uuid4())
    run = f"/sys/fs/cgroup/user.slice/{cgroups.run_root_name(sid)}"
    attempt = f"{run}/{cgroups.attempt_name('shard-0', 7)}"
    assert cgroups.attempt_folder(attempt, sid, "shard-0", 7) == attempt
    assert cgroups.attempt_folder(f"{attempt}/own/deeper", sid, "shard-0", 7) == attempt
    for elsewhere in (
        f"{run}/shard-0.6/own",  # another attempt of the task
        f"{run}/shard-1.7",  # another task
        f"/sys/fs/cgroup/{cgroups.run_root_name(str(uuid.uuid4()))}/shard-0.7",  # another run
        f"{run}/shard-0.1/{cgroups.run_root_name(sid)}/shard-0.7",  # made to look like it, inside another
        run,  # the run's own folder: no attempt's
        "/sys/fs/cgroup/shard-0.7",
    ):
        assert cgroups.attempt_folder(elsewhere, sid, "shard-0", 7) is None, elsewhere


def test_a_missing_cgroup_is_gone_only_where_a_cgroup_file_system_is_mounted_here(tmp_path):
    """`pids` of a folder that is not there: empty (removed, it held nothing) only in a cgroup v2 file system
    this machine mounts at that very path, else unknown, so tagged processes keep their hold."""
    mount = cgroups.mount()
    if mount is None:
        pytest.skip("no cgroup v2 file system is mounted here")
    gone = mount / f"gputui-{uuid.uuid4()}" / "shard-0.1"
    assert cgroups.pids(str(gone)) == set()
    assert cgroups.pids(str(tmp_path / "shard-0.1")) is None  # not a cgroup file system
    assert cgroups.pids(f"{mount}/../not-a-cgroup-{uuid.uuid4()}/shard-0.1") is None  # under it in name only
    # Something else mounted below the cgroup mount: a path in it is not in the cgroup file system.
    over = mount / f"gputui-test-{uuid.uuid4()}"
    try:
        over.mkdir()
    except OSError:
        pytest.skip("cgroup v2 is not writable here")
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "none", str(over)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount here: {r.stderr.strip()}")
        try:
            assert cgroups.pids(str(over / "shard-0.1")) is None
            tagged = [ownership.ref_of(os.getpid())]
            procs = ownership.AttemptProcesses(None, None, str(over / "shard-0.1"))
            assert procs.sort_tagged(tagged) == (tagged, [])  # may be its own: keeps its hold
        finally:
            subprocess.run(["umount", "-l", str(over)], capture_output=True)
    finally:
        over.rmdir()


def test_cgroup_members_kill_and_remove_reach_the_cgroups_a_worker_made_below_its_own():
    """The leftovers a waiter or keeper counts, what cgroup.kill ends and what is removed afterwards include
    a process that moved into a cgroup made below the attempt's."""
    sid = str(uuid.uuid4())
    home = CgroupHome.open(sid)
    if home is None:
        pytest.skip("cgroup v2 with cgroup.kill is not writable here")
    worker, cgroup = home.spawn_inside(cgroups.attempt_name("shard-0", 1), lambda: _sleeper())
    try:
        assert cgroup is not None and cgroups.of(worker.pid) == cgroup
        below = os.path.join(cgroup, "own", "deeper")
        os.makedirs(below)
        with open(os.path.join(below, "cgroup.procs"), "w") as f:
            f.write(str(worker.pid))
        assert cgroups.of(worker.pid) == below
        assert cgroups.attempt_folder(below, sid, "shard-0", 1) == cgroup
        assert cgroups.members(cgroup) == [worker.pid]
        assert cgroups.kill(cgroup)
        assert worker.wait(5) == -signal.SIGKILL
        cgroups.remove(cgroup, wait=5.0)
        assert not os.path.exists(cgroup)
        assert cgroups.members(cgroup) == []  # gone: holds nothing
    finally:
        worker.kill()
        worker.wait()
        for folder, _, _ in os.walk(cgroup or "/nonexistent", topdown=False):
            os.rmdir(folder)
        home.close()


def test_scan_tagged_reads_task_and_attempt_in_one_pass():
    sid = str(uuid.uuid4())
    tags = {ownership.TAG_SCHEDULER: sid, ownership.TAG_TASK: "shard-3"}
    first = _sleeper(tags | {ownership.TAG_ATTEMPT: "1"})
    second = _sleeper(tags | {ownership.TAG_ATTEMPT: "2"})
    try:
        _wait_exec(first, second)
        found = {(t.task, t.attempt, t.ref.pid) for t in ownership.scan_tagged(sid)}
        assert found == {("shard-3", "1", first.pid), ("shard-3", "2", second.pid)}
        assert [r.pid for r in ownership.tagged_as(sid, "shard-3", 2)] == [second.pid]
    finally:
        for p in (first, second):
            p.kill()
            p.wait()
