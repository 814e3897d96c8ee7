"""Ray: every attempt goes to the run's one Ray bridge (ray_bridge.py), which records it as a waiter would.

The scheduler keeps one connection to the bridge and hands it, once, the journal, its copy of exits and the
wake pipe; the bridge writes each attempt's start and end there, so the journal stays the common ground
and no local process stands for an attempt. Its end-of-file loses every attempt it held: they are retried
through a new bridge, started as the run began. Signals are words in the attempt's signal file, applied
by the runner on its node to the command's whole tree.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from gputui.executors import node_runner, ownership, ray_client
from gputui.executors.base import (
    Capacity,
    ExecutorUnavailable,
    Key,
    LaunchFailed,
    LaunchSpec,
    Placement,
    RunContext,
    Say,
    WaiterHandle,
)
from gputui.executors.journal import exits_copy
from gputui.executors.local import AttemptChannels, RecordedLocal
from gputui.executors.ownership import ProcessRef

BRIDGE_TIMEOUT_S = 30.0  # a request the Ray bridge does not take within this long: it is stuck
BRIDGE_CHECK_S = 5.0  # how often the run's Ray bridge is looked for before attempts are sent to it
QUEUE_AHEAD = 3  # attempts submitted to Ray per task it can run at once (12 for 4 GPUs)
LOST_ON_RAY = "the Ray bridge that held it ended first: its cluster stopped, or the bridge was killed"
_CLUSTER_CHOOSES = "CUDA_VISIBLE_DEVICES"  # on Ray's node; all but it and RAY_* goes along, as sbatch does
_WORDS = {"pause": "STOP", "resume": "CONT", "terminate": "TERM", "kill": "KILL"}


class RayExecutor(AttemptChannels):
    kind = "ray"
    places_gpus = False
    stop_waits_for_backend = False
    lost_wording = LOST_ON_RAY

    def __init__(self, run: RunContext, address: str, num_gpus: int | None):
        super().__init__(run)
        self.address, self.num_gpus = address, num_gpus
        self.recorded = RecordedRay(run.root, address, num_gpus)
        self.bridge: WaiterHandle | None = None  # the run's Ray bridge, attached
        self._checked = float("-inf")  # when the bridge was last looked for (time.monotonic())
        self._up = True  # it was found then (a failure is said once)

    @classmethod
    def open(cls, spec, run: RunContext) -> RayExecutor:
        return cls(run, spec.address, spec.num_gpus)

    def join(self, env: Mapping[str, str]) -> Capacity:
        """The cluster's capacity, asked of the run's Ray bridge (started now if none runs)."""
        super().join(env)
        try:
            found = ray_client.capacity(self.run.root, self.address, self.num_gpus)
        except ray_client.RayUnavailable as e:
            raise ExecutorUnavailable(str(e)) from None
        where = f"the Ray cluster at {self.address!r}"
        return Capacity(found["gpus"], found["node_gpus"], found["cpus"], found["nodes"], where)

    def slots(self, capacity: Capacity, gpus_per_worker: int) -> int:
        """QUEUE_AHEAD times what the cluster can hold: the next attempt is already queued in Ray when one
        ends, so Ray starts it at once on the freed GPU (without a round trip through gputui), and its GPU
        time counts from that start, not from the launch."""
        per = capacity.gpus // gpus_per_worker if gpus_per_worker else capacity.cpus
        return QUEUE_AHEAD * max(1, int(per))

    def start(self, prefork: int = 0) -> None:
        """No waiter: the bridge records every attempt."""

    def ready(self, now: float, say: Say) -> bool:
        """Whether the run's Ray bridge holds our connection. One that died (its attempts ended, unknown how,
        and are retried) is started again, as the run began, before more are sent to it; while it cannot
        be, it is tried again every BRIDGE_CHECK_S. `now`: time.monotonic()."""
        if self.bridge is not None:
            return True
        if 0 <= now - self._checked < BRIDGE_CHECK_S:
            return False
        self._checked = now
        try:
            self._attach(ray_client.ensure(self.run.root, self.address, self.num_gpus))
        except (ray_client.RayUnavailable, OSError) as err:
            if self._up:
                say(f"cannot reach Ray: {err}; no task starts until it can be reached")
            self._up = False
            return False
        self._up = True
        return True

    def _attach(self, sock) -> None:
        """Hand the bridge the journal, its copy of exits and our wake pipe, so it records the attempts we
        send it; kept as the waiter of every attempt on Ray."""
        journals = (self.run.journal, exits_copy(self.run.journal))
        fds = [os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666) for p in journals]
        try:
            sock.settimeout(BRIDGE_TIMEOUT_S)
            pid, start = ray_client.attach(sock, *fds, self.wake_w)
        except (OSError, ValueError, KeyError) as e:
            sock.close()
            raise LaunchFailed(f"the Ray bridge would not take this run's records: {e}") from None
        finally:
            for fd in fds:
                os.close(fd)
        self.bridge = WaiterHandle(sock, ProcessRef(pid, start), shared=True)

    def waiter(self) -> WaiterHandle:
        if self.bridge is None:
            raise LaunchFailed("the Ray bridge is gone", retry=False)
        return self.bridge

    def launch(self, waiter: WaiterHandle, spec: LaunchSpec) -> None:
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
            "cwd": str(self.run.cwd),
            "gpus": float(spec.asked),
            "grace": spec.grace,
            "signals": str(ray_client.signals_path(self.run.root, spec.task_id, spec.number)),
        }
        try:
            waiter.channel.sendall(json.dumps(request).encode() + b"\n")
        except OSError as e:
            self._drop(waiter)
            raise LaunchFailed(f"the Ray bridge (pid {waiter.ref.pid}) is gone: {e}", retry=False) from None
        self.busy[(spec.task_id, spec.number)] = waiter

    def _shared(self) -> list[WaiterHandle]:
        return [self.bridge] if self.bridge else []

    def _drop(self, waiter: WaiterHandle) -> None:
        waiter.channel.close()
        if waiter is self.bridge:
            self.bridge = None

    def close(self) -> None:
        super().close()
        self.bridge = None

    def leave(self) -> None:
        """The run is over: its bridge leaves once nothing runs, stopping a private cluster."""
        ray_client.leave(self.run.root, self.address, self.num_gpus)


class RecordedRay(RecordedLocal):
    """A recorded run on Ray: no process of an attempt is here; the runner on its node is told words."""

    kind = "ray"
    places_gpus = False
    label = "ray cluster"

    def __init__(self, run_dir: Path | None, address: str = "auto", num_gpus: int | None = None):
        self.run_dir, self.address, self.num_gpus = run_dir, address, num_gpus

    @classmethod
    def from_meta(cls, run_dir: Path | None, meta: Callable) -> RecordedRay:
        return cls(run_dir, meta("ray_address", "auto"), meta("ray_num_gpus", None))

    @staticmethod
    def runs_on(spec) -> str | None:
        return "a private Ray cluster" if spec.address == "local" else f"the Ray cluster at {spec.address}"

    def meta(self) -> dict:
        return {"executor": self.kind, "ray_address": self.address, "ray_num_gpus": self.num_gpus}

    def placement(self, task_id: str, number: int, log_path: str) -> Placement | None:
        """From the log's first line, as the runner on the node wrote it."""
        found = node_runner.placement(log_path)
        return None if found is None else Placement.of(found)

    def signal(self, attempt, word: str) -> list[ProcessRef] | None:
        """A word in the attempt's signal file: the runner reads it from its start, so a word written before
        the command starts is applied as it starts."""
        ray_client.tell(ray_client.signals_path(self.run_dir, attempt.task_id, attempt.number), _WORDS[word])
        return None

    def running_elsewhere(self, ends: Callable[[], Mapping], keys: Sequence[Key]) -> set[Key]:
        """As the journal says (the bridge records them): not ended while the bridge that holds them lives."""
        attempts = ends()
        running = set()
        for key in keys:
            found = attempts.get(key)
            if found is None or not found.ended and found.waiter is not None and ownership.alive(found.waiter):
                running.add(key)
        return running

    def paused(self, sent: list[ProcessRef]) -> str:
        return "paused on Ray (its processes on the node are stopped; GPU memory stays allocated)"

    def resumed(self, sent: list[ProcessRef]) -> str:
        return "resumed on Ray"

    def killed(self, signalled: int, stuck: list[str], running: bool) -> str:
        return ("still ending" if running else "ended") + " on Ray"

    def kill_target(self, refs: list[ProcessRef], placed: str | None, job: str) -> str:
        """On Ray its tree on the node (no process of it is here: the runner there is told through the
        attempt's signal file)."""
        if refs or placed is None:
            return super().kill_target(refs, placed, job)
        if placed == "":
            return "queued in Ray: ended before it starts"
        node, _, gpus = placed.rpartition(":")
        return f"its process tree on Ray node {node} (GPUs {gpus})"

    def adopted_where(self, worker: ProcessRef | None) -> str:
        return "on Ray"  # no process of it here

    def node_gpus(self, simulate: str | None) -> tuple[list[dict] | None, str]:
        """Every alive node's GPUs, as the run's bridge last read them, and what to say while none has
        answered; none once the bridge has left (an app asks; it never starts a bridge)."""
        nodes = ray_client.node_gpus(self.run_dir, self.address, self.num_gpus, simulate)
        if nodes is None:
            return None, "the run's Ray bridge has left (nothing of the run is on the cluster): no GPUs to show"
        return nodes, "asking the Ray cluster's nodes for their GPUs…"  # (said while none has answered)
