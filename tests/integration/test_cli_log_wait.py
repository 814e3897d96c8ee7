"""`gputui log [-f]` and `gputui wait` on real runs: a worker prints lines and waits at a gate (a file the test
creates) before it prints more and ends, so what runs when is decided by the test, never by a clock."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

from gputui import api
from tests.conftest import gputui, gputui_bg, wait_for

WORKER = """
import os, pathlib, sys, time
task, attempt = os.environ["GPUTUI_TASK_ID"], os.environ["GPUTUI_ATTEMPT"]
gates, failing = pathlib.Path(sys.argv[1]), sys.argv[2].split(",")
print(f"{task} attempt {attempt} line 1", flush=True)
print("evil \\x1b]0;pwned\\x07 title \\x1b[2J clear \\x1b[31mred\\x1b[0m", flush=True)
while not (gates / f"{task}.{attempt}").exists():
    time.sleep(0.02)
print(f"{task} attempt {attempt} line 2", flush=True)
sys.exit(3 if f"{task}:{attempt}" in failing else 0)
"""


def gated_job(tmp_path: Path, *, shards: int, fail: str = "", max_attempts: int = 1, max_parallel: int = 2):
    (tmp_path / "gates").mkdir()
    (tmp_path / "worker.py").write_text(WORKER)
    (tmp_path / "ids.csv").write_text("data_id\n" + "".join(f"{i}\n" for i in range(shards)))
    job = tmp_path / "job.toml"
    job.write_text(f"""
