"""The GPUs as sampled for the run: every `probe_every` seconds (and read again, for placing, once an attempt's
GPUs are freed), each of those samples fed to GPU accounting (accounting.Meter) and to the idle and ghost watches
(gpuwatch.py), whose alerts are sent at once. On simulated GPUs, what our own attempts hold is fed back
to the simulation (SimulatedLoad)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from gputui import clock
from gputui.engine.accounting import Meter
from gputui.engine.alerter import Alerter
from gputui.engine.gpuwatch import Finding, GhostWatch, IdleWatch, LostWatch
from gputui.engine.run_state import RunState
from gputui.engine.voice import Voice
from gputui.gpus.probe import GIB, GpuProbe, GpuSnapshot
from gputui.gpus.simulated import TASK_MEMORY_GB
from gputui.jobs.tasks import Status
from gputui.rundir import alerts_file


class SimulatedLoad:
    """What simulated GPUs show of our attempts: each live or lingering one holds `memory_gb` (the run's
    memory_per_worker_gb, else the simulation's default) on each of its GPUs. Given to the probe before the
    run's GPU policy is decided (the probe helps decide it), so RunSetup sets `memory_gb` once it is."""

    def __init__(self, state: RunState):
        self.state = state
        self.memory_gb: float | None = None

    def __call__(self) -> Mapping[int, list[tuple[int, int]]]:
        per_task = int((self.memory_gb or TASK_MEMORY_GB) * GIB)
        load: dict[int, list[tuple[int, int]]] = {}
        for live in self.state.attempts():
            for g in live.gpus:
                load.setdefault(g, []).append((live.worker.pid if live.worker else 0, per_task))
        return load


class GpuSampler:
    def __init__(
        self,
        probe: GpuProbe | None,
        every: float,
        state: RunState,
        meter: Meter,
        idle: IdleWatch | None,
        ghosts: GhostWatch | None,
        alerter: Alerter,
        voice: Voice,
    ):
        self.probe = probe  # None: no GPU is ours to sample (CPU tasks, or a cluster places them)
        self.every = every  # Options.probe_every
        self.state = state
        self.meter = meter
        self.idle = idle
        self.ghosts = ghosts
        self.alerter = alerter
        self.voice = voice
        self.lost = LostWatch()
        self.gpus: list[GpuSnapshot] = []
        self.sampled_at = 0.0
        self.stale = False  # an attempt's GPUs were freed since the last sample

    def look_again(self) -> None:
        """An attempt's GPUs were freed: the next snapshot reads them anew (for placing the next task; the
        accounting and the watches keep their own pace)."""
        self.stale = True

    def snapshot(self, force: bool = False) -> list[GpuSnapshot]:
        """The GPUs as last sampled, sampled again if `every` seconds passed (or `force`), read again
        without being observed if GPUs were freed since."""
        now = time.monotonic()
        if force or now - self.sampled_at >= self.every:
            self.gpus = self.probe.snapshot()
            self.sampled_at, self.stale = now, False
            self._observe(self.gpus)
        elif self.stale:
            self.gpus, self.stale = self.probe.snapshot(), False
        return self.gpus

    def _observe(self, gpus: list[GpuSnapshot]) -> None:
        """Each GPU sample: the running attempts' GPU time and memory, idle GPUs, ghost memory, lost GPUs."""
        now = time.monotonic()  # the watches' intervals; GPU time is measured by clock stamps
        tasks = self.state.tasks
        running = [live for live in self.state.live.values() if live.handle is None]  # launched, not just recorded
        self.meter.sample(gpus, [(live.key, live.gpus, live.processes()) for live in running], clock.now())
        findings: list[Finding] = self.lost.sample(gpus, [(live.key, live.gpus) for live in running])
        if self.idle is not None:
            busy = [(live.key, live.gpus) for live in running if tasks[live.task_id].status == Status.RUNNING]
            findings += self.idle.sample(gpus, busy, now)
        if self.ghosts is not None:
            findings += self.ghosts.sample(gpus, self.state.statuses, now)
        for f in findings:  # not tied to this turn's commit: sent at once
            live = self.state.live.get(f.task_id or "") if f.kind in ("gpu_idle", "gpu_lost") else None
            self.voice.info(f"alert: {f.message}")
            log_path = None if live is None else live.log_path
            self.alerter.emit(
                alerts_file.alert(f.kind, f.message, task_id=f.task_id, gpu=f.gpu, log_path=log_path)
            )
