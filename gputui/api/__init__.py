"""The front door: what the CLI, the app and a script use to plan, run and steer a run, and to read this
machine's GPUs. Nothing here imports Textual.

    run = open_run("runs/demo")          # a Run: snapshot(), tasks(), status(), logs(), pause() ... summary()
    run.kill(["shard-3"])                # a verb, through the run's scheduler when one is live
    run_job("job.toml", simulate="4")    # `gputui run`: until every task has settled
    wait("runs/demo")                    # `gputui wait`: until every task has ended; follow_log: `gputui log -f`
    gpus()                               # this machine's GPUs now, like nvitop's Device.all()

docs/api.md says more, with an example that the tests run.
"""

from importlib import import_module
from typing import TYPE_CHECKING

# Each name is imported from its module on first use (PEP 562), so that a command loads only what it uses:
# `gputui merge` need not import the GPU table, the launcher or the planner.
_HOME = {
    **dict.fromkeys(
        ("REFUSALS", "JobSpecError", "NoFit", "NoGpuError", "NoSuchAttempt", "StateUnreadable", "UnknownTask"),
        "gputui.api.errors",
    ),
    **dict.fromkeys(
        ("LogEvent", "NotStarted", "TaskEnd", "WaitOutcome", "follow_log", "read_log", "wait"), "gputui.api.follow"
    ),
    **dict.fromkeys(("StartFailed", "run_job", "start_in_background"), "gputui.api.launch"),
    **dict.fromkeys(("GpuReading", "gpus", "read_gpus"), "gputui.api.machine"),
    **dict.fromkeys(("JobPlan", "check_app_target", "load_job", "plan"), "gputui.api.planning"),
    **dict.fromkeys(("Run", "open_run"), "gputui.api.run"),
    "list_runs": "gputui.api.runs",
    "RunStatus": "gputui.api.status",
    **dict.fromkeys(
        ("VERBS", "Kill", "Merge", "Outcome", "Pause", "Resume", "Retry", "Start", "Stop", "Verb"),
        "gputui.api.verbs",
    ),
    **dict.fromkeys(("SetParallel", "send", "setting", "verb_named"), "gputui.api.verbs"),
    "RunMeta": "gputui.rundir.meta",
    "start_keeper": "gputui.executors.keeper_spare",  # `gputui run`'s first step (not for scripts: not in __all__)
}


def __getattr__(name: str):
    try:
        home = _HOME[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(import_module(home), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from gputui.api.errors import (
        REFUSALS,
        JobSpecError,
        NoFit,
        NoGpuError,
        NoSuchAttempt,
        StateUnreadable,
        UnknownTask,
    )
    from gputui.api.follow import LogEvent, NotStarted, TaskEnd, WaitOutcome, follow_log, read_log, wait
    from gputui.api.launch import StartFailed, run_job, start_in_background
    from gputui.api.machine import GpuReading, gpus, read_gpus
    from gputui.api.planning import JobPlan, check_app_target, load_job, plan
    from gputui.api.run import Run, open_run
    from gputui.api.runs import list_runs
    from gputui.api.status import RunStatus
    from gputui.api.verbs import (
        VERBS,
        Kill,
        Merge,
        Outcome,
        Pause,
        Resume,
        Retry,
        SetParallel,
        Start,
        Stop,
        Verb,
        send,
        setting,
        verb_named,
    )
    from gputui.rundir.meta import RunMeta

__all__ = [
    "wait",
    "read_log",
    "follow_log",
    "WaitOutcome",
    "UnknownTask",
    "TaskEnd",
    "NotStarted",
    "NoSuchAttempt",
    "LogEvent",
    "REFUSALS",
    "VERBS",
    "GpuReading",
    "JobPlan",
    "JobSpecError",
    "Kill",
    "Merge",
    "NoFit",
    "NoGpuError",
    "Outcome",
    "Pause",
    "Resume",
    "Retry",
    "Run",
    "RunMeta",
    "SetParallel",
    "RunStatus",
    "Start",
    "StartFailed",
    "StateUnreadable",
    "Stop",
    "Verb",
    "check_app_target",
    "gpus",
    "list_runs",
    "load_job",
    "open_run",
    "plan",
    "read_gpus",
    "run_job",
    "send",
    "setting",
    "start_in_background",
    "verb_named",
]
