"""Local executor: the scheduler's side of the keeper and its waiters (see keeper.py, waiter.py).

The scheduler sends each launch straight to an idle waiter over that waiter's own channel, and every
waiter writes its records to one wake pipe the scheduler owns for its lifetime, so a dead keeper costs
nothing but a new one the next time a waiter must be forked. A waiter is idle again once its attempt
is cleared (`done`); one that dies shows as end-of-file on its channel (`lost`). Attempts on Ray go to the
run's Ray bridge instead, over one kept connection: it records them as a waiter would (ray_bridge.py),
and its end-of-file loses every attempt it held.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gputui.executors import ray_bridge
from gputui.executors.journal import exits_copy
from gputui.executors.ownership import TAG_ATTEMPT, TAG_SCHEDULER, TAG_TASK, ProcessRef

WAITER_FORK_TIMEOUT_S = 30.0
BRIDGE_TIMEOUT_S = 30.0  # a request the Ray bridge does not take within this long: it is stuck
_CLUSTER_CHOOSES = "CUDA_VISIBLE_DEVICES"  # on Ray's node; all but it and RAY_* goes along, as sbatch does


@dataclass(frozen=True)
class LaunchSpec:
    task_id: str
    number: int
    argv: Sequence[str]
    env: Mapping[str, str]  # the worker's own variables (tags, GPUs), on top of the executor's env
    log_path: Path
    grace: float = 10.0  # how long leftovers of the task get between SIGTERM and SIGKILL
    held: Sequence[int] = ()  # descriptors the task holds while any process of it lives (GPU locks)
    ray: Mapping | None = None  # its GPUs and signal file on Ray: the bridge holds it, no local worker


@dataclass(eq=False)
class WaiterHandle:
    channel: socket.socket
    ref: ProcessRef
    key: tuple[str, int] | None = field(default=None)  # the attempt it runs
    shared: bool = False  # the Ray bridge: holds many attempts at once, never idle


class LaunchFailed(OSError):
    """The request could not be handed to a waiter (it died, or no keeper could fork one) or to the bridge."""


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
        self.bridge: WaiterHandle | None = None  # the run's Ray bridge, attached

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

    def attach_bridge(self, sock: socket.socket) -> WaiterHandle:
        """Hand the run's Ray bridge (a connection to it) the journal, its copy of exits and our wake pipe,
        so it records the attempts we send it; kept as the waiter of every attempt on Ray."""
        journals = (self.journal, exits_copy(self.journal))
        fds = [os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666) for p in journals]
        try:
            sock.settimeout(BRIDGE_TIMEOUT_S)
            pid, start = ray_bridge.attach(sock, *fds, self.wake_w)
        except (OSError, ValueError, KeyError) as e:
            sock.close()
            raise LaunchFailed(f"the Ray bridge would not take this run's records: {e}") from None
        finally:
            for fd in fds:
                os.close(fd)
        self.bridge = WaiterHandle(sock, ProcessRef(pid, start), shared=True)
        return self.bridge

    def launch(self, waiter: WaiterHandle, spec: LaunchSpec) -> None:
        if spec.ray is not None:
            self._send_to_bridge(waiter, spec)
            return
        argv = list(spec.argv)
        argv[0] = self._resolve(argv[0])
        request = {
            "task": spec.task_id,
            "n": spec.number,
            "argv": argv,
            "env": dict(spec.env),
            "log": str(spec.log_path),
            "grace": spec.grace,
        }
        try:
            socket.send_fds(waiter.channel, [json.dumps(request).encode()], list(spec.held))
        except OSError as e:
            waiter.channel.close()
            raise LaunchFailed(f"its waiter (pid {waiter.ref.pid}) is gone: {e}") from None
        waiter.key = (spec.task_id, spec.number)
        self.busy[waiter.key] = waiter

    def _send_to_bridge(self, bridge: WaiterHandle, spec: LaunchSpec) -> None:
        """One attempt for the bridge to run on Ray, with the environment a local worker would get (the
        node's PATH finds the program; Ray chooses its GPUs)."""
        env = self.env | dict(spec.env)
        env = {k: v for k, v in env.items() if k != _CLUSTER_CHOOSES and not k.startswith("RAY_")}
        request = {
            "op": "run",
            "task": spec.task_id,
            "n": spec.number,
            "argv": list(spec.argv),
            "env": env,
            "log": str(spec.log_path),  # the runner on the node creates it
            "cwd": str(self.cwd),
            "gpus": float(spec.ray["gpus"]),
            "grace": spec.grace,
            "signals": spec.ray["signals"],
        }
        try:
            bridge.channel.sendall(json.dumps(request).encode() + b"\n")
        except OSError as e:
            self._drop(bridge)
            raise LaunchFailed(f"the Ray bridge (pid {bridge.ref.pid}) is gone: {e}") from None
        self.busy[(spec.task_id, spec.number)] = bridge

    def give_back(self, waiter: WaiterHandle | None) -> None:
        """A waiter taken for a launch that did not happen."""
        if waiter is not None and not waiter.shared:
            self.idle.append(waiter)

    def done(self, key: tuple[str, int]) -> None:
        """The attempt is cleared: its waiter takes the next request (it flushes its records first)."""
        waiter = self.busy.pop(key, None)
        if waiter is not None and not waiter.shared:
            waiter.key = None
            self.idle.append(waiter)

    def lost(self) -> list[tuple[str, int]]:
        """Attempts whose waiter (or bridge) died, its channel at end-of-file: nobody will record their end.
        Neither sends anything unasked, so whatever is readable is that end."""
        dead = {w for w in {*self.busy.values(), *([self.bridge] if self.bridge else [])} if _ended(w.channel)}
        gone = [key for key, waiter in self.busy.items() if waiter in dead]
        for key in gone:
            del self.busy[key]
        for waiter in dead:
            self._drop(waiter)
        return gone

    def _drop(self, waiter: WaiterHandle) -> None:
        waiter.channel.close()
        if waiter is self.bridge:
            self.bridge = None

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
        for waiter in [*self.idle, *self.busy.values(), *([self.bridge] if self.bridge else [])]:
            waiter.channel.close()  # once or twice: the bridge's is shared
        self.idle, self.busy, self.bridge = [], {}, None
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


def _ended(channel: socket.socket) -> bool:
    try:
        poller = select.poll()  # not select(): a descriptor numbered past 1023 is beyond it (512 Slurm stand-ins)
        poller.register(channel, select.POLLIN)
        if not poller.poll(0):  # (a socket with a timeout would wait that long in recv)
            return False
        return not channel.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    except (OSError, ValueError):
        return True
