"""The one place an executor kind is named: the scheduler's executor, chosen when a run opens, and the
recorded side, chosen from what a run recorded. A fourth backend is one class pair here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from gputui.executors.base import Executor, RecordedExecutor, RunContext
from gputui.executors.local import LocalExecutor, RecordedLocal
from gputui.executors.ray_executor import RayExecutor, RecordedRay
from gputui.executors.slurm_executor import RecordedSlurm, SlurmExecutor

EXECUTORS = {e.kind: e for e in (LocalExecutor, RayExecutor, SlurmExecutor)}
RECORDED = {r.kind: r for r in (RecordedLocal, RecordedRay, RecordedSlurm)}


def open_executor(spec, run: RunContext) -> Executor:
    """The run's executor, from its job's [executor] table (jobs.spec.ExecutorSpec: kind, address...)."""
    return EXECUTORS[spec.kind].open(spec, run)


def recorded_executor(run_dir: Path | None, meta: Callable[[str, Any], Any]) -> RecordedExecutor:
    """A recorded run's executor, from its meta (`meta(key, default)`: Store.meta, or a dict's get); a run
    that recorded none ran here."""
    return RECORDED.get(meta("executor", "local"), RecordedLocal).from_meta(run_dir, meta)


def runs_on(spec) -> str | None:
    """Where a job with this [executor] table would run, before it is launched; None: this machine."""
    return RECORDED[spec.kind].runs_on(spec)
