"""Whatever dies, fills up or is damaged: no finished shard is run again, no shard runs twice at once,
no GPU is shared by two runs, and nothing we do not own is signalled. Real processes, real signals."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import psutil
import pytest

from gputui.executors import cgroup as cgroups
from gputui.executors.cgroup import CgroupHome
from tests.conftest import JobFactory, gone, gputui, gputui_bg, keeper_of, wait_for


def _status(run_dir) -> dict:
    r = gputui("status", "--run-dir", run_dir, "--json")
    return {t["id"]: t for t in json.loads(r.stdout)["tasks"]} if r.returncode in (0, 1) else {}


def _starts(make_job) -> Counter:
    return Counter(e["task"] for e in make_job.events() if e["event"] == "start")


def _finished(make_job) -> set[str]:
    return {e["task"] for e in make_job.events() if e["event"] == "finish"}


def _exits_recorded(make_job) -> int:
    try:
        return (make_job.run_dir / "logs" / "exits.journal").read_text().count("exit ")
    except OSError:
        return 0


def _pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def _cgroups_usable() -> bool:
    home = CgroupHome.open(f"probe-{uuid.uuid4()}")
    if home is None:
        return False
    home.close()
    return True


# -- 1. the keeper dies ----------------------------------------------------------------------------
def test_scheduler_and_keeper_sigkilled_together_lose_no_exit_status(make_job, reaper, tmp_path):
    job = make_job(ids=40, num_workers=4, max_parallel=4, sleep=1.5)
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "first.log")
    reaper.append(sched)
    wait_for(lambda: len(make_job.running()) == 4, what="four workers")
    keeper = keeper_of(sched)
    sched.send_signal(signal.SIGKILL)
    keeper.send_signal(signal.SIGKILL)
    sched.wait(5)
    # The workers finish and write their outputs while no scheduler or keeper is alive.
    wait_for(lambda: len(_finished(make_job)) == 4, what="the orphaned workers to finish")
    wait_for(lambda: _exits_recorded(make_job) == 4, what="their exits recorded")
    r = gputui("run", "--jobs", job)
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(_starts(make_job).values()) == {1}  # nothing ran again
    assert "exit status unknown" not in r.stdout
    assert {t["attempts"] for t in _status(make_job.run_dir).values()} == {1}


def test_a_run_killed_whole_and_started_again_elsewhere_leaves_none_of_its_cgroups(make_job, tmp_path):
    """Every process of a run SIGKILLed at once (an OOM killer, a `kill -9` of the session) removes no cgroup;
    the next scheduler, started from another cgroup (another SSH login), removes the killed attempts' cgroups
    and the dead scheduler's run folder, and its own at the end."""
    if not _cgroups_usable():
        pytest.skip("no writable cgroup v2 with cgroup.kill here")
    job = make_job(ids=20, num_workers=4, max_parallel=2, sleep=30)
    elsewhere = Path(cgroups.of("self")) / f"test-login-{uuid.uuid4().hex[:8]}"
    elsewhere.mkdir()
    try:
        first = subprocess.Popen(
            [sys.executable, "-m", "gputui", "run", "--jobs", job],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=lambda: Path(elsewhere, "cgroup.procs").write_text("0"),
        )
        wait_for(lambda: len(make_job.running()) == 2, what="two workers")
        (elsewhere / "cgroup.kill").write_text("1")
        first.wait(10)
        wait_for(lambda: not cgroups.members(str(elsewhere)), what="every process of the run gone")
        with sqlite3.connect(make_job.run_dir / "state.db") as db:
            killed = [Path(c) for (c,) in db.execute("SELECT cgroup FROM attempts WHERE cgroup IS NOT NULL")]
        assert len(killed) == 2 and all(c.is_dir() and c.parent.parent == elsewhere for c in killed)
        make_job(ids=20, num_workers=4, max_parallel=2, sleep=0)  # the retries end at once
        r = gputui("run", "--jobs", job)
        assert r.returncode == 0, r.stdout + r.stderr
        with sqlite3.connect(make_job.run_dir / "state.db") as db:
            made = [Path(c) for (c,) in db.execute("SELECT cgroup FROM attempts WHERE cgroup IS NOT NULL")]
        assert len(made) > len(killed)
        left = sorted({c for c in made + [c.parent for c in made] if c.exists()})
        assert not left, f"cgroups left behind: {left}"
    finally:
        cgroups.remove(str(elsewhere), wait=5.0)


