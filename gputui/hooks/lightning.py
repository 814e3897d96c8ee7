"""`GputuiCallback`: report a Lightning run's progress, metrics and outcome to gputui with one line.

    trainer = Trainer(callbacks=[GputuiCallback()])

Only rank zero reports, so a multi-GPU run writes one stream. Outside gputui the callback does nothing.
A model that logs nothing is still watched: the loss `training_step` returns is reported as `loss` and the
optimizers' learning rate (as the step used it) as `lr` (step_values.py says which wins over what). A
reported step reads its tensors to the host in one transfer per device: one GPU sync, not one per value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

try:
    import lightning.pytorch as pl
except ImportError:  # the older standalone package
    import pytorch_lightning as pl

from gputui import hooks
from gputui.hooks.step_values import optimizer_lrs, step_values

__all__ = ["GputuiCallback"]


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The one-element entries of `trainer.callback_metrics` (or any such dict), as floats."""
    return _floats({str(k): v for k, v in metrics.items()})


def _floats(values: Mapping[str, Any]) -> dict[str, float]:
    """Numbers and one-element tensors as floats, in their order; other values are left out. Tensors are
    copied to the host together, one transfer per device, so a step costs one GPU sync, not one per value."""
    out: dict[str, float] = {}
    on: dict[Any, list[tuple[str, torch.Tensor]]] = {}
    for name, v in values.items():
        if isinstance(v, torch.Tensor):
            if v.numel() == 1:
                on.setdefault(v.device, []).append((name, v))
        elif isinstance(v, int | float):
            out[name] = float(v)
    for tensors in on.values():
        try:
            host = torch.stack([t.detach().reshape(()).to(torch.float64) for _, t in tensors]).tolist()
        except (RuntimeError, TypeError):  # a device without float64 (MPS): one at a time
            host = [_item(t) for _, t in tensors]
        out.update((name, v) for (name, _), v in zip(tensors, host, strict=True) if v is not None)
    return {name: out[name] for name in values if name in out}


def _item(t: torch.Tensor) -> float | None:
    try:
        return float(t.item())
    except (RuntimeError, TypeError, ValueError):
        return None


def returned_loss(outputs: Any) -> torch.Tensor | None:
    """The loss `training_step` returned, as `on_train_batch_end` gets it (a tensor, or a dict's "loss")."""
    if isinstance(outputs, Mapping):
        outputs = outputs.get("loss")
    if isinstance(outputs, torch.Tensor) and outputs.numel() == 1:
        return outputs
    return None


class GputuiCallback(pl.Callback):
    def __init__(self, every_n_steps: int = 1):
        super().__init__()
        self.every_n_steps = max(1, int(every_n_steps))
        self._last_step: int | None = None
        self._total: int | None = None
        self._loss: torch.Tensor | None = None  # the last loss training_step returned (unread: no sync)
        self._scale = 1
        self._lrs: list[tuple[str, Any]] = []  # the optimizers' lrs as the last batch started

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._total = _total_steps(trainer)  # computed once: the property walks the dataloaders
        self._scale = _loss_scale(trainer, pl_module)

    def _on(self, trainer: pl.Trainer) -> bool:
        return hooks.enabled() and trainer.is_global_zero

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        # Read before the step, as LearningRateMonitor does: the lr the step used. After it, a schedule that
        # decays to 0 on its last step (linear, cosine) would read as lr = 0 at the end of a healthy run.
        if self._on(trainer):
            self._lrs = optimizer_lrs(getattr(trainer, "optimizers", None) or ())

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int):
        if not self._on(trainer):
            return
        self._loss = returned_loss(outputs)
        step = trainer.global_step
        if step == self._last_step:  # gradient accumulation repeats a step
            return
        if step % self.every_n_steps and step != self._total:
            return
        self._last_step = step
        hooks.progress(step, self._total)
        metrics = self._values(trainer)
        if metrics:
            hooks.log_metrics(step, **metrics)

    def _values(self, trainer: pl.Trainer) -> dict[str, float]:
        """What the model logged, with the returned loss and the optimizers' lr where it logged none."""
        loss = self._loss if self._loss is None or self._scale == 1 else self._loss * self._scale
        return _floats(step_values(trainer.callback_metrics, loss=loss, lrs=self._lrs))

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
            values = self._values(trainer)
            if values and trainer.global_step != self._last_step:
                # the last step went unreported (every_n_steps, no known total): the [health] rules read
                # metrics events, not the done event, so a NaN there must be one
                hooks.log_metrics(trainer.global_step, **values)
            hooks.mark_done(**values)

    def on_exception(self, trainer: pl.Trainer, pl_module: Any, exception: BaseException) -> None:
        if self._on(trainer):
            hooks.mark_failed(f"{type(exception).__name__}: {exception}")


def _loss_scale(trainer: pl.Trainer, pl_module: Any) -> int:
    """What undoes Lightning's division of the returned loss by accumulate_grad_batches (automatic
    optimization only), so the loss reported is the one the model returned."""
    if not getattr(pl_module, "automatic_optimization", True):
        return 1
    return int(getattr(trainer, "accumulate_grad_batches", 1) or 1)


def _total_steps(trainer: pl.Trainer) -> int | None:
    try:
        total = trainer.estimated_stepping_batches
    except Exception:  # no dataloader length yet, or an iterable dataset
        return None
    if total is None or not math.isfinite(total) or total <= 0:
        return None
    return int(total)
