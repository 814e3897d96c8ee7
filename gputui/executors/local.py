"""Local executor: the scheduler's side of the keeper and its waiters (see keeper.py, waiter.py)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gputui.ownership import TAG_ATTEMPT, TAG_SCHEDULER, TAG_TASK, ProcessRef, ref_of


@dataclass(frozen=True)
class LaunchSpec:
    task_id: str
    number: int
    argv: Sequence[str]
    env: Mapping[str, str]  # the worker's own variables (tags, GPUs), on top of the executor's env
    log_path: Path
    grace: float = 10.0  # how long leftovers of the task get between SIGTERM and SIGKILL
    held: Sequence[int] = ()  # descriptors the task holds while any process of it lives (GPU locks)


class KeeperGone(OSError):
    """The keeper died with requests it may not have passed on."""


class LocalExecutor:
    """Starts a keeper on first use; `launch` asks it for a worker, `events` says what waiters saw.

    Every waiter writes to one wake pipe the scheduler owns for its lifetime, so keepers can die and be
    replaced without a record being lost."""

    def __init__(self, cwd: Path, env: Mapping[str, str], keeper_log: Path, journal: Path, scheduler_id: str):
        self.cwd = cwd
        self.env = {k: v for k, v in env.items() if k not in (TAG_SCHEDULER, TAG_TASK, TAG_ATTEMPT)}
        self.keeper_log = keeper_log
        self.journal = journal
        self.scheduler_id = scheduler_id
        self.keeper: subprocess.Popen | None = None
        self.requests: socket.socket | None = None
        self.wake_r, self.wake_w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self.wake_r, False)
        self._buffer = b""
        self._which: dict[str, str] = {}
        self._keeper_ref: ProcessRef | None = None

    def keeper_ref(self) -> ProcessRef | None:
        """The keeper that will pass on the next launch (started if need be)."""
        self.start()
        return self._keeper_ref

    def fileno(self) -> int:
        return self.wake_r

    def start(self) -> None:
        """Start the keeper now (its start-up overlaps the scheduler's), or again if it died."""
        if self.keeper is None or self.keeper.poll() is not None:
            self._start_keeper()

    def keeper_died(self) -> bool:
        """True once per keeper death: requests sent to it may never have reached a waiter."""
        if self.keeper is None or self.keeper.poll() is None:
            return False
        self._close_requests()
        self.keeper = None
        return True

    def launch(self, spec: LaunchSpec) -> None:
        self.start()
        argv = [self._resolve(spec.argv[0]), *spec.argv[1:]]
        request = {
            "task": spec.task_id,
            "n": spec.number,
            "argv": argv,
            "env": dict(spec.env),
            "log": str(spec.log_path),
            "grace": spec.grace,
        }
        try:
            socket.send_fds(self.requests, [json.dumps(request).encode()], list(spec.held))
        except OSError as e:
            self._close_requests()
            self.keeper = None  # the next launch starts a new one
            raise KeeperGone(f"the keeper process died: {e}") from None

    def events(self) -> list[str]:
        """The records waiters wrote since the last call (journal lines, see journal.py)."""
        try:
            data = os.read(self.wake_r, 1 << 16)
        except BlockingIOError:
            return []
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        return [text.decode("utf-8", "replace") for text in lines]

    def close(self) -> None:
        """Let the keeper go: busy waiters finish their attempts, record them, and exit."""
        self._close_requests()
        self.keeper = None
        for fd in (self.wake_r, self.wake_w):
            os.close(fd)

    def _close_requests(self) -> None:
        if self.requests is not None:
            self.requests.close()
            self.requests = None

    def _resolve(self, program: str) -> str:
        """Look a program up on PATH once (posix_spawnp would try every PATH entry for every task)."""
        if os.sep in program:
            return program
        if program not in self._which:
            self._which[program] = shutil.which(program, path=self.env.get("PATH")) or program
        return self._which[program]

    def _start_keeper(self) -> None:
        self._close_requests()
        self.keeper_log.parent.mkdir(parents=True, exist_ok=True)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with open(self.keeper_log, "ab") as err, theirs:
            self.keeper = subprocess.Popen(
                [sys.executable, "-P", "-m", "gputui.executors.keeper", str(self.journal), self.scheduler_id],
                cwd=self.cwd,
                env=self.env,
                stdin=theirs.fileno(),
                stdout=self.wake_w,
                stderr=err,
                start_new_session=True,
            )
        self.requests = ours
        self._keeper_ref = ref_of(self.keeper.pid)