def test_keeper_killed_alone_the_run_goes_on_and_nothing_runs_twice(make_job, reaper, tmp_path):
    job = make_job(ids=40, num_workers=8, max_parallel=2, sleep=0.6)
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "sched.log")
    reaper.append(sched)
    wait_for(lambda: len(make_job.running()) == 2, what="two workers")
    keeper_of(sched).send_signal(signal.SIGKILL)
    assert sched.wait(60) == 0, (tmp_path / "sched.log").read_text()
    assert set(_starts(make_job).values()) == {1} and len(_starts(make_job)) == 8


def test_a_killed_waiters_worker_is_recorded_by_the_keeper_and_not_run_again(make_job, reaper, tmp_path):
    job = make_job(ids=20, num_workers=2, max_parallel=2, sleep=1.5)
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "sched.log")
    reaper.append(sched)
    workers = wait_for(lambda: len(make_job.running()) == 2 and make_job.running(), what="two workers")
    waiter = psutil.Process(psutil.Process(workers["shard-0"]).ppid())
    assert "gputui.executors.keeper" in " ".join(waiter.cmdline())  # a forked waiter
    waiter.send_signal(signal.SIGKILL)
    assert sched.wait(60) == 0, (tmp_path / "sched.log").read_text()
    assert _starts(make_job) == Counter({"shard-0": 1, "shard-1": 1})
    assert {t["attempts"] for t in _status(make_job.run_dir).values()} == {1}
    # Its output pipe outlived its reader: the keeper copied on what it printed after (no SIGPIPE).
    assert "finish [0, 10)" in (make_job.run_dir / "logs" / "shard-0.attempt1.log").read_text()
    with sqlite3.connect(make_job.run_dir / "state.db") as db:
        made = [Path(c) for (c,) in db.execute("SELECT cgroup FROM attempts WHERE cgroup IS NOT NULL")]
    # The killed waiter's attempt cgroup is removed by the scheduler, and the run's folder once the run ends.
    assert made or not _cgroups_usable(), "cgroups here, yet none recorded"
    leftovers = [c for c in made + [c.parent for c in made] if c.exists()]
    assert not leftovers, f"cgroups left behind: {leftovers}"


