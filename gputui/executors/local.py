"""Local executor: the scheduler's side of the keeper and its waiters (see keeper.py, waiter.py).

The scheduler sends each launch straight to an idle waiter over that waiter's own channel, and every
waiter writes its records to one wake pipe the scheduler owns for its lifetime, so a dead keeper costs
nothing but a new one the next time a waiter must be forked. A waiter is idle again once its attempt
is cleared (`done`); one that dies shows as end-of-file on its channel (`lost`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gputui.executors.ownership import TAG_ATTEMPT, TAG_SCHEDULER, TAG_TASK, ProcessRef

WAITER_FORK_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class LaunchSpec:
    task_id: str
    number: int
    argv: Sequence[str]
    env: Mapping[str, str]  # the worker's own variables (tags, GPUs), on top of the executor's env
    log_path: Path
    grace: float = 10.0  # how long leftovers of the task get between SIGTERM and SIGKILL
    held: Sequence[int] = ()  # descriptors the task holds while any process of it lives (GPU locks)
    ray: Mapping | None = None  # where on Ray it runs (ray_bridge): its waiter holds it, no local worker


@dataclass(eq=False)
class WaiterHandle:
    channel: socket.socket
    ref: ProcessRef
    key: tuple[str, int] | None = field(default=None)  # the attempt it runs


class LaunchFailed(OSError):
    """The request could not be handed to a waiter (it died, or no keeper could fork one)."""


class LocalExecutor:
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
        self.idle: list[WaiterHandle] = []
        self.busy: dict[tuple[str, int], WaiterHandle] = {}
        self._buffer = b""
        self._which: dict[str, str] = {}
        self._asked = 0  # waiters asked of the keeper, not yet received

    def fileno(self) -> int:
        return self.wake_r

    def start(self, prefork: int = 0) -> None:
        """Start the keeper now, or again if it died; `prefork` waiters are forked meanwhile, so their
        start-up overlaps the scheduler's."""
        if self.keeper is None or self.keeper.poll() is not None:
            self._start_keeper()
        for _ in range(prefork):
            self.requests.send(b"waiter")
            self._asked += 1

    def waiter(self) -> WaiterHandle:
        """An idle waiter, forked by the keeper if none is; its pid is recorded before it is used."""
        if self.idle:
            return self.idle.pop()
        for tries in (1, 2):  # a keeper found dead is replaced once
            self.start()
            try:
                if self._asked:
                    self._asked -= 1
                else:
                    self.requests.send(b"waiter")
                msg, fds, _, _ = socket.recv_fds(self.requests, 64, 1)
                _, pid, start = msg.decode().split()
                channel = socket.socket(fileno=fds[0])
                channel.setblocking(False)
                return WaiterHandle(channel, ProcessRef(int(pid), int(start)))
            except (OSError, ValueError, IndexError) as e:
                self._close_requests()
                self.keeper = None
                if tries == 2:
                    raise LaunchFailed(f"no keeper could start a waiter: {e}") from None
        raise AssertionError("unreachable")

    def launch(self, waiter: WaiterHandle, spec: LaunchSpec) -> None:
        argv = list(spec.argv)
        if spec.ray is None:  # on Ray, the node's PATH finds it
            argv[0] = self._resolve(argv[0])
        request = {
            "task": spec.task_id,
            "n": spec.number,
            "argv": argv,
            "env": dict(spec.env),
            "log": str(spec.log_path),
            "grace": spec.grace,
        }
        if spec.ray is not None:
            request["ray"] = dict(spec.ray)
        try:
            socket.send_fds(waiter.channel, [json.dumps(request).encode()], list(spec.held))
        except OSError as e:
            waiter.channel.close()
            raise LaunchFailed(f"its waiter (pid {waiter.ref.pid}) is gone: {e}") from None
        waiter.key = (spec.task_id, spec.number)
        self.busy[waiter.key] = waiter

    def give_back(self, waiter: WaiterHandle | None) -> None:
        """A waiter taken for a launch that did not happen."""
        if waiter is not None:
            self.idle.append(waiter)

    def done(self, key: tuple[str, int]) -> None:
        """The attempt is cleared: its waiter takes the next request (it flushes its records first)."""
        waiter = self.busy.pop(key, None)
        if waiter is not None:
            waiter.key = None
            self.idle.append(waiter)

    def lost(self) -> list[tuple[str, int]]:
        """Attempts whose waiter died (its channel reached end-of-file): nobody will record their end."""
        gone = []
        for key, waiter in list(self.busy.items()):
            try:
                if waiter.channel.recv(1):
                    continue
            except BlockingIOError:
                continue
            except OSError:
                pass
            waiter.channel.close()
            del self.busy[key]
            gone.append(key)
        return gone

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
        """Let everything go: idle waiters exit at once, busy ones after recording their attempt."""
        for waiter in [*self.idle, *self.busy.values()]:
            waiter.channel.close()
        self.idle, self.busy = [], {}
        self._close_requests()
        self.keeper = None
        for fd in (self.wake_r, self.wake_w):
            os.close(fd)

    def _close_requests(self) -> None:
        self._asked = 0
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
        ours.settimeout(WAITER_FORK_TIMEOUT_S)
        self.requests = ours
