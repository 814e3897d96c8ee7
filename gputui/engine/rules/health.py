"""Health checks on a running task: the rules of its [health] table, fed by the scheduler.

Pure: no I/O and no clock reads. The scheduler passes each hook event (event(), metrics()), each log
line (log_line()), any other sign of life (activity()) and the time; the watch says when a rule breaks.
The time is a monotonic clock's (the scheduler's time.monotonic()), never the wall clock: a step of the
wall clock (NTP, a VM resumed, `date -s`) would read as hours of silence and stop healthy workers.

NaN/Inf and explosion apply for as long as the task runs: a divergence an hour in is as fatal as one at
the start. So do the hang rule (no output for no_output_s), the stall rule (no new step for stall_factor
times the task's own pace, rules/stall.py) and the CUDA/NCCL error lines. lr_zero and stagnation apply
only inside the window (window_s after started_at): schedules end at lr = 0 (linear and cosine decay to
0) and a late plateau is convergence, neither is a broken start. A task through its window with no break
is healthy (`.healthy` is written then); a rule that applies at any time may still stop it later.
A value given by the worker's hook events wins over the same value parsed from its log: once a metrics
event has carried a name, log lines are no longer read for it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gputui.engine.rules import stall
from gputui.engine.rules.failures import FAILURE_PATTERNS, clip_reason
from gputui.engine.rules.log_values import canonical_name, parse_log_values
from gputui.jobs.health_spec import HealthSpec

# --------------------------------------------------------------------------------------------------
# CUDA / NCCL lines

_CUDA_RULES = {"cuda_oom": "cuda_oom", "nccl": "nccl_error", "cuda_error": "cuda_error"}  # failures kind -> rule


def cuda_error_rule(line: str) -> str | None:
    """'cuda_oom', 'nccl_error' or 'cuda_error' when the line reports one, else None.

    The failure classifier's patterns, most specific first. An 'NCCL WARN' alone does not count: NCCL
    writes it for conditions it recovers from, and the classifier reads it only once a task has failed,
    while this watch would stop a running one.
    """
    for kind, pattern in FAILURE_PATTERNS:
        if kind not in _CUDA_RULES:  # Slurm ending the job: the attempt ends anyway, nothing to stop
            continue
        for m in pattern.finditer(line):
            if kind == "nccl" and m.group(0).lower() == "nccl warn":
                continue
            return _CUDA_RULES[kind]
    return None


# --------------------------------------------------------------------------------------------------
# Breaks

DETERMINISTIC_RULES = ("nan", "explode", "lr_zero", "stagnation")  # same seed and config, same outcome
# A stall is a hang that still prints (a dead data loader, a stuck collective): as transient as a hang.
RULES = (*DETERMINISTIC_RULES, "hang", "stall", "cuda_oom", "cuda_error", "nccl_error")


@dataclass(frozen=True)
class Break:
    rule: str  # one of RULES
    evidence: str  # one line a user reads: "loss=nan at step 12"
    step: int | None = None
    value: float | None = None  # the offending value; for "hang" / "stall": the seconds without output / a step
    deterministic: bool = False  # True for nan / explode / lr_zero / stagnation: a retry would repeat it

    @property
    def reason(self) -> str:
        return f"health check: {self.evidence} ({self.rule})"


def may_retry(spec: HealthSpec, brk: Break) -> bool:
    """Whether [retry] applies to a task stopped by `brk`: not for a deterministic break unless the job
    says retry_deterministic = true (attempts left are the scheduler's business)."""
    return not brk.deterministic or spec.retry_deterministic


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _at(step: int | None) -> str:
    return "" if step is None else f" at step {step}"


def _after(step: int | None) -> str:
    return "" if step is None else f" after step {step}"


# --------------------------------------------------------------------------------------------------
# The watch

# explode_ratio compares with the median of the metric's first 5 values: a median, not a minimum, so one
# lucky batch of a noisy per-batch loss does not set a baseline that ordinary batches are "10x" above.
_BASELINE_VALUES = 5


class HealthWatch:
    """The [health] rules for one attempt of one task. Times are seconds of one monotonic clock (see the
    module's doc); `started_at` is the attempt's start on it.

    metrics(), log_line() and check() return a Break only from the call that finds it; `broken` keeps
    that first break and the watch stops looking after it.
    """

    def __init__(self, spec: HealthSpec, started_at: float):
        self.spec = spec
        self.started_at = started_at
        self.broken: Break | None = None
        self.last_activity: float | None = None  # the last output or event seen; None before any
        self.last_step: int | None = None
        self._metric = canonical_name(spec.metric)
        self._from_hooks: set[str] = set()  # names hook events have carried: the log is not read for them
        self._first: list[float] = []  # the metric's first values (explode_ratio's baseline)
        self._best: float | None = None
        self._best_pos = 0
        self._last_pos: int | None = None
        self._lr_seen = False
        self._lr_first_step: int | None = None
        self._pace = stall.StepPace(spec.stall_factor)
        self._log_lines = 0  # training-value lines read: a step for logs that print none

    # -- inputs -----------------------------------------------------------------------------------

    def activity(self, now: float) -> None:
        """The task showed a sign of life (a log line, any event)."""
        if self.last_activity is None or now > self.last_activity:
            self.last_activity = now

    def hold(self, now: float) -> None:
        """gputui has the task paused: its silence and its missing steps are not its own."""
        self.activity(now)
        self._pace.hold(now)

    def metrics(self, step: int | None, values: Mapping[str, float], now: float) -> Break | None:
        """A metrics event from the worker's hooks."""
        self.activity(now)
        if self.broken is not None:
            return None
        canon: dict[str, float] = {}
        for name, value in values.items():
            key = canonical_name(str(name))
            if key == "step":
                continue
            try:
                canon.setdefault(key, float(value))
            except (TypeError, ValueError):
                continue
        self._from_hooks.update(canon)
        if step is not None:
            self._pace.step(stall.HOOK_STEP, step, now)
        return self._observe(step, canon, now)

    def event(self, ev: Any, now: float) -> Break | None:
        """Any event with .kind, .step and .values (gputui.hooks.reader.Event): metrics events are
        checked, progress counts and phases feed the stall rule, every event counts as activity."""
        kind = getattr(ev, "kind", None)
        if kind == "metrics":
            return self.metrics(getattr(ev, "step", None), getattr(ev, "values", None) or {}, now)
        self.activity(now)
        if kind == "progress" and (done := getattr(ev, "done", None)) is not None:
            self._pace.step(stall.PROGRESS, done, now)
        elif kind == "phase" and isinstance(phase := getattr(ev, "phase", None), str):
            self._pace.set_phase(phase, now)
        return None

    def log_line(self, line: str, now: float) -> Break | None:
        """One line of the task's log."""
        self.activity(now)
        if self.broken is not None:
            return None
        if self.spec.cuda_errors:
            rule = cuda_error_rule(line)
            if rule is not None:
                return self._break(Break(rule, clip_reason(line.strip()), self.last_step, None, False))
        values = parse_log_values(line, self._metric)
        raw_step = values.pop("step", None)
        step = None if raw_step is None else int(raw_step)
        if step is not None:
            self._pace.step(stall.LOG_STEP, step, now)
        elif values:
            self._log_lines += 1
            self._pace.step(stall.LOG_LINE, self._log_lines, now)
        values = {k: v for k, v in values.items() if k not in self._from_hooks}
        if not values:
            return None
        return self._observe(step, values, now)

    # -- state ------------------------------------------------------------------------------------

    def check(self, now: float) -> Break | None:
        """The rules on time: hang (no output or event for more than no_output_s, from started_at before
        any) and stall (no new step for stall_factor times the median step interval)."""
        if self.broken is not None:
            return None
        since = self.started_at if self.last_activity is None else self.last_activity
        silence = now - since
        if silence > self.spec.no_output_s:
            where = " since it started" if self.last_activity is None else _after(self.last_step)
            evidence = f"no log line or event for {silence:.0f} s{where} (no_output_s = {self.spec.no_output_s:g})"
            return self._break(Break("hang", evidence, self.last_step, silence, False))
        stalled = self._pace.stalled(now)
        if stalled is None:
            return None
        gap, median = stalled
        evidence = (
            f"stalled: no new step for {gap:.0f} s{_after(self.last_step)} "
            f"(median step {median:.2g} s, stall_factor = {self.spec.stall_factor:g})"
        )
        return self._break(Break("stall", evidence, self.last_step, gap, False))

    def in_window(self, now: float) -> bool:
        return now - self.started_at < self.spec.window_s

    def healthy(self, now: float) -> bool:
        """The task got through its window with no break."""
        return self.broken is None and not self.in_window(now)

    # -- rules ------------------------------------------------------------------------------------

    def _break(self, brk: Break) -> Break:
        self.broken = brk
        return brk

    def _observe(self, step: int | None, values: dict[str, float], now: float) -> Break | None:
        if step is not None:
            self.last_step = step
        spec, metric = self.spec, self._metric
        if spec.nan:
            # Not grad_norm alone: an fp16 loss scaler skips a step whose gradients overflowed (inf) and goes
            # on; a real divergence shows in the loss one step later.
            for name in dict.fromkeys((metric, "loss")):
                v = values.get(name)
                if v is not None and not math.isfinite(v):
                    return self._break(Break("nan", f"{name}={_fmt(v)}{_at(step)}", step, v, True))
        v = values.get(metric)
        if v is not None and not math.isnan(v):
            brk = self._explode(step, v)
            if brk is not None:
                return self._break(brk)
        if not self.in_window(now):  # lr_zero and stagnation judge a start; the end of a run may differ
            return None
        lr = values.get("lr")
        if lr is not None:
            brk = self._lr(step, lr)
            if brk is not None:
                return self._break(brk)
        if v is not None and math.isfinite(v) and spec.stagnation_steps:
            brk = self._stagnation(step, v)
            if brk is not None:
                return self._break(brk)
        return None

    def _explode(self, step: int | None, v: float) -> Break | None:
        spec, metric = self.spec, self._metric
        if spec.explode_above is not None and v > spec.explode_above:
            evidence = f"{metric}={_fmt(v)}{_at(step)} > explode_above {spec.explode_above:g}"
            return Break("explode", evidence, step, v, True)
        if spec.explode_ratio is not None and math.isfinite(v):
            if self._first:
                base = statistics.median(self._first)
                if base > 0 and v > spec.explode_ratio * base:  # a baseline of 0 or less has no ratio
                    evidence = (
                        f"{metric}={_fmt(v)}{_at(step)} is {v / base:.3g}x the median of its first values "
                        f"({_fmt(base)}; explode_ratio = {spec.explode_ratio:g})"
                    )
                    return Break("explode", evidence, step, v, True)
            if len(self._first) < _BASELINE_VALUES:
                self._first.append(v)
        return None

    def _lr(self, step: int | None, lr: float) -> Break | None:
        first = not self._lr_seen
        if first:
            self._lr_seen, self._lr_first_step = True, step
        if not self.spec.lr_zero or lr != 0:
            return None
        # The first lr reported may be 0: a warm-up starts there. Later ones may not.
        later = not first and (step is None or self._lr_first_step is None or step > self._lr_first_step)
        return Break("lr_zero", f"lr=0{_at(step)}", step, lr, True) if later else None

    def _stagnation(self, step: int | None, v: float) -> Break | None:
        pos = step if step is not None else (0 if self._last_pos is None else self._last_pos + 1)
        self._last_pos = pos
        if self._best is None or v < self._best:
            self._best, self._best_pos = v, pos
            return None
        n = self.spec.stagnation_steps
        if pos - self._best_pos < n:
            return None
        unit = "steps" if step is not None else "values"
        best_at = f" at step {self._best_pos}" if step is not None else ""
        evidence = (
            f"no new best {self._metric} for {pos - self._best_pos} {unit} "
            f"(best {_fmt(self._best)}{best_at}; stagnation_steps = {n})"
        )
        return Break("stagnation", evidence, step, v, True)