class _Keeper:
    """A keeper started as the scheduler starts one, already holding `held` descriptors (so its own are
    numbered past select()'s 1023) under `limit` on open files; `waiter()` asks it for one."""

    def __init__(self, tmp_path: Path, held: int, limit: tuple[int, int]):
        if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < held + 100:
            pytest.skip(f"this test process may not open {held + 100} files")
        self.journal = tmp_path / "attempts.journal"
        (tmp_path / "logs").mkdir()  # (its copy of exits)
        self.requests, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.requests.settimeout(30)
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK)
        fillers = [os.open(os.devnull, os.O_RDONLY) for _ in range(held)]
        try:
            with open(tmp_path / "keeper.log", "ab") as err:
                self.proc = subprocess.Popen(
                    [sys.executable, "-P", "-m", "gputui.executors.keeper", str(self.journal), "keeper-test"],
                    stdin=theirs.fileno(), stdout=wake_w, stderr=err, start_new_session=True, pass_fds=fillers,
                    env=os.environ | {"GPUTUI_NO_CGROUP": "1"},
                    preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limit),
                )  # fmt: skip
        finally:
            for fd in [*fillers, wake_w]:
                os.close(fd)
            theirs.close()
        self.wake, self.log = wake_r, tmp_path / "keeper.log"

    def waiter(self) -> tuple[socket.socket | None, str]:
        """A waiter's channel, or None and the keeper's refusal."""
        self.requests.send(b"waiter")
        msg, fds, _, _ = socket.recv_fds(self.requests, 256, 1)
        assert msg, f"the keeper is gone: {self.log.read_text()}"
        return (socket.socket(fileno=fds[0]) if fds else None), msg.decode()

    def close(self) -> int:
        self.requests.close()
        os.close(self.wake)
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def test_a_keeper_past_descriptor_1023_forks_its_waiters_and_copies_a_killed_ones_output(tmp_path):
    """With Slurm, a keeper holds a socket per waiter (up to 512 of them, more with max_parallel): select()
    cannot wait on a descriptor past 1023, and a soft limit of 1024 open files runs out. This one holds
    1100 already under a soft limit of 1150: it raises its own limit, forks 60 waiters, copies on the output
    of a killed waiter's worker, and gives its waiters (so the workers) the limit it was started with."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard < 1300:
        pytest.skip(f"the hard limit on open files is {hard} here")
    keeper = _Keeper(tmp_path, held=1100, limit=(1150, hard))
    try:
        channels = [keeper.waiter() for _ in range(60)]
        assert all(channel for channel, _ in channels), [said for _, said in channels if not _]
        channel = channels[0][0]
        log = tmp_path / "worker.log"
        request = {"task": "shard-0", "n": 1, "argv": ["/bin/sh", "-c", "ulimit -Sn; sleep 1; echo after"],
                   "env": {}, "log": str(log), "grace": 1.0}  # fmt: skip
        socket.send_fds(channel, [json.dumps(request).encode()], [])
        start = wait_for(lambda: re.search(r"^start shard-0 1 (\d+) ", keeper.journal.read_text(), re.M),
                         what="the worker's start recorded")  # fmt: skip
        os.kill(int(start.group(1)), signal.SIGKILL)  # its waiter
        wait_for(lambda: "\nexit shard-0 1 0 " in "\n" + keeper.journal.read_text(), what="its exit, recorded")
        assert log.read_text() == "1150\nafter\n"  # its limit; and what it printed once its waiter was gone
        assert keeper.proc.poll() is None
        for c, _ in channels:
            c.close()
    finally:
        code = keeper.close()
    assert code == 0, keeper.log.read_text()


def test_a_waiter_killed_on_a_later_attempt_has_its_output_copied_into_that_attempts_log(tmp_path):
    """A waiter's workers write to one pipe, attempt after attempt, lent to the keeper once: killed during its
    third attempt, that attempt's output still reaches that attempt's log (no SIGPIPE), and nothing of it any
    earlier attempt's log."""
    keeper = _Keeper(tmp_path, held=0, limit=resource.getrlimit(resource.RLIMIT_NOFILE))
    try:
        channel, said = keeper.waiter()
        assert channel is not None, said
        logs = [tmp_path / f"shard-0.attempt{n}.log" for n in (1, 2, 3)]

        def ask(n: int, script: str) -> None:
            request = {"task": "shard-0", "n": n, "argv": ["/bin/sh", "-c", script], "env": {},
                       "log": str(logs[n - 1]), "grace": 1.0}  # fmt: skip
            socket.send_fds(channel, [json.dumps(request).encode()], [])

        for n in (1, 2):
            ask(n, f"echo attempt {n}")
            wait_for(lambda n=n: f"\nexit shard-0 {n} 0 " in "\n" + keeper.journal.read_text(), what=f"exit {n}")
        ask(3, "echo before; sleep 1; echo after")
        start = wait_for(lambda: re.search(r"^start shard-0 3 (\d+) ", keeper.journal.read_text(), re.M),
                         what="the third attempt's start")  # fmt: skip
        wait_for(lambda: logs[2].read_text() == "before\n", what="its first line, copied by its waiter")
        os.kill(int(start.group(1)), signal.SIGKILL)  # its waiter
        wait_for(lambda: "\nexit shard-0 3 0 " in "\n" + keeper.journal.read_text(), what="its exit, recorded")
        assert [log.read_text() for log in logs] == ["attempt 1\n", "attempt 2\n", "before\nafter\n"]
        channel.close()
    finally:
        code = keeper.close()
    assert code == 0, keeper.log.read_text()


