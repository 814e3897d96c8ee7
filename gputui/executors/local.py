"""Local executor: a forked supervisor per attempt that outlives the scheduler.

    scheduler ──fork──► supervisor (own session, no inherited fds)
                            └─fork+exec──► worker (own process group; output to the attempt's log)

The supervisor writes `pid.json` (worker pid and start time) as soon as the worker exists and
`exit.json` (its exit status) when it ends, so a scheduler that crashed, was killed or lost its
terminal learns on restart how every worker ended, without re-running it. Both files are renamed
into place (atomic against crashes) but not fsynced: they only matter while processes live, and
after a power loss every worker is gone and is retried anyway.

Forking (rather than starting a Python supervisor) keeps the cost per task near that of
`xargs -P`. It is safe because the scheduler process is single-threaded.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from gputui.atomic import atomic_write_json


@dataclass(frozen=True)
class LaunchSpec:
    argv: Sequence[str]
    cwd: Path
    env: Mapping[str, str]  # the worker's whole environment, tags included
    log_path: Path
    pid_path: Path
    exit_path: Path


def launch(spec: LaunchSpec) -> int:
    """Start the supervisor; returns its pid (a child of ours until it ends: reap it)."""
    spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    spec.pid_path.parent.mkdir(parents=True, exist_ok=True)
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        _supervise(spec)
        code = 0
    except BaseException:  # never let the child return into the scheduler's code
        code = 1
    finally:
        os._exit(code)


def _supervise(spec: LaunchSpec) -> None:
    os.setsid()  # a lost terminal or a Ctrl-C aimed at the scheduler never reaches the worker
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, _max_fd())  # drop the scheduler's lock, database and pipes
    log = os.open(spec.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    argv = list(spec.argv)
    worker = os.fork()
    if worker == 0:
        try:
            os.setpgid(0, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.close(log)
            os.chdir(spec.cwd)
            os.execvpe(argv[0], argv, dict(spec.env))
        except BaseException as e:
            reason = getattr(e, "strerror", None) or str(e)
            os.write(2, f"gputui: cannot run {argv[0]!r} in {spec.cwd}: {reason}\n".encode())
        os._exit(127)
    os.close(log)
    try:
        ctime = psutil.Process(worker).create_time()
    except psutil.Error:
        ctime = None
    atomic_write_json(
        spec.pid_path,
        {"supervisor_pid": os.getpid(), "supervisor_ctime": _own_ctime(), "worker_pid": worker,
         "worker_ctime": ctime, "started_at": time.time()},
        fsync=False,
    )
    while True:
        try:
            _, status = os.waitpid(worker, 0)  # no WUNTRACED: a paused worker is not an ended one
            break
        except InterruptedError:
            continue
    atomic_write_json(
        spec.exit_path, {"exit_code": os.waitstatus_to_exitcode(status), "ended_at": time.time()}, fsync=False
    )


def _own_ctime() -> float | None:
    try:
        return psutil.Process().create_time()
    except psutil.Error:
        return None


def _max_fd() -> int:
    try:
        return os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        return 4096