[job]
name = "gated"
command = ["{sys.executable}", "{tmp_path / "worker.py"}", "{tmp_path / "gates"}", "{fail}"]
[shards]
input = "ids.csv"
shard_size = 1
[resources]
gpus_per_worker = 0
max_parallel = {max_parallel}
[retry]
max_attempts = {max_attempts}
backoff_s = 0.05
""")
    return job


def open_gate(tmp_path: Path, task: str, attempt: int) -> None:
    (tmp_path / "gates" / f"{task}.{attempt}").touch()


def start(tmp_path: Path, job: Path, reaper) -> tuple[subprocess.Popen, Path]:
    sched = gputui_bg("run", "--jobs", job, "--quiet", log=tmp_path / "sched.log")
    reaper.append(sched)
    return sched, tmp_path / "runs" / "gated"


def printed(run_dir: Path, task: str, attempt: int, text: str) -> bool:
    log = run_dir / "logs" / f"{task}.attempt{attempt}.log"
    return log.exists() and text in log.read_text()


def gputui_popen(*args) -> subprocess.Popen:
    command = [sys.executable, "-m", "gputui", *map(str, args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


_held: dict[int, bytes] = {}  # what was read of a pipe past the lines returned


def next_line(proc: subprocess.Popen, stream: str = "stdout") -> str:
    """The next line the process writes, as it writes it (read from the pipe itself: no buffer hides it)."""
    fd = getattr(proc, stream).fileno()
    while b"\n" not in _held.get(fd, b""):
        ready, _, _ = select.select([fd], [], [], 60)  # a guard against hanging, not a timing check
        assert ready, "no line within a minute"
        chunk = os.read(fd, 4096)
        assert chunk, f"{stream} closed: {_held.get(fd, b'')!r}"
        _held[fd] = _held.get(fd, b"") + chunk
    line, _held[fd] = _held[fd].split(b"\n", 1)
    return line.decode() + "\n"


def rest(proc: subprocess.Popen) -> tuple[str, str]:
    """What the process writes until it exits, after the lines `next_line` returned."""
    held = [_held.pop(getattr(proc, s).fileno(), b"") for s in ("stdout", "stderr")]
    out, err = proc.communicate(timeout=60)
    return (held[0] + out).decode(), (held[1] + err).decode()


def files_of(run_dir: Path) -> dict[str, tuple[int, int]]:
    """Every file of the run but SQLite's own -wal/-shm beside state.db (a reader may add them, as `gputui status`
    does: the database itself is never written)."""
    found = (f for f in run_dir.rglob("*") if f.is_file() and not f.name.endswith(("-wal", "-shm")))
    return {str(f): (f.stat().st_size, f.stat().st_mtime_ns) for f in found}


def test_log_prints_the_lines_and_follows_the_task_through_a_retry(tmp_path, reaper):
    job = gated_job(tmp_path, shards=1, fail="shard-0:1", max_attempts=2)
    sched, run_dir = start(tmp_path, job, reaper)
    wait_for(lambda: printed(run_dir, "shard-0", 1, "line 1"), what="attempt 1's first line")

    r = gputui("log", "--run-dir", run_dir, "shard-0")
    assert r.returncode == 0
    assert r.stdout.splitlines() == ["shard-0 attempt 1 line 1", "evil  title  clear red"], r.stdout

    follow = gputui_popen("log", "--run-dir", run_dir, "shard-0", "-f")
    assert next_line(follow) == "shard-0 attempt 1 line 1\n"  # while the task runs
    assert next_line(follow) == "evil  title  clear red\n"
    open_gate(tmp_path, "shard-0", 1)  # attempt 1 ends, exit 3; the task is retried
    assert next_line(follow) == "shard-0 attempt 1 line 2\n"
    assert next_line(follow) == "shard-0 attempt 2 line 1\n"
    open_gate(tmp_path, "shard-0", 2)
    out, err = rest(follow)
    assert follow.returncode == 0, err
    assert out == "evil  title  clear red\nshard-0 attempt 2 line 2\n"
    assert "shard-0 attempt 1 ended (failed, exit 3); following attempt 2:" in err
    assert "shard-0 done" in err
    assert sched.wait(60) == 0

    first = gputui("log", "--run-dir", run_dir, "shard-0", "--attempt", "1")
    assert first.returncode == 0 and "attempt 1 line 2" in first.stdout and "attempt 2" not in first.stdout
    latest = gputui("log", "--run-dir", run_dir, "shard-0")
    assert "attempt 2 line 2" in latest.stdout and "attempt 1" not in latest.stdout
    r = gputui("log", "--run-dir", run_dir, "shard-0", "--attempt", "3")
    assert r.returncode == 2 and "no attempt 3 (it has attempts 1 to 2)" in r.stderr
    # a finished run: -f prints the log and ends at once with the task's outcome
    assert gputui("log", "--run-dir", run_dir, "shard-0", "-f").returncode == 0
    with api.open_run(run_dir) as run:
        assert "attempt 1 line 2" in run.log_path("shard-0", 1).read_text()
        assert run.log_path("shard-0") == run.log_path("shard-0", 2) != run.log_path("shard-0", 1)
        assert run.log_path("shard-0", 3) is None


def test_a_workers_escape_sequences_never_reach_the_terminal(tmp_path, reaper):
    job = gated_job(tmp_path, shards=1)
    open_gate(tmp_path, "shard-0", 1)
    assert gputui("run", "--jobs", job, "--quiet").returncode == 0
    run_dir = tmp_path / "runs" / "gated"
    assert "\x1b]0;pwned" in (run_dir / "logs" / "shard-0.attempt1.log").read_text()  # the raw log keeps them
    before = files_of(run_dir)
    for follow in ((), ("-f",)):
        r = gputui("log", "--run-dir", run_dir, "shard-0", *follow)
        assert r.returncode == 0 and "\x1b" not in r.stdout + r.stderr and "\x07" not in r.stdout
    assert gputui("wait", "--run-dir", run_dir).returncode == 0
    assert files_of(run_dir) == before  # read only: nothing written, nothing created
    # on a terminal the colours stay, the title and the clear never do
    (event,) = [e for e in api.follow_log(run_dir, "shard-0") if "evil" in e.text]
    shown = event.shown(colour=True)
    assert "\x1b[31m" in shown and "\x1b]" not in shown and "\x1b[2J" not in shown and "\x07" not in shown


def test_wait_returns_when_tasks_end_with_status_exit_codes(tmp_path, reaper):
    job = gated_job(tmp_path, shards=3, fail="shard-1:1", max_parallel=2)
    sched, run_dir = start(tmp_path, job, reaper)
    wait_for(lambda: printed(run_dir, "shard-1", 1, "line 1"), what="shard-1 running")

    r = gputui("wait", "--run-dir", run_dir, "--timeout", "0.5")
    assert r.returncode == 124 and "timed out" in r.stderr and "3 task(s) unfinished" in r.stderr
    r = gputui("log", "--run-dir", run_dir, "shard-2")  # waits for a free slot
    assert r.returncode == 1 and "shard-2 has not started yet (pending)" in r.stderr
    r = gputui("log", "--run-dir", run_dir, "shard-9")
    assert r.returncode == 2 and "no task 'shard-9'" in r.stderr and "3 task(s)" in r.stderr
    r = gputui("wait", "--run-dir", run_dir, "shard-9")
    assert r.returncode == 2 and "no task 'shard-9'" in r.stderr

    pending = gputui_popen("log", "--run-dir", run_dir, "shard-2", "-f")  # -f waits for its first attempt
    assert next_line(pending, "stderr") == "gputui: shard-2 is pending: waiting for its first attempt\n"
    one = gputui_popen("wait", "--run-dir", run_dir, "shard-0")
    every = gputui_popen("wait", "--run-dir", run_dir)
    said = next_line(every, "stderr")
    assert said == "gputui wait: waiting for 3 of 3 task(s): 0/3 done, 1 pending, 2 running\n", said
    open_gate(tmp_path, "shard-0", 1)
    out, err = rest(one)
    assert one.returncode == 0 and out.splitlines()[0] == "shard-0 done", (out, err)
    assert next_line(every) == "shard-0 done\n"  # as it ends, while the others run
    for task in ("shard-1", "shard-2"):
        open_gate(tmp_path, task, 1)
    out, err = rest(every)
    assert every.returncode == 1
    shard_1, shard_2 = sorted(out.splitlines())
    assert shard_1.startswith("shard-1 failed (exit 3)") and shard_2 == "shard-2 done" and "\x1b" not in out, out
    assert "2/3 done, 1 failed" in err
    out, err = rest(pending)
    assert pending.returncode == 0 and out.endswith("shard-2 attempt 1 line 2\n"), (out, err)
    assert "shard-2 attempt 1 started:" in err and "shard-2 done" in err
    assert sched.wait(60) == 1
    # once ended, at once: the same exit status as `gputui status`
    assert gputui("wait", "--run-dir", run_dir, "--quiet").returncode == 1
    assert gputui("wait", "--run-dir", run_dir, "shard-0", "shard-2").returncode == 0
    assert api.wait(run_dir, ["shard-1"]).code == 1


def test_a_run_whose_scheduler_died_is_not_waited_for_forever(tmp_path, reaper):
    job = gated_job(tmp_path, shards=1)
    sched, run_dir = start(tmp_path, job, reaper)
    wait_for(lambda: printed(run_dir, "shard-0", 1, "line 1"), what="shard-0 running")
    follow = gputui_popen("log", "--run-dir", run_dir, "shard-0", "-f")
    assert next_line(follow) == "shard-0 attempt 1 line 1\n"
    follow.send_signal(signal.SIGINT)  # Ctrl-C
    assert follow.wait(60) == 130
    rest(follow)
    sched.send_signal(signal.SIGKILL)
    sched.wait(60)
    r = gputui("wait", "--run-dir", run_dir)
    assert r.returncode == 1 and "the run's scheduler is not running" in r.stderr and "0/1 done" in r.stderr
    r = gputui("log", "--run-dir", run_dir, "shard-0", "-f")
    assert r.returncode == 1 and "shard-0 attempt 1 line 1" in r.stdout
    assert "the run's scheduler is not running, so it will not end" in r.stderr