def test_a_keeper_out_of_descriptors_refuses_a_waiter_and_goes_on(tmp_path):
    """The hard limit itself reached (1150, 1100 of them held already): the scheduler is told no waiter could
    be forked, and the keeper goes on serving the waiters it has, and forks again once some have ended."""
    keeper = _Keeper(tmp_path, held=1100, limit=(1150, 1150))
    try:
        channels = []
        for _ in range(60):
            channel, said = keeper.waiter()
            if channel is None:
                break
            channels.append(channel)
        assert channel is None and "cannot fork a waiter" in said and "Too many open files" in said, said
        assert channels and keeper.proc.poll() is None
        for c in channels[:5]:
            c.close()  # their waiters end
        channel = wait_for(lambda: keeper.waiter()[0], what="a waiter once some have ended")
        for c in [*channels, channel]:
            c.close()
    finally:
        code = keeper.close()
    assert code == 0, keeper.log.read_text()


# -- 2. leftovers hold GPUs ------------------------------------------------------------------------
@pytest.mark.parametrize("containment", ["cgroup", "subreaper"])
def test_daemon_left_by_a_finished_worker_is_ended_before_its_gpu_is_reused(
    make_job, reaper, tmp_path, containment
):
    env = dict(os.environ)
    if containment == "cgroup" and not _cgroups_usable():
        pytest.skip("cgroup v2 with cgroup.kill is not writable here; the subreaper case covers this machine")
    if containment == "subreaper":
        env["GPUTUI_NO_CGROUP"] = "1"
    # One GPU, two shards: shard-1 may start only once nothing of shard-0 is left. Its daemon scrubbed
    # its environment (no tags) and ignores SIGTERM.
    job = make_job(
        ids=20,
        num_workers=2,
        gpus_per_worker=1,
        max_parallel=2,
        stop_grace_s=1,
        worker_args=f"--daemon-file {tmp_path}/daemon-{{task_id}}.pid --daemon-scrub --daemon-stubborn",
    )
    r = gputui("run", "--jobs", job, "--simulate", "1", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    daemons = [_pid_in(tmp_path / f"daemon-shard-{i}.pid") for i in range(2)]
    assert all(daemons) and all(gone(p) for p in daemons)
    assert "still running; they are ended" in r.stdout
    journal = (make_job.run_dir / "attempts.journal").read_text().splitlines()
    order = [line.split()[0] + " " + line.split()[1] for line in journal]
    assert order.index("clear shard-0") < order.index("start shard-1")  # its GPU was free only then
    starts = [line for line in journal if line.startswith("start ")]
    assert all((line.split()[7] != "-") == (containment == "cgroup") for line in starts)
    assert {t["status"] for t in _status(make_job.run_dir).values()} == {"done"}


def test_daemon_outliving_a_crashed_scheduler_and_keeper_is_ended_and_the_shard_not_rerun(
    make_job, reaper, tmp_path
):
    job = make_job(
        ids=10, num_workers=1, sleep=1.0, stop_grace_s=1, worker_args=f"--daemon-file {tmp_path}/daemon.pid"
    )
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "first.log")
    reaper.append(sched)
    wait_for(lambda: make_job.running(), what="the worker")
    keeper = keeper_of(sched)
    sched.send_signal(signal.SIGKILL)
    keeper.send_signal(signal.SIGKILL)
    daemon = wait_for(lambda: _pid_in(tmp_path / "daemon.pid"), what="the daemon")
    wait_for(lambda: _finished(make_job), what="the worker to finish")
    wait_for(lambda: gone(daemon), what="its waiter to end the daemon")
    r = gputui("run", "--jobs", job)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _starts(make_job) == Counter({"shard-0": 1})


