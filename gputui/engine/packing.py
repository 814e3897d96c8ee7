"""The run's measured memory and its shared GPUs, as the launcher places tasks (rules/packing.py decides).

Measured memory: the largest peak per GPU of the run's done attempts (read from the store as the scheduler
starts, then added as attempts settle) and of its running ones (the Meter's, as sampled). Where the job declares
`memory_per_worker_gb` or shares GPUs, the placing policy plans a task for that peak plus a margin once measured.

Shared GPUs (`share_gpu`): for each GPU its tasks share, the run keeps one descriptor of its claim there
(gpus/reservations.py says why a claim shared by dup() is still exactly as long as a task on it lives, and never
another run's), closed at the first turn none of its tasks is left on it. An out-of-memory failure of one of its
tasks turns sharing off for good (`unpack`), kept in the run's state (RunMeta.packing_off) across starts.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import replace

from gputui.engine.accounting import Meter
from gputui.engine.rules import packing as rules
from gputui.engine.rules.packing import GpuShare, Measured
from gputui.engine.rules.placement import Policy
from gputui.engine.run_state import RunState
from gputui.gpus.probe import GIB, GpuSnapshot
from gputui.gpus.reservations import Reservations
from gputui.jobs.spec import JobSpec
from gputui.rundir.meta import read_meta
from gputui.rundir.store import Store


class Packing:
    def __init__(self, job: JobSpec, store: Store, meter: Meter, state: RunState):
        res = job.resources
        self.measures = res.share_gpu or res.memory_per_worker_gb is not None  # a job that said nothing of memory
        self.declared = res.memory_per_worker_gb  # is placed as it always was
        self.share = res.share_gpu
        self.cap = res.max_tasks_per_gpu
        self.meter = meter
        self.state = state
        self.off: str | None = read_meta(store).packing_off if self.share else None
        self.done, self.peak = store.done_peaks() if self.measures else (0, None)
        self.said = False  # "placing by measured peak ..." said by this scheduler
        self.fds: dict[int, int] = {}  # GPU index -> the run's own descriptor of its claim there
        self.shared: set[tuple[str, int]] = set()  # attempts that shared their GPU with another of ours

    # -- measured memory ---------------------------------------------------------------------------------------
    def ended(self, outcome: str, peak: int | None, gpus: Collection[int]) -> None:
        """An attempt settled: a done one's peak is measured."""
        per_gpu = rules.per_gpu(peak, len(gpus))
        if outcome == "done" and self.measures and per_gpu is not None:
            self.done += 1
            self.peak = per_gpu if self.peak is None else max(self.peak, per_gpu)

    def measured(self) -> Measured | None:
        """The run's measured memory now (None: not measured yet, or the job places by what it declares only)."""
        if not self.measures:
            return None
        usage = [u for u in self.meter.usage.values() if u.ended_at is None]
        running = [rules.per_gpu(u.peak_memory, len(u.on) or u.gpus) for u in usage]
        return rules.measured(self.peak, self.done, running)

    def policy(self, base: Policy, gpus: Sequence[GpuSnapshot]) -> Policy:
        """The placing policy: the run's own, with the measured memory (the free memory it needs on these GPUs) in
        place of the declared one."""
        m = self.measured()
        if m is None or not gpus:
            return base
        need = rules.free_need(m, max(g.memory_total for g in gpus))
        return replace(base, memory_per_worker_gb=need / GIB)

    def news(self) -> str | None:
        """The line to say once this scheduler first places by measured memory."""
        m = self.measured()
        if m is None or self.said:
            return None
        self.said = True
        return rules.placing_line(m, self.declared)

    # -- shared GPUs -------------------------------------------------------------------------------------------
    @property
    def keeping(self) -> bool:
        """Whether claims are kept for more tasks to join (sharing asked and not turned off)."""
        return self.share and self.off is None

    @property
    def sharing(self) -> bool:
        """Whether tasks may join others on a GPU now: sharing asked, not turned off, and the job measured."""
        return self.keeping and self.measured() is not None

    def keep(self, gpu: int, fd: int) -> int:
        """The run keeps the claim `fd` it made on `gpu` (tasks may join the first on it); a descriptor of it for
        the task's launch."""
        self.fds[gpu] = fd
        return Reservations.share(fd)

    def join(self, gpu: int, key: tuple[str, int]) -> int:
        """A descriptor of the run's claim on `gpu`, for one more task there (attempt `key`): it and those on the
        GPU share it."""
        self.shared |= {live.key for live in self.state.attempts() if gpu in live.gpus} | {key}
        return Reservations.share(self.fds[gpu])

    def prune(self) -> None:
        """Close the run's claims on GPUs none of its tasks holds any more (their own copies hold the rest)."""
        attempts = self.state.attempts()
        self.shared &= {live.key for live in attempts}
        on = {g for live in attempts for g in live.gpus}
        for gpu in [g for g in self.fds if g not in on]:
            _close(self.fds.pop(gpu))

    def shares(self, planned: int, draining: Collection[int] = ()) -> dict[int, GpuShare]:
        """The GPUs tasks may join: those the run holds a claim on, not draining a killed task's memory, each with
        how many of ours are on it and what they may still take."""
        out: dict[int, GpuShare] = {}
        for gpu in self.fds:
            if gpu in draining:
                continue
            on = [live for live in self.state.attempts() if gpu in live.gpus]
            seen = []
            for live in on:
                u = self.meter.usage.get(live.key)
                seen.append(None if u is None else rules.per_gpu(u.peak_memory, len(live.gpus)))
            out[gpu] = GpuShare(gpu, len(on), rules.to_come(planned, seen))
        return out

    def unpack(self, why: str) -> None:
        """Sharing is off for the rest of the run: claims are no longer kept for tasks to join."""
        self.off = why
        for fd in self.fds.values():
            _close(fd)
        self.fds.clear()


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
