"""`GputuiCallback`: report a Lightning run's progress, metrics and outcome to gputui with one line.

    trainer = Trainer(callbacks=[GputuiCallback()])

Only rank zero reports, so a multi-GPU run writes one stream. Outside gputui the callback does nothing.
"""

from __future__ import annotations

import math
from typing import Any

try:
    import lightning.pytorch as pl
except ImportError:  # the older standalone package
    import pytorch_lightning as pl

from gputui import hooks

__all__ = ["GputuiCallback"]


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The one-element entries of `trainer.callback_metrics`, as floats."""
    out = {}
    for name, v in metrics.items():
        try:
            if hasattr(v, "numel"):
                if v.numel() != 1:
                    continue
                v = v.item()
            if isinstance(v, int | float):
                out[str(name)] = float(v)
        except (RuntimeError, TypeError, ValueError):
            continue
    return out


class GputuiCallback(pl.Callback):
    def __init__(self, every_n_steps: int = 1):
        super().__init__()
        self.every_n_steps = max(1, int(every_n_steps))
        self._last_step: int | None = None
        self._total: int | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._total = _total_steps(trainer)  # computed once: the property walks the dataloaders

    def _on(self, trainer: pl.Trainer) -> bool:
        return hooks.enabled() and trainer.is_global_zero

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int):
        step = trainer.global_step
        if not self._on(trainer) or step == self._last_step:  # gradient accumulation repeats a step
            return
        if step % self.every_n_steps and step != self._total:
            return
        self._last_step = step
        hooks.progress(step, self._total)
        metrics = scalar_metrics(trainer.callback_metrics)
        if metrics:
            hooks.log_metrics(step, **metrics)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if self._on(trainer) and not trainer.sanity_checking:
            metrics = scalar_metrics(trainer.callback_metrics)
            if metrics:
                hooks.log_metrics(trainer.global_step, **metrics)
        if self._on(trainer):
            hooks.phase("train")

    def on_validation_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if self._on(trainer):
            hooks.phase("eval")  # no training step is due while it validates ([health] stall_factor)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if self._on(trainer):
            hooks.mark_done(**scalar_metrics(trainer.callback_metrics))

    def on_exception(self, trainer: pl.Trainer, pl_module: Any, exception: BaseException) -> None:
        if self._on(trainer):
            hooks.mark_failed(f"{type(exception).__name__}: {exception}")


def _total_steps(trainer: pl.Trainer) -> int | None:
    try:
        total = trainer.estimated_stepping_batches
    except Exception:  # no dataloader length yet, or an iterable dataset
        return None
    if total is None or not math.isfinite(total) or total <= 0:
        return None
    return int(total)