# -- 3. a damaged journal --------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncated", "exit codes altered", "deleted"])
def test_damaged_journal_never_reruns_finished_shards_nor_invents_a_reason(make_job, reaper, tmp_path, damage):
    job = make_job(ids=20, num_workers=2, max_parallel=2, sleep=1.0)
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "first.log")
    reaper.append(sched)
    wait_for(lambda: len(make_job.running()) == 2, what="two workers")
    sched.send_signal(signal.SIGKILL)
    sched.wait(5)
    wait_for(lambda: _exits_recorded(make_job) == 2, what="both exits recorded")
    journal = make_job.run_dir / "attempts.journal"
    text = journal.read_text()
    assert text.count("exit ") == 2
    if damage == "truncated":
        journal.write_text(text[: text.index("exit ") + 7])  # a torn record, and the rest gone
    elif damage == "exit codes altered":
        journal.write_text(text.replace(" 1 0 ", " 1 3 "))  # bit rot: exit 0 now reads exit 3
    else:
        journal.unlink()
    r = gputui("run", "--jobs", job)
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(_starts(make_job).values()) == {1}
    status = _status(make_job.run_dir)
    assert {t["status"] for t in status.values()} == {"done"} and {t["exit_code"] for t in status.values()} == {0}


@pytest.mark.parametrize("harm", ["moved aside", "emptied"])
def test_lost_or_damaged_state_is_rebuilt_without_running_a_live_shard_twice(make_job, reaper, tmp_path, harm):
    job = make_job(ids=40, num_workers=4, max_parallel=2, sleep=2.0)
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "first.log")
    reaper.append(sched)
    wait_for(lambda: len(_finished(make_job)) == 2 and len(make_job.running()) == 2, what="two done, two running")
    running = dict(make_job.running())
    sched.send_signal(signal.SIGKILL)
    sched.wait(5)
    db = make_job.run_dir / "state.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    if harm == "moved aside":
        db.rename(tmp_path / "state.db.old")  # what a user told to "move it aside" would do
        r = gputui("run", "--jobs", job)
    else:
        db.write_bytes(b"")
        refused = gputui("run", "--jobs", job)
        assert refused.returncode == 2 and "--rebuild-state" in refused.stderr, refused.stdout + refused.stderr
        assert db.read_bytes() == b""  # refused untouched
        r = gputui("run", "--jobs", job, "--rebuild-state")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rebuilt the run's state" in r.stdout
    assert "re-adopted" in r.stdout
    assert set(_starts(make_job).values()) == {1} and len(_starts(make_job)) == 4  # no shard ran twice
    assert all(gone(p) for p in running.values())
    assert {t["status"] for t in _status(make_job.run_dir).values()} == {"done"}


