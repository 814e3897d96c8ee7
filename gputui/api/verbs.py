"""The control verbs as small typed values, and the one function that delivers them.

A verb goes to the run's live scheduler through the store's control channel and waits for its answer;
when no scheduler holds the run, the sender takes the run lock and applies it itself (`engine.control`).
The CLI, the app and scripts all send through `send`, so that dance is written once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from gputui.engine.control import ControlError, Controller, request
from gputui.engine.rules.parallel import BadSetting, parse_value
from gputui.results.finalize import merge_run
from gputui.rundir.opening import open_existing


@dataclass(frozen=True)
class Verb:
    """`ids`: the tasks it names; None: every task of the run it applies to."""

    ids: tuple[str, ...] | None = None
    name: ClassVar[str] = ""
    force: ClassVar[bool] = False

    @property
    def args(self) -> Mapping[str, object]:
        """What the control channel carries beside the tasks and `force` (a `set`'s value)."""
        return {}

    def __post_init__(self) -> None:
        if self.ids is not None and not isinstance(self.ids, tuple):
            ids = [self.ids] if isinstance(self.ids, str) else self.ids
            object.__setattr__(self, "ids", tuple(ids))


@dataclass(frozen=True)
class Pause(Verb):
    """SIGSTOP the tasks' process trees (they keep their GPU memory). `free_memory`: each task's CUDA process is
    first checkpointed (`cuda-checkpoint`), freeing its GPU memory until resume; refused, saying why, where it
    cannot be (gputui.gpus.checkpoint)."""

    free_memory: bool = False
    name: ClassVar[str] = "pause"

    @property
    def args(self) -> Mapping[str, object]:
        return {"free_memory": True} if self.free_memory else {}


@dataclass(frozen=True)
class Resume(Verb):
    """SIGCONT paused tasks."""

    name: ClassVar[str] = "resume"


@dataclass(frozen=True)
class Kill(Verb):
    """SIGTERM, then SIGKILL after the run's stop grace; the tasks stay killed until retried."""

    name: ClassVar[str] = "kill"


@dataclass(frozen=True)
class Retry(Verb):
    """Queue failed or killed tasks again; `force` also runs done tasks again (named ones only)."""

    force: bool = False
    name: ClassVar[str] = "retry"


@dataclass(frozen=True)
class Start(Verb):
    """Start pending tasks now, ahead of the queue (only a live scheduler can)."""

    name: ClassVar[str] = "start"


@dataclass(frozen=True)
class Stop(Verb):
    """End the live scheduler's run: our tasks are stopped, the run can be started again."""

    name: ClassVar[str] = "stop"


@dataclass(frozen=True)
class Merge(Verb):
    """Merge the shard outputs (coverage-checked) and write merge_summary.json. `verify`: hash every output
    again against its done-manifest, instead of trusting an unchanged size, modification time and inode."""

    verify: bool = False
    name: ClassVar[str] = "merge"

    @property
    def force(self) -> bool:  # what the control channel carries
        return self.verify


@dataclass(frozen=True)
class SetParallel(Verb):
    """Change the run's max_parallel: to `to` tasks at once, or `by` more (fewer: negative) than now; neither: back
    to the job file's. A live scheduler applies it at its next turn (lowering it stops no running task; new ones
    wait until fewer run); without one it is kept for the run's next start. Kept in the run's state either way."""

    to: int | None = None
    by: int = 0
    name: ClassVar[str] = "set"

    @property
    def args(self) -> Mapping[str, object]:
        return {"to": self.to, "by": self.by}


SETTINGS = ("max_parallel",)  # what `gputui set KEY=VALUE` can change


def setting(text: str) -> SetParallel:
    """`KEY=VALUE` as `gputui set` takes it: `max_parallel=N`, `max_parallel=+1` / `-1` (relative to now), or
    `max_parallel=job` (back to the job file's). Raises ValueError saying what was expected."""
    key, eq, value = text.partition("=")
    key = key.strip()
    if not eq or key not in SETTINGS:
        what = f"unknown setting {key!r}" if eq else f"{text!r} is not KEY=VALUE"
        raise ValueError(f"{what}; expected one of: {', '.join(f'{k}=N' for k in SETTINGS)}")
    try:
        to, by = parse_value(value)
    except BadSetting as e:
        raise ValueError(str(e)) from None
    return SetParallel(to=to, by=by)


VERBS: dict[str, type[Verb]] = {v.name: v for v in (Pause, Resume, Kill, Retry, Start, Stop, Merge, SetParallel)}


def verb_named(name: str, ids: Sequence[str] | None = None, *, force: bool = False) -> Verb:
    """The verb a key or a command names: `verb_named("kill", ["shard-0"])` is `Kill(("shard-0",))`.
    `force`: `retry` also runs done tasks again; `merge` verifies (Merge.verify)."""
    kind = VERBS[name]
    if kind is Merge:
        return Merge(None if ids is None else tuple(ids), verify=force)
    return kind(None if ids is None else tuple(ids), force=force) if kind is Retry else kind(ids)


@dataclass(frozen=True)
class Outcome:
    """What the verb did, one line per task (or why nothing was done)."""

    ok: bool
    report: str

    def __bool__(self) -> bool:
        return self.ok


def send(run_dir: str | Path, verb: Verb, *, timeout: float = 120.0) -> Outcome:
    """Deliver `verb` to the run in `run_dir` and wait for what it did (a kill: until the trees ended).
    Raises FileNotFoundError when `run_dir` holds no run, and the store's refusals when its state is bad."""
    paths, store = open_existing(run_dir)
    try:

        def controller() -> Controller:  # only when no scheduler holds the run
            return Controller(paths, store, on_merge=lambda verify: merge_run(store, paths, verify))

        try:
            ok, report = request(
                paths, store, verb.name, verb.ids, controller, timeout=timeout, force=verb.force, extra=verb.args
            )
        except ControlError as e:
            ok, report = False, str(e)
        return Outcome(ok, report)
    finally:
        store.close()
