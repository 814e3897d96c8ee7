"""The refusals a caller of the front door should expect: each one's message says what is wrong and the
one safe next step, so a command line prints it as it is (no traceback)."""

from __future__ import annotations

from gputui.engine.attempt import Infeasible
from gputui.gpus.probe import NoGpuError
from gputui.jobs.gpu_plan import NoFit
from gputui.jobs.spec import JobSpecError
from gputui.rundir.opening import PlanMismatch
from gputui.rundir.paths import RunLocked
from gputui.rundir.state_file import StateReadOnly, StateUnreadable
from gputui.rundir.state_file import unreadable as state_unreadable

__all__ = [
    "REFUSALS",
    "Infeasible",
    "JobSpecError",
    "NoFit",
    "NoGpuError",
    "NoSuchAttempt",
    "PlanMismatch",
    "RunLocked",
    "StateReadOnly",
    "StateUnreadable",
    "UnknownTask",
    "state_unreadable",
]


class UnknownTask(LookupError):
    """A task id the run does not have (the message says how many it has, and how to list them)."""


class NoSuchAttempt(LookupError):
    """An attempt number the task has not reached."""


# A bad job file, a run held by another scheduler, a job changed under its run, damaged or read-only state,
# no GPU, more GPUs than any node has, no such run directory, no such task or attempt.
REFUSALS = (
    JobSpecError,
    RunLocked,
    PlanMismatch,
    StateUnreadable,
    StateReadOnly,
    NoGpuError,
    Infeasible,
    FileNotFoundError,
    UnknownTask,
    NoSuchAttempt,
)