# -- 5. a busy database, a full disk ---------------------------------------------------------------
def test_outside_writer_holding_the_database_is_waited_out(make_job, reaper, tmp_path):
    job = make_job(ids=30, num_workers=6, max_parallel=2, sleep=0.5)
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "sched.log")
    reaper.append(sched)
    wait_for(lambda: _finished(make_job), what="a first shard done")
    db = sqlite3.connect(make_job.run_dir / "state.db", timeout=30, isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")  # longer than any busy timeout: 12 s
    time.sleep(12)
    assert sched.poll() is None, (tmp_path / "sched.log").read_text()
    db.execute("ROLLBACK")
    db.close()
    assert sched.wait(60) == 0, (tmp_path / "sched.log").read_text()
    assert "is locked by another process" in (tmp_path / "sched.log").read_text()
    assert set(_starts(make_job).values()) == {1} and len(_finished(make_job)) == 6


def test_full_disk_stops_new_launches_keeps_workers_and_goes_on_when_there_is_room(
    make_job, reaper, tmp_path, small_disk
):
    job = make_job(ids=40, num_workers=8, max_parallel=1, sleep=0.5, merged=False)
    disk = small_disk(4)
    run_dir = disk / "run"
    sched = gputui_bg("run", "--jobs", job, "--run-dir", run_dir, log=tmp_path / "sched.log")
    reaper.append(sched)
    wait_for(lambda: _finished(make_job), what="a first shard done")
    filler = disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    wait_for(lambda: "is full" in (tmp_path / "sched.log").read_text(), what="the full disk noticed")
    time.sleep(2)
    assert sched.poll() is None, (tmp_path / "sched.log").read_text()
    starts_while_full = sum(_starts(make_job).values())
    time.sleep(1.5)
    assert sum(_starts(make_job).values()) == starts_while_full  # nothing new starts
    filler.unlink()
    assert sched.wait(60) == 0, (tmp_path / "sched.log").read_text()
    log = (tmp_path / "sched.log").read_text()
    assert "there is room again" in log
    # A worker that itself hit the full disk failed and was retried; none finished twice.
    finishes = Counter(e["task"] for e in make_job.events() if e["event"] == "finish")
    assert len(finishes) == 8 and set(finishes.values()) == {1}


FLOOD = """
import os, sys, time
out, failing = sys.argv[1], os.environ["GPUTUI_TASK_ID"] == "shard-3" and os.environ["GPUTUI_ATTEMPT"] == "1"
lines = 20_000 if os.environ["GPUTUI_ATTEMPT"] == "1" else 10
for i in range(lines):
    print(f"line {i:05d} " + "." * 98)  # 110 bytes
sys.stdout.flush()
time.sleep(1)
with open(out, "w") as f:
    f.write("data_id\\n")
open(out + ".ended", "w").close()
sys.exit(3 if failing else 0)
"""


def test_workers_flooding_a_full_disk_with_output_keep_running_and_each_end_is_said_once(
    tmp_path, reaper, small_disk
):
    """Their output is a pipe: the waiter drops the lines the disk refuses (the log says how many), the
    workers never see the full disk. Each settle is said once, however often its commit is tried again."""
    disk = small_disk(5)
    (tmp_path / "flood.py").write_text(FLOOD)
    (tmp_path / "ids.csv").write_text("data_id\n" + "".join(f"{i}\n" for i in range(4)))
    job = tmp_path / "job.toml"
    job.write_text(f"""
[job]
name = "flood"
command = "{sys.executable} flood.py {{output}}"
[shards]
input = "ids.csv"
num_workers = 4
[resources]
gpus_per_worker = 0
max_parallel = 4
[retry]
max_attempts = 2
backoff_s = 0.5
[outputs]
dir = "{tmp_path / "out"}"
pattern = "out_{{low}}_{{high}}.csv"
""")
    filler = disk / "filler"
    filler.write_bytes(b"\0" * (1 << 20))  # freed once the disk is full: room again
    log = tmp_path / "sched.log"
    sched = gputui_bg("run", "--jobs", job, "--run-dir", disk / "run", "--quiet", log=log)
    reaper.append(sched)
    ended = lambda: len(list((tmp_path / "out").glob("*.ended")))  # noqa: E731
    wait_for(lambda: ended() == 4 and "is full" in log.read_text(), timeout=60, what="four workers ended")
    time.sleep(3)  # the scheduler tries its turn again, and again
    filler.unlink()
    assert sched.wait(90) == 0, log.read_text()
    said = log.read_text()
    for i in range(3):
        assert said.count(f"done shard-{i} ") == 1, said
    assert said.count("FAILED shard-3 ") == 1 and said.count("done shard-3 ") == 1, said
    db = sqlite3.connect(disk / "run" / "state.db")
    rows = db.execute("SELECT task_id, number, exit_code FROM attempts ORDER BY task_id, number").fetchall()
    db.close()
    assert rows == [(f"shard-{i}", 1, 0) for i in range(3)] + [("shard-3", 1, 3), ("shard-3", 2, 0)]
    dropped = 0
    for i in range(4):
        text = (disk / "run" / "logs" / f"shard-{i}.attempt1.log").read_text()
        counts = [int(n) for n in re.findall(r"^gputui: (\d+) lines? dropped: disk full$", text, re.M)]
        whole = len(re.findall(r"^line \d{5} \.{98}$", text, re.M))
        # A line the disk cut (its head written) counts as dropped: whole if only its newline was cut.
        assert 0 <= whole + sum(counts) - 20_000 <= len(counts), (i, whole, counts)
        dropped += sum(counts)
    assert dropped > 20_000  # the disk refused more than a worker's worth


# -- 7. wrong replies ------------------------------------------------------------------------------
@pytest.mark.parametrize("scheduler", ["live", "none"])
def test_kill_of_a_worker_slow_to_exit_reports_the_kill(make_job, reaper, tmp_path, scheduler):
    job = make_job(ids=10, num_workers=1, sleep=600, stop_grace_s=5, worker_args="--term-delay 1")
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "sched.log")
    reaper.append(sched)
    pid = wait_for(lambda: make_job.running().get("shard-0"), what="the worker")
    if scheduler == "none":
        sched.send_signal(signal.SIGKILL)
        sched.wait(5)
    r = gputui("kill", "--run-dir", make_job.run_dir, "shard-0")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "shard-0: killed 1 process(es)" in r.stdout, r.stdout
    assert gone(pid)
    wait_for(lambda: _status(make_job.run_dir)["shard-0"]["status"] == "killed", what="killed")


