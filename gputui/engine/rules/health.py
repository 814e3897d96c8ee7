"""Health checks on a running task: the rules of its [health] table, fed by the scheduler.

Pure: no I/O and no clock reads. The scheduler passes each hook event's values (metrics()), each log
line (log_line()), any other sign of life (activity()) and the time; the watch says when a rule breaks.
The time is a monotonic clock's (the scheduler's time.monotonic()), never the wall clock: a step of the
wall clock (NTP, a VM resumed, `date -s`) would read as hours of silence and stop healthy workers.

The rules on values (nan, explode, lr_zero, stagnation) apply from the start to the end of the window
(window_s after started_at); a task that gets there without a break is healthy and those rules stop. The
hang rule (no output for no_output_s) and the CUDA/NCCL error lines apply for as long as the task runs.
A value given by the worker's hook events wins over the same value parsed from its log: once a metrics
event has carried a name, log lines are no longer read for it.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gputui.engine.rules.failures import FAILURE_PATTERNS, clip_reason
from gputui.jobs.health_spec import HealthSpec
from gputui.text_safety import log_line

# --------------------------------------------------------------------------------------------------
# Values in log lines

_NUMBER = r"[-+]?(?:nan|inf(?:inity)?|(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)"
# The names a log may use for each value we read (Megatron-LM writes "learning rate", "grad norm",
# "iteration"; nanoGPT "iter"; Hugging Face prints a dict with 'learning_rate' and 'grad_norm').
_KNOWN_NAMES = (
    r"loss",
    r"lr",
    r"learning[ _]rate",
    r"grad(?:ient)?[ _]norm",
    r"global_step",
    r"step",
    r"iteration",
    r"iter",
)
_ALIASES = {
    "learning_rate": "lr",
    "learning rate": "lr",
    "grad norm": "grad_norm",
    "gradient_norm": "grad_norm",
    "gradient norm": "grad_norm",
    "global_step": "step",
    "iteration": "step",
    "iter": "step",
}
# A name is a whole word: not part of val_loss, train/loss, lrs or 10ms/step.
_NAME_CHAR = r"[\w/.\-]"


@functools.lru_cache(maxsize=32)
def _values_re(metric: str) -> re.Pattern[str]:
    names = [re.escape(metric.lower()), *_KNOWN_NAMES]
    return re.compile(
        rf"(?<!{_NAME_CHAR})(?P<q>['\"]?)(?P<name>{'|'.join(names)})(?P=q)"  # loss, 'loss' or "loss"
        rf"(?:\s*[=:]\s*|\s+)"  # loss=1, loss: 1, loss 1
        rf"(?P<vq>['\"]?)(?P<value>{_NUMBER})(?P=vq)(?!\w|\.\d)",
        re.I,
    )


def canonical_name(name: str) -> str:
    """'Learning_Rate' -> 'lr', 'grad norm' -> 'grad_norm', 'iter' -> 'step'; other names lower-cased."""
    name = name.strip().lower()
    return _ALIASES.get(name, name)


def rounded_to_zero(text: str) -> bool:
    """Whether a printed number reads 0 only because it was printed with too few digits.

    A fixed-point zero with two or more decimals ('0.00', '0.0000': f"{lr:.2f}" of 0.001) is a value
    below the printed precision, not 0. A zero written as an integer ('0'), with one decimal ('0.0',
    Python's str(0.0)) or in exponent form ('0e0', '0.00e+00': a mantissa of 0 is exactly 0) is a 0.
    """
    digits = text.lstrip("+-").lower()
    if "e" in digits or float(digits) != 0:
        return False
    _, _, decimals = digits.partition(".")
    return len(decimals) >= 2


def parse_log_values(line: str, metric: str = "loss") -> dict[str, float]:
    """The known values in one log line: loss, lr, grad_norm, step and `metric`, by canonical name.

    'step 10 loss=0.6931 lr=0.001' -> {'step': 10.0, 'loss': 0.6931, 'lr': 0.001}. Names are matched
    case-insensitively as whole words; numbers may be nan, inf, -inf or use exponents. The first value of
    a name in the line wins ('lm loss: 8.5 | loss scale: 1.0' gives loss 8.5). A step must be a
    non-negative integer or it is left out, and so is an lr that reads 0 only for want of digits
    (rounded_to_zero: 'lr 0.00' is a small lr, not lr = 0; 'lr 0' and 'lr=0.0' are 0). Terminal colour
    codes are ignored, and of a line that a progress bar rewrote with carriage returns only the last (the
    visible) part is read.
    """
    line = log_line(line, colour=False)
    out: dict[str, float] = {}
    for m in _values_re(metric).finditer(line):
        name = canonical_name(m["name"])
        if name in out:
            continue
        value = float(m["value"])
        if name == "step" and not (math.isfinite(value) and value >= 0 and value.is_integer()):
            continue
        if name == "lr" and rounded_to_zero(m["value"]):
            continue
        out[name] = value
    return out


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
RULES = (*DETERMINISTIC_RULES, "hang", "cuda_oom", "cuda_error", "nccl_error")


@dataclass(frozen=True)
class Break:
    rule: str  # one of RULES
    evidence: str  # one line a user reads: "loss=nan at step 12"
    step: int | None = None
    value: float | None = None  # the offending value; for "hang" the seconds without output
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


# --------------------------------------------------------------------------------------------------
# The watch

_BASELINE_VALUES = 5  # explode_ratio compares with the minimum of the metric's first 5 values


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

    # -- inputs -----------------------------------------------------------------------------------

    def activity(self, now: float) -> None:
        """The task showed a sign of life (a log line, any event)."""
        if self.last_activity is None or now > self.last_activity:
            self.last_activity = now

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
        return self._observe(step, canon, now)

    def event(self, ev: Any, now: float) -> Break | None:
        """Any event with .kind, .step and .values (gputui.hooks.reader.Event): metrics events are
        checked, the others count as activity."""
        if getattr(ev, "kind", None) == "metrics":
            return self.metrics(getattr(ev, "step", None), getattr(ev, "values", None) or {}, now)
        self.activity(now)
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
        values = {k: v for k, v in values.items() if k not in self._from_hooks}
        if not values:
            return None
        return self._observe(step, values, now)

    # -- state ------------------------------------------------------------------------------------

    def check(self, now: float) -> Break | None:
        """The hang rule: no output or event for more than no_output_s (from started_at before any)."""
        if self.broken is not None:
            return None
        since = self.started_at if self.last_activity is None else self.last_activity
        silence = now - since
        if silence <= self.spec.no_output_s:
            return None
        if self.last_activity is None:
            where = " since it started"
        elif self.last_step is not None:
            where = f" after step {self.last_step}"
        else:
            where = ""
        evidence = f"no log line or event for {silence:.0f} s{where} (no_output_s = {self.spec.no_output_s:g})"
        return self._break(Break("hang", evidence, self.last_step, silence, False))

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
        if not self.in_window(now):
            return None
        spec, metric = self.spec, self._metric
        if spec.nan:
            for name in dict.fromkeys((metric, "loss", "grad_norm")):
                v = values.get(name)
                if v is not None and not math.isfinite(v):
                    return self._break(Break("nan", f"{name}={_fmt(v)}{_at(step)}", step, v, True))
        v = values.get(metric)
        if v is not None and not math.isnan(v):
            brk = self._explode(step, v)
            if brk is not None:
                return self._break(brk)
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
                base = min(self._first)
                if base > 0 and v > spec.explode_ratio * base:  # a baseline of 0 or less has no ratio
                    evidence = (
                        f"{metric}={_fmt(v)}{_at(step)} is {v / base:.3g}x the minimum of its first values "
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
