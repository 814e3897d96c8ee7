"""The [health] table: rules that stop a task early when its training has plainly gone wrong.

    [health]
    window_s = 300              # the rules on values apply from the start to the window's end
    metric = "loss"
    nan = true                  # NaN/Inf in the metric, "loss" or "grad_norm"
    explode_above = 1e4         # the metric above this breaks the rule (off unless set)
    explode_ratio = 10          # the metric above 10x the minimum of its first 5 values breaks it
    lr_zero = true              # a learning rate ("lr") of exactly 0 after the first step breaks it
    stagnation_steps = 0        # 0 = off; else: no new best metric for this many steps
    no_output_s = 600           # hang: no log line and no event for this long (at any time)
    cuda_errors = true          # a CUDA out of memory / CUDA error / NCCL error line in the log
    retry_deterministic = false # NaN, explosion, lr = 0, stagnation are not retried unless true

Checked here; watched by gputui.engine.rules.health.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

from gputui.jobs.checks import got, is_number, toml_key

_METRIC_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")


@dataclass(frozen=True)
class HealthSpec:
    # 300 s: torchtitan allows 300 s (comm.init_timeout_seconds) for start-up and the first train step; a
    # task that gets through the same span with sane values has passed its risky start and is marked healthy.
    window_s: float = 300.0
    metric: str = "loss"  # the value the explode and stagnation rules watch (lower is better)
    # On: Megatron-LM checks the loss and grads for NaN by default (check_for_nan_in_loss_and_grad); a NaN
    # loss never comes back on its own.
    nan: bool = True
    # Off: a loss's scale depends on the task (an LM starts near ln(vocab) ~ 10, a regression anywhere), so
    # no absolute cap is safe for every job.
    explode_above: float | None = None
    # 10x: Megatron-LM calls a loss "spiky" at 10x the maximum seen (SPIKY_LOSS_FACTOR). Against the minimum
    # of the first values that is already past where any healthy run goes; llm-foundry's KillLossSpike uses
    # 2x the window mean but only after 5 outliers in a row over a 100-value window, which we do not keep.
    explode_ratio: float | None = 10.0
    # On: an lr of exactly 0 after warm-up's first step is a broken schedule (warm-up longer than the run,
    # a scheduler stepped per epoch, lr * 0 scale), and the task would burn its GPUs learning nothing.
    lr_zero: bool = True
    # Off: plateaus are normal (LMs sit on one for many steps early on); the right patience is per task.
    stagnation_steps: int = 0
    # 600 s: twice torchtitan's start-up allowance and PyTorch's NCCL collective timeout (10 min), so a
    # silent import, data load or checkpoint save does not trip it, while a hung collective whose watchdog
    # never fires is still caught. It applies at any time, not only in the window.
    no_output_s: float = 600.0
    # NaN, explosion, lr = 0 and stagnation come back on a retry with the same seed and config: retrying
    # burns GPU time for the same result. OOM, CUDA/NCCL errors and hangs are often transient and follow
    # [retry] as any other failure does.
    retry_deterministic: bool = False
    # On: a rank that hits CUDA OOM or an NCCL error often leaves the other ranks hung until the collective
    # timeout; stopping at the line frees the GPUs at once.
    cuda_errors: bool = True


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
)


def _optional_number(loader: Any, table: dict[str, Any], key: str, default: float | None, above: float) -> Any:
    """A number > `above`, or false to turn the rule off; `default` when absent."""
    if key not in table:
        return default
    value = table[key]
    if value is False:
        return None
    if not is_number(value) or value <= above:
        what = "a positive number" if above == 0 else f"a number above {above:g}"
        raise loader.error(f"[health].{key}", f"expected {what} (or false to turn it off), {got(value)}")
    return float(value)


def parse_health(loader: Any, table: dict[str, Any]) -> HealthSpec:
    """[health] as a HealthSpec; `loader` is jobs.loader.Loader (its error() and value() are used)."""
    for key in table:
        if key in HEALTH_KEYS:
            continue
        owner_of = getattr(loader, "owner_of", None)
        owner = owner_of(key, skip="health") if owner_of else None
        close = difflib.get_close_matches(key, HEALTH_KEYS, n=1)
        if owner:
            hint = f"'{key}' belongs in [{owner}]"
        elif close:
            hint = f"did you mean '{close[0]}'?"
        else:
            hint = f"expected one of: {', '.join(HEALTH_KEYS)}"
        raise loader.error(f"[health].{toml_key(key)}", f"unknown key; {hint}")
    d = HealthSpec()
    metric = loader.value(table, "health", "metric", "str", d.metric)
    if not _METRIC_RE.fullmatch(metric):
        raise loader.error(
            "[health].metric",
            f"expected a metric name (letters, digits, '_', '.', '/', '-'; not starting with a digit), "
            f"{got(metric)}",
        )
    return HealthSpec(
        window_s=loader.value(table, "health", "window_s", "num>0", d.window_s),
        metric=metric,
        nan=loader.value(table, "health", "nan", "bool", d.nan),
        explode_above=_optional_number(loader, table, "explode_above", d.explode_above, 0),
        # a ratio of 1 or less would fire on the first noisy value above the early minimum
        explode_ratio=_optional_number(loader, table, "explode_ratio", d.explode_ratio, 1),
        lr_zero=loader.value(table, "health", "lr_zero", "bool", d.lr_zero),
        stagnation_steps=loader.value(table, "health", "stagnation_steps", "int>=0", d.stagnation_steps),
        no_output_s=loader.value(table, "health", "no_output_s", "num>0", d.no_output_s),
        retry_deterministic=loader.value(table, "health", "retry_deterministic", "bool", d.retry_deterministic),
        cuda_errors=loader.value(table, "health", "cuda_errors", "bool", d.cuda_errors),
    )
