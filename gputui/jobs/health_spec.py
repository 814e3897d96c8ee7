"""The [health] table: rules that stop a task early when its training has plainly gone wrong.

    [health]
    window_s = 300              # healthy once through it; lr_zero and stagnation apply only inside it
    metric = "loss"
    nan = true                  # NaN/Inf in the metric or "loss" (at any time)
    explode_above = 1e4         # the metric above this breaks the rule (off unless set; at any time)
    explode_ratio = 10          # the metric above 10x the median of its first 5 values (at any time)
    lr_zero = true              # a learning rate ("lr") of exactly 0 after the first step breaks it
    stagnation_steps = 0        # 0 = off; else: no new best metric for this many steps
    no_output_s = 600           # hang: no log line and no event for this long (at any time)
    stall_factor = false        # stall: no new step for k x the task's median step interval (at any time)
    cuda_errors = true          # a CUDA out of memory / CUDA error / NCCL error line in the log
    retry_deterministic = false # NaN, explosion, lr = 0, stagnation are not retried unless true

Read and checked here (its values, HealthSpec, are with the job's other tables in spec.py); watched by
gputui.engine.rules.health.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gputui.jobs.checks import Checks, got, is_number
from gputui.jobs.spec import HealthSpec

_METRIC_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*(?: [A-Za-z0-9_./-]+)*")  # "loss", "val_loss", "valid loss"


HEALTH_KEYS = (
    "window_s",
    "metric",
    "nan",
    "explode_above",
    "explode_ratio",
    "lr_zero",
    "stagnation_steps",
    "no_output_s",
    "retry_deterministic",
    "cuda_errors",
    "stall_factor",
)


def _optional_number(
    checks: Checks, table: Mapping[str, Any], key: str, default: float | None, above: float
) -> Any:
    """A number > `above`, or false to turn the rule off; `default` when absent."""
    if key not in table:
        return default
    value = table[key]
    if value is False:
        return None
    if not is_number(value) or value <= above:
        what = "a positive number" if above == 0 else f"a number above {above:g}"
        raise checks.error(f"[health].{key}", f"expected {what} (or false to turn it off), {got(value)}")
    return float(value)


def parse_health(checks: Checks, table: Mapping[str, Any]) -> HealthSpec:
    """[health] as a HealthSpec (a key another table owns is told where it belongs)."""
    checks.check_keys(table, "[health]", HEALTH_KEYS, owner_skip="health")
    d = HealthSpec()
    metric = checks.value(table, "health", "metric", "str", d.metric)
    if not _METRIC_RE.fullmatch(metric):
        raise checks.error(
            "[health].metric",
            f"expected a metric name (letters, digits, '_', '.', '/', '-', single spaces between words; not "
            f"starting with a digit), "
            f"{got(metric)}",
        )
    return HealthSpec(
        window_s=checks.value(table, "health", "window_s", "num>0", d.window_s),
        metric=metric,
        nan=checks.value(table, "health", "nan", "bool", d.nan),
        explode_above=_optional_number(checks, table, "explode_above", d.explode_above, 0),
        # a ratio of 1 or less would fire on the first noisy value above the early minimum
        explode_ratio=_optional_number(checks, table, "explode_ratio", d.explode_ratio, 1),
        lr_zero=checks.value(table, "health", "lr_zero", "bool", d.lr_zero),
        stagnation_steps=checks.value(table, "health", "stagnation_steps", "int>=0", d.stagnation_steps),
        no_output_s=checks.value(table, "health", "no_output_s", "num>0", d.no_output_s),
        retry_deterministic=checks.value(table, "health", "retry_deterministic", "bool", d.retry_deterministic),
        cuda_errors=checks.value(table, "health", "cuda_errors", "bool", d.cuda_errors),
        # a factor of 1 or less would call every step slower than the median a stall
        stall_factor=_optional_number(checks, table, "stall_factor", d.stall_factor, 1),
    )