def test_retry_force_runs_one_done_shard_again(make_job):
    job = make_job(ids=20, num_workers=2)
    assert gputui("run", "--jobs", job).returncode == 0
    out = make_job.run_dir / "outputs" / "out_0_10.csv"
    out.unlink()
    r = gputui("retry", "--run-dir", make_job.run_dir, "shard-0")
    assert r.returncode == 1 and "retry --force" in r.stdout
    r = gputui("retry", "--run-dir", make_job.run_dir, "shard-0", "--force")
    assert r.returncode == 0, r.stdout
    r = gputui("run", "--jobs", job)
    assert r.returncode == 0, r.stdout
    assert _starts(make_job) == Counter({"shard-0": 2, "shard-1": 1})
    assert out.exists()


# -- 8. tags alone ---------------------------------------------------------------------------------
def test_process_with_forged_tags_is_never_signalled(make_job, reaper, tmp_path):
    job = make_job(ids=10, num_workers=1, sleep=600, stop_grace_s=1)
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "sched.log")
    reaper.append(sched)
    pid = wait_for(lambda: make_job.running().get("shard-0"), what="the worker")
    forged = {k: v for k, v in psutil.Process(pid).environ().items() if k.startswith("GPUTUI_")}
    assert forged["GPUTUI_TASK_ID"] == "shard-0"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUTUI_")} | forged
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], env=env)
    reaper.append(decoy)
    for verb in ("pause", "resume", "kill"):
        assert gputui(verb, "--run-dir", make_job.run_dir, "shard-0").returncode == 0
    assert gone(pid)
    assert decoy.poll() is None and psutil.Process(decoy.pid).status() != psutil.STATUS_STOPPED
    assert sched.wait(30) == 1


# -- 9. two runs, one machine ----------------------------------------------------------------------
def test_two_runs_on_the_same_simulated_gpus_never_share_one(tmp_path):
    jobs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        factory = JobFactory(tmp_path / name)
        jobs.append((factory, factory(ids=24, num_workers=6, gpus_per_worker=1, max_parallel=2, sleep=0.4)))
    results = {}

    def run(i, job):
        results[i] = gputui("run", "--jobs", job, "--simulate", "shared:2")  # the machine's map, as real GPUs

    threads = [threading.Thread(target=run, args=(i, job)) for i, (_, job) in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.returncode == 0 for r in results.values()), [r.stdout for r in results.values()]
    spans = []  # (gpu, start, end, run)
    for run_index, (factory, _) in enumerate(jobs):
        started = {}
        for e in factory.events():
            if e["event"] == "start":
                started[e["task"]] = e
            elif e["event"] == "finish":
                s = started[e["task"]]
                spans.append((s["gpus"], s["t"], e["t"], run_index))
    assert len(spans) == 12
    for gpu in {s[0] for s in spans}:
        on_it = sorted(s for s in spans if s[0] == gpu)
        for (_, _, end, _), (_, start, _, _) in zip(on_it, on_it[1:], strict=False):
            assert start >= end, f"GPU {gpu} ran two workers at once: {on_it}"
    assert {s[3] for s in spans} == {0, 1}
