"""A keeper started before its run is known, so its Python start-up (about a tenth of a second) overlaps the
scheduler's own instead of delaying the run's first launch.

`gputui run` starts one as its first step; the local executor takes it when it first needs a keeper and tells it
the run (journal, scheduler id, working directory, environment, wake pipe and keeper.log) in one message on its
request socket. Until then the spare holds nothing of any run; a spare never taken (a refused run, a job for Ray)
reads the end of its socket when this process exits, and exits too. Only the CLI starts one: a script calling
gputui.api starts its keeper when its run needs it, as before."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import BinaryIO

_spare: tuple[subprocess.Popen, socket.socket] | None = None


def start_keeper() -> None:
    """Start the spare keeper (one per process; a second call does nothing)."""
    global _spare
    if _spare is not None:
        return
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        with theirs:
            proc = subprocess.Popen(
                [sys.executable, "-P", "-m", "gputui.executors.keeper", "--spare"],
                stdin=theirs.fileno(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
    except OSError:
        ours.close()
        return
    _spare = proc, ours


def take(journal: str, scheduler_id: str, cwd: str, env: dict[str, str], wake: int, log: BinaryIO):
    """The spare keeper, told its run (`wake`: the scheduler's wake pipe, its stdout; `log`: keeper.log, its
    stderr), with its request socket; None where there is none or it is gone."""
    global _spare
    if _spare is None:
        return None
    (proc, requests), _spare = _spare, None
    run = {"journal": journal, "scheduler_id": scheduler_id, "cwd": cwd, "env": env}
    try:
        if proc.poll() is not None:
            raise OSError("the spare keeper has exited")
        socket.send_fds(requests, [json.dumps(run).encode()], [wake, log.fileno()])
    except OSError:
        requests.close()
        return None
    return proc, requests


def await_run(requests: socket.socket) -> tuple[str, str]:
    """In the spare keeper: wait for its run, and become that run's keeper (its directory, environment, wake
    pipe on stdout, keeper.log on stderr); returns the journal's path and the scheduler id. Exits if the process
    that started it is gone without telling it one."""
    msg, fds, _, _ = socket.recv_fds(requests, 1 << 20, 2)
    if not msg or len(fds) != 2:
        os._exit(0)
    run = json.loads(msg)
    os.chdir(run["cwd"])
    os.environ.clear()
    os.environ.update(run["env"])
    for fd, into in zip(fds, (1, 2), strict=True):
        os.dup2(fd, into)
        os.close(fd)
    return run["journal"], run["scheduler_id"]
