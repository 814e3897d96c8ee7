"""The stall rule's bookkeeping: when a task last made a step, and its own pace. Pure: times are passed in.

A worker can keep printing (a heartbeat thread, warnings, a progress bar redrawn) while its training loop
is stuck on a dead data loader, a collective or a storage hang; the hang rule (no output at all) misses it.
The stall rule measures progress instead: no new step for stall_factor times the task's median interval
between new steps, once a few intervals are known.

A step comes from the best source a task has shown, in order: its hooks progress count, the step of its
hooks metrics events, a step parsed from its log, a training-value line of its log (for scripts that print
no step: mnist's `Train Epoch: 1 [0/60000 (0%)]\tLoss: 2.3`). Once a better source shows up the worse ones
are no longer counted: one step reported through two sources read a poll apart would otherwise look like
two steps a poll apart, and halve the task's pace. A step is new when it differs from the last one (a
count that restarts each epoch still advances; one step printed twice does not).

Times are the scheduler's polls, so the pace is measured between polls that saw a new step: a task making
ten steps a second shows one step interval a poll. A phase other than "train" (gputui.hooks.phase("eval"))
pauses the rule; back in "train", or after gputui paused the task itself, it measures from then.
"""

from __future__ import annotations

import statistics
from collections import deque

# Sources of a step, best first.
PROGRESS = 0  # hooks.progress(done)
HOOK_STEP = 1  # hooks.log_metrics(step, ...)
LOG_STEP = 2  # step / iter / iteration on a log line
LOG_LINE = 3  # a log line with a training value and no step

WARMUP_INTERVALS = 4  # intervals between new steps seen before the rule applies (five new steps)
_KEEP_INTERVALS = 64  # the median of the latest ones: a task's pace may change as it goes


class StepPace:
    """New steps, the intervals between them and the phase, for one attempt."""

    def __init__(self, factor: float | None):
        self.factor = factor  # None: the rule is off and nothing is kept
        self._source: int | None = None
        self._marker: float | None = None
        self._last_at: float | None = None  # when the latest new step was seen
        self._from: float | None = None  # a resume (phase "train" again, or gputui's pause ended): measure from it
        self._skip_interval = False  # the next interval spans a pause: not the task's pace
        self._intervals: deque[float] = deque(maxlen=_KEEP_INTERVALS)
        self.phase = "train"

    def step(self, source: int, marker: float, now: float) -> None:
        """A step `marker` reported through `source` at `now`."""
        if self.factor is None or (self._source is not None and source > self._source):
            return
        if source != self._source:  # a better source: its steps and pace replace the old one's
            self._source, self._marker, self._last_at = source, None, None
            self._intervals.clear()
        if marker == self._marker:
            return
        self._marker = marker
        if self.phase != "train":  # an evaluation's own count: its pace is not the training's
            return
        if self._last_at is not None and now <= self._last_at:
            return  # another step read in the same poll
        if self._last_at is not None and not self._skip_interval:
            self._intervals.append(now - self._last_at)
        self._last_at, self._skip_interval = now, False

    def set_phase(self, name: str, now: float) -> None:
        """The worker said which phase it is in: any but "train" pauses the rule."""
        if name == self.phase:
            return
        self.phase = name
        if name == "train":
            self.hold(now)

    def hold(self, now: float) -> None:
        """No step was due until `now` (gputui paused the task, or it just came back from another phase)."""
        self._from = now
        self._skip_interval = self._last_at is not None

    def stalled(self, now: float) -> tuple[float, float] | None:
        """(seconds without a new step, median step interval) when that is past stall_factor times the
        median, once warmed up and in phase "train"; else None."""
        if self.factor is None or self.phase != "train" or len(self._intervals) < WARMUP_INTERVALS:
            return None
        assert self._last_at is not None  # intervals imply a step
        since = self._last_at if self._from is None else max(self._last_at, self._from)
        gap, median = now - since, statistics.median(self._intervals)
        return (gap, median) if gap > self.factor * median else None
