"""What a training framework's callback reports for a step, beyond what the model logged itself.

Models written without logging (Lightning's own demos, many quick scripts) still return their loss from
`training_step`, and their optimizers hold the learning rate; the [health] rules (nan, lr_zero) and the
sweep table read `loss` and `lr`. Pure and framework-free: the callback gathers the facts, this decides.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["LR_NAMES", "optimizer_lrs", "step_values"]

LR_NAMES = frozenset({"lr", "learning_rate", "learning rate"})  # what the [health] rules read as the lr


def _canonical(name: str) -> str:
    return str(name).strip().lower()


def optimizer_lrs(optimizers: Iterable[Any]) -> list[tuple[str, Any]]:
    """Each param group's learning rate, in order, named as Lightning's LearningRateMonitor names it:
    `lr-SGD`; `lr-SGD-1` for a second SGD; `lr-Adam/pg2` (or `lr-Adam/<group name>`) when an optimizer has
    several param groups. Wrappers that hold the real optimizer in `.optimizer` (DeepSpeed) are looked through."""
    seen: Counter[str] = Counter()
    out: list[tuple[str, Any]] = []
    for opt in optimizers:
        opt = getattr(opt, "optimizer", opt)
        cls = type(opt).__name__
        seen[cls] += 1
        base = f"lr-{cls}" + (f"-{seen[cls] - 1}" if seen[cls] > 1 else "")
        groups = list(getattr(opt, "param_groups", None) or ())
        for j, group in enumerate(groups):
            if not isinstance(group, Mapping) or "lr" not in group:
                continue
            if len(groups) > 1:
                name = f"{base}/{group.get('name') or f'pg{j + 1}'}"
            else:
                name = f"{base}/{group['name']}" if group.get("name") else base
            out.append((name, group["lr"]))
    return out


def step_values(logged: Mapping[str, Any], *, loss: Any = None, lrs: Iterable[tuple[str, Any]] = ()) -> dict:
    """The values to report: what the model logged, plus
    - `loss`: the loss `training_step` returned (None: it returned none), unless the model logged a `loss`;
    - `lr`: unless the model logged an lr (`lr`, `learning_rate`), the first param group's lr of the first
      optimizer (`lrs`, from optimizer_lrs), and every other group's under its own name. A name the model
      logged (LearningRateMonitor's `lr-SGD`, ...) keeps its logged value.

    The optimizer's lr is preferred to LearningRateMonitor's copy: that copy is refreshed only every
    `log_every_n_steps` (or once an epoch), so a warm-up from 0 would read as lr = 0 for many steps.
    """
    out = {str(k): v for k, v in logged.items()}
    names = {_canonical(k) for k in out}
    if loss is not None and "loss" not in names:
        out["loss"] = loss
    if names & LR_NAMES:
        return out
    for i, (name, value) in enumerate(lrs):
        out.setdefault("lr" if i == 0 else name, value)
    return out
