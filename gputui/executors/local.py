"""Local executor: the scheduler's side of the keeper and its waiters (see keeper.py, waiter.py).

The scheduler sends each launch straight to an idle waiter over that waiter's own channel, and every
waiter writes its records to one wake pipe the scheduler owns for its lifetime, so a dead keeper costs
nothing but a new one the next time a waiter must be forked. A waiter is idle again once its attempt
is cleared (`done`); one that dies shows as end-of-file on its channel (`lost`). The wake pipe and the
channels are `AttemptChannels`, shared with the Ray executor, whose bridge writes to the same pipe.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from gputui.executors import keeper_spare, ownership
from gputui.executors.base import Capacity, Key, LaunchFailed, LaunchSpec, RunContext, Say, T, WaiterHandle
from gputui.executors.ownership import TAG_ATTEMPT, TAG_SCHEDULER, TAG_TASK, ProcessRef

WAITER_FORK_TIMEOUT_S = 30.0
LOST_LOCALLY = "its waiter was killed before recording it"
SIGNALS = {"pause": signal.SIGSTOP, "resume": signal.SIGCONT, "terminate": signal.SIGTERM, "kill": signal.SIGKILL}


class AttemptChannels:
    """Where the records of every attempt come back: one wake pipe the scheduler owns (waiters, or the
    bridge, write the journal's lines there too), and the channel of whatever holds each busy attempt."""

    def __init__(self, run: RunContext):
        self.run = run
        self.env: dict[str, str] = {}
        self.wake_r, self.wake_w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(self.wake_r, False)
        self.busy: dict[Key, WaiterHandle] = {}
        self._buffer = b""

    def join(self, env: Mapping[str, str]) -> Capacity | None:
        """Take the run's environment (without another run's tags); a cluster's executor also joins it."""
        self.env = {k: v for k, v in env.items() if k not in (TAG_SCHEDULER, TAG_TASK, TAG_ATTEMPT)}
        return None

    def fileno(self) -> int:
        return self.wake_r

    def give_back(self, waiter: WaiterHandle | None) -> None:
        """A waiter taken for a launch that did not happen."""

    def done(self, key: Key) -> None:
        """The attempt is cleared: its waiter takes the next request (it flushes its records first)."""
        self.busy.pop(key, None)

    def lost(self) -> list[Key]:
        """Attempts whose waiter (or bridge) died, its channel at end-of-file: nobody will record their end.
        Neither sends anything unasked, so whatever is readable is that end."""
        dead = {w for w in {*self.busy.values(), *self._shared()} if _ended(w.channel)}
        gone = [key for key, waiter in self.busy.items() if waiter in dead]
        for key in gone:
            del self.busy[key]
        for waiter in dead:
            self._drop(waiter)
        return gone

    def _shared(self) -> list[WaiterHandle]:
        return []

    def _drop(self, waiter: WaiterHandle) -> None:
        waiter.channel.close()

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
        """Let everything go: busy waiters exit after recording their attempt."""
        for waiter in [*self.busy.values(), *self._shared()]:
            waiter.channel.close()  # once or twice: the bridge's is shared
        self.busy = {}
        for fd in (self.wake_r, self.wake_w):
            os.close(fd)

    # -- what a backend that needs none of it does -----------------------------------------------------
    def ready(self, now: float, say: Say) -> bool:
        return True

    def idle_slots(self) -> list[WaiterHandle]:
        return []

    def take_slot(self, waiter: WaiterHandle) -> None:
        pass

    def close_slot(self, waiter: WaiterHandle) -> None:
        pass

    def submit(self, launches: list[tuple[LaunchSpec, T]], say: Say) -> list[tuple[LaunchSpec, T]]:
        return launches

    def queues_after(self, task_id: str) -> bool:
        return False

    def requeue_reason(self, exit_code: int | None) -> str | None:
        return None

    def after_end(self, task_id: str, number: int, exit_code: int | None) -> str | None:
        return None

    def stopping_line(self, running: int, grace_s: float) -> str:
        return (
            f"stopping {running} running task(s) (SIGTERM, then SIGKILL after {grace_s:g}s); "
            "they will run again on restart"
        )

    def waiting_line(self, keys: list[Key], leave: str) -> str:
        return ""

    def left_line(self, running: int) -> str:
        return ""

    def abandon(self) -> None:
        pass

    def leave(self) -> None:
        pass


class LocalExecutor(AttemptChannels):
    kind = "local"
    places_gpus = True
    stop_waits_for_backend = False
    lost_wording = LOST_LOCALLY

    def __init__(self, run: RunContext):
        super().__init__(run)
        self.recorded = RecordedLocal()
        self.keeper: subprocess.Popen | None = None
        self.requests: socket.socket | None = None
        self.idle: list[WaiterHandle] = []
        self.resting: list[WaiterHandle] = []  # resident workers' waiters between tasks (resident_slot.py)
        self.slots_ending: list[WaiterHandle] = []  # slots told to end: their workers are being stopped
        self._slot_grace = 10.0  # how long a slot's worker may take to stop (stop_grace_s), twice
        self._which: dict[str, str] = {}
        self._asked = 0  # waiters asked of the keeper, not yet received

    @classmethod
    def open(cls, spec, run: RunContext) -> LocalExecutor:
        return cls(run)

    def slots(self, capacity: Capacity, gpus_per_worker: int) -> int:
        """Never asked (no capacity here: the scheduler sizes a local run from its GPUs); as for CPU tasks."""
        return os.cpu_count() or 1

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
        argv[0] = self._resolve(argv[0])
        request = {
            "task": spec.task_id,
            "n": spec.number,
            "argv": argv,
            "env": dict(spec.env),
            "log": str(spec.log_path),
            "grace": spec.grace,
        }
        if spec.resident is not None:
            request["resident"] = dict(spec.resident)
            self._slot_grace = spec.grace
        try:
            socket.send_fds(waiter.channel, [json.dumps(request).encode()], list(spec.held))
        except OSError as e:
            waiter.channel.close()
            # A resident worker's slot holds its GPUs: another waiter cannot take its task without them.
            retry = bool(spec.held) or not waiter.slot
            raise LaunchFailed(f"its waiter (pid {waiter.ref.pid}) is gone: {e}", retry=retry) from None
        waiter.key = (spec.task_id, spec.number)
        self.busy[waiter.key] = waiter

    def give_back(self, waiter: WaiterHandle | None) -> None:
        if waiter is not None and not waiter.shared:
            (self.idle if waiter.slot is None else self.resting).append(waiter)

    def done(self, key: Key) -> None:
        waiter = self.busy.pop(key, None)
        if waiter is not None and not waiter.shared:
            waiter.key = None
            (self.idle if waiter.slot is None else self.resting).append(waiter)

    def idle_slots(self) -> list[WaiterHandle]:
        """Resident workers' waiters between tasks (one found dead is dropped: its GPUs went with it)."""
        for waiter in [w for w in self.resting if _ended(w.channel)]:
            self.resting.remove(waiter)
            waiter.channel.close()
        return list(self.resting)

    def take_slot(self, waiter: WaiterHandle) -> None:
        """This resident worker's waiter is given a task (given back if the turn is not committed)."""
        self.resting.remove(waiter)

    def close_slot(self, waiter: WaiterHandle) -> None:
        """No more tasks for this resident worker: its waiter stops it and exits (close() waits for that)."""
        if waiter in self.resting:
            self.resting.remove(waiter)
            waiter.channel.close()
            self.slots_ending.append(waiter)

    def close(self) -> None:
        """Let everything go: idle waiters exit at once, busy ones after recording their attempt. Idle resident
        workers are stopped, and waited for (bounded), so their GPUs are free when the run returns."""
        for waiter in [*self.idle, *self.resting]:
            waiter.channel.close()
        self.slots_ending += self.resting
        self.idle, self.resting = [], []
        self._close_requests()
        self.keeper = None
        super().close()
        deadline = time.monotonic() + 2 * self._slot_grace + 5.0
        while any(ownership.alive(w.ref) for w in self.slots_ending) and time.monotonic() < deadline:
            time.sleep(0.02)
        self.slots_ending = []

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
        run = self.run
        run.keeper_log.parent.mkdir(parents=True, exist_ok=True)
        with open(run.keeper_log, "ab") as err:
            spare = keeper_spare.take(str(run.journal), run.scheduler_id, str(run.cwd), self.env, self.wake_w, err)
        if spare is not None:  # started with `gputui run`: its start-up is behind it
            self.keeper, ours = spare
            ours.settimeout(WAITER_FORK_TIMEOUT_S)
            self.requests = ours
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with open(run.keeper_log, "ab") as err, theirs:
            self.keeper = subprocess.Popen(
                [sys.executable, "-P", "-m", "gputui.executors.keeper", str(run.journal), run.scheduler_id],
                cwd=run.cwd,
                env=self.env,
                stdin=theirs.fileno(),
                stdout=self.wake_w,
                stderr=err,
                start_new_session=True,
            )
        ours.settimeout(WAITER_FORK_TIMEOUT_S)
        self.requests = ours


class RecordedLocal:
    """A recorded run whose attempts ran here: each is a process tree that ownership proves is the run's."""

    kind = "local"
    places_gpus = True
    label: str | None = None
    signals = SIGNALS

    @classmethod
    def from_meta(cls, run_dir: Path | None, meta: Callable) -> RecordedLocal:
        return cls()

    @staticmethod
    def runs_on(spec) -> str | None:
        """Where a job with this [executor] table runs, before it is launched; None: this machine."""
        return None

    def meta(self) -> dict:
        return {"executor": self.kind}

    def placement(self, task_id: str, number: int, log_path: str):
        return None

    def standing(self, task_id: str, number: int) -> str:
        return ""

    def job_of(self, task_id: str, number: int) -> str:
        return ""

    def signal(self, attempt, word: str) -> list[ProcessRef] | None:
        """Send the word's signal to the attempt's processes as `ownership` defines them: what was signalled.
        A kill also goes through the attempt's cgroup, which nothing of it can leave."""
        sig = self.signals[word]
        procs = attempt.processes()
        sent = [r for r in procs.tree() if ownership.send(r, sig)]
        if sig == signal.SIGKILL:
            procs.kill_cgroup()
        return sent

    def running_elsewhere(self, ends: Callable[[], Mapping], keys: Sequence[Key]) -> set[Key]:
        """Attempts of `keys` that run with no process here and have not ended (none: every one is here)."""
        return set()

    def paused(self, sent: list[ProcessRef]) -> str:
        return f"paused {len({r.pid for r in sent})} process(es); its GPU memory stays allocated"

    def resumed(self, sent: list[ProcessRef]) -> str:
        return f"resumed {len(sent)} process(es)"

    def killed(self, signalled: int, stuck: list[str], running: bool) -> str:
        return f"killed {signalled} process(es)" + ("; still alive: " + "; ".join(stuck) if stuck else "")

    def kill_target(self, refs: list[ProcessRef], placed: str | None, job: str) -> str:
        """What a kill of one task reaches, for its confirmation (`placed`: where it runs on a cluster)."""
        if refs:
            pids = ", ".join(str(r.pid) for r in refs[:6]) + (" …" if len(refs) > 6 else "")
            return f"{len(refs)} process(es): {pids}"
        return "not running (marked killed)"

    def adopted_where(self, worker: ProcessRef | None) -> str:
        return f"pid {worker.pid if worker else '?'}"

    def node_gpus(self, simulate: str | None) -> tuple[list[dict] | None, str]:
        return None, ""


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
