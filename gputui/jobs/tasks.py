"""Tasks as the store keeps them: plain records, no I/O. A task is one unit a job kind plans (a shard of
ids, a sweep trial, a pipeline step); job kinds read them to decide what comes next."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


class Status:
    PENDING = "pending"  # waiting for resources
    RUNNING = "running"
    PAUSED = "paused"  # SIGSTOPped; still holds its GPUs
    RETRYING = "retrying"  # failed, waiting for its backoff before the next attempt
    DONE = "done"
    FAILED = "failed"  # failed for good (attempts used up)
    KILLED = "killed"  # stopped by the user; stays killed until retried
    SKIPPED = "skipped"  # never to run: a task it waits for failed (its reason names which)
    LOST = "lost"  # attempts only: ended without a recorded exit status (its waiter was killed first)

    LIVE = frozenset({RUNNING, PAUSED})
    FINAL = frozenset({DONE, FAILED, KILLED, SKIPPED})
    ALL = (PENDING, RUNNING, PAUSED, RETRYING, DONE, FAILED, KILLED, SKIPPED)


SHARD, TRIAL, STEP = "shard", "trial", "step"  # the kinds of task: a range of ids, a sweep trial, a pipeline step


@dataclass(frozen=True)
class TaskRecord:
    id: str  # e.g. "shard-0"
    index: int  # position in the plan
    low: int  # shard range [low, high): id values, or positions when ids are not integers
    high: int
    count: int  # unique ids in the range
    status: str
    attempts: int  # attempts started so far
    budget: int  # attempts allowed before the task fails for good (grows on user retry)
    gpus: tuple[int, ...]  # GPUs held by the current/last attempt
    reason: str | None  # why it failed / was killed
    exit_code: int | None  # last attempt's exit code (negative: killed by that signal)
    started_at: float | None  # first launch, epoch seconds
    ended_at: float | None
    next_try_at: float | None  # for RETRYING
    # GPU accounting over all its attempts, as last written (every few seconds while one runs):
    gpu_seconds: float | None = None  # sum of its attempts' GPU-seconds; None: never measured
    peak_memory: int | None = None  # bytes: the most GPU memory any one attempt of it used at once
    gpus_simulated: bool = False  # measured on simulated GPUs: not a real GPU's figures
    energy_j: float | None = None  # joules, summed over its attempts; None: never measured
    energy_estimated: bool = False  # some of it is power x time (a GPU without an energy counter)
    kind: str = SHARD
    info: Mapping = field(default_factory=dict)  # what its job kind planned for it (params, stage, step...)
    after: tuple[str, ...] = ()  # tasks that must be done before it starts
    metric: float | None = None  # a trial's ranked metric, as it reported it
    rank: int | None = None  # a trial's rank in its stage (1 = best)
    promoted: bool = False  # a trial whose output seeds the next stage
    note: str | None = None  # what its job kind decided about it (why not ranked, ...)

    @property
    def range_label(self) -> str:
        """What the task covers, in a few words: its id range, a trial's stage and params, a step's name."""
        if self.kind == TRIAL:
            return trial_label(self.info)
        if self.kind == STEP:
            return f"step {self.info.get('step', self.id)}"
        return f"[{self.low}, {self.high})"

    @property
    def gpu_hours(self) -> float | None:
        return None if self.gpu_seconds is None else self.gpu_seconds / 3600


LABEL_WIDTH = 48  # characters: a launch line at 80 columns still shows the start of the command
PARAM_WIDTH = 24  # one `name=value` at most (a long path as a value)


def trial_label(info: Mapping, width: int = LABEL_WIDTH) -> str:
    """A trial in a few words that tell it from the others: its stage and params (inherited ones included),
    and `← parent` unless it inherited params from it (without inherit = true a stage runs the same params on
    top of each promoted trial: only the parent tells them apart). Too long: whole params are left out from
    the end (`…` says so) and the parent kept; one over-long `name=value` is cut."""
    params = [_cut(f"{k}={v}", PARAM_WIDTH) for k, v in (info.get("params") or {}).items()]
    parent = info.get("parent_id")
    tail = f" ← {parent}" if parent and not info.get("inherited") else ""
    head = " ".join(w for w in (str(info.get("stage") or ""), *params) if w)
    while len(head) + len(tail) > width and params:
        params.pop()
        head = " ".join(w for w in (str(info.get("stage") or ""), *params, "…") if w)
    return _cut(_cut(head, max(1, width - len(tail))) + tail, width)  # a parent too long for the width: cut


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
