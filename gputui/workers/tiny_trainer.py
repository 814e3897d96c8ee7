"""A tiny, real PyTorch trainer for demos and tests: seconds on a CPU, reports through `gputui.hooks`.

An MLP learns to classify points by a fixed random linear rule; `--task` seeds a slightly different
rule so pipeline stages differ. Gradients are deliberately not clipped: a huge `--lr` makes the loss
blow up, which is what the health-check demos need.

    python -m gputui.workers.tiny_trainer --lr 0.05 --batch-size 32 --out runs/t1 [--init runs/t0]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
import zlib
from pathlib import Path

import torch
from torch import nn

from gputui import hooks
from gputui.files.atomic import atomic_write_text

DIM, HIDDEN, N_TRAIN, N_VAL = 8, 32, 2048, 512


def make_data(task: str, seed: int) -> tuple[torch.Tensor, ...]:
    """Points labelled by a base rule nudged per task, so stages are related but not identical."""
    base = torch.Generator().manual_seed(1234)
    w = torch.randn(DIM, generator=base)
    nudge = torch.Generator().manual_seed(zlib.crc32(task.encode()))
    w = w + 0.3 * torch.randn(DIM, generator=nudge)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N_TRAIN + N_VAL, DIM, generator=g)
    y = (x @ w > 0).long()
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(DIM, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 2))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


def save_model(model: nn.Module, out: Path) -> None:
    """torch.save to a temp file then rename, so a later --init never loads half a checkpoint."""
    fd, tmp = tempfile.mkstemp(prefix=".model.pt.", suffix=".tmp", dir=out)
    os.close(fd)
    try:
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, out / "model.pt")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_float(v: float) -> float | str:
    return v if math.isfinite(v) else str(v)  # "nan", "inf", "-inf" as in the event protocol


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gputui.workers.tiny_trainer", description=__doc__.split("\n")[0])
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--batch-size", type=int, required=True)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--init", type=Path, help="folder with a model.pt to start from")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--task", default="default")
    ap.add_argument("--step-s", type=float, default=0.0, help="sleep this long after each step (demos)")
    ap.add_argument("--eval-only", action="store_true", help="only measure --init's model on the validation set")
    a = ap.parse_args(argv)

    torch.manual_seed(a.seed)
    torch.set_num_threads(1)  # tiny model: threads only add overhead and contend with sibling tasks
    a.out.mkdir(parents=True, exist_ok=True)
    x, y, xv, yv = make_data(a.task, a.seed)
    model = make_model()
    if a.init is not None and (a.init / "model.pt").is_file():
        model.load_state_dict(torch.load(a.init / "model.pt", weights_only=True))
        print(f"init from {a.init / 'model.pt'}", flush=True)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr)
    loss_fn = nn.CrossEntropyLoss()
    print(f"task={a.task} lr={a.lr:g} batch_size={a.batch_size} steps={a.steps}", flush=True)

    loss_v, val_acc = math.nan, accuracy(model, xv, yv)
    if a.eval_only:
        loss_v = loss_fn(model(xv), yv).item()
        hooks.log_metrics(0, val_loss=loss_v, val_acc=val_acc)
        print(f"eval val_loss={loss_v:.4f} val_acc={val_acc:.4f}", flush=True)
        metrics = {"val_loss": loss_v, "val_acc": val_acc, "task": a.task}
        atomic_write_text(a.out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        hooks.mark_done(val_acc=val_acc, val_loss=loss_v)
        return 0
    for step in range(1, a.steps + 1):
        idx = torch.randint(0, N_TRAIN, (a.batch_size,))
        loss = loss_fn(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()  # no clipping, on purpose
        loss_v = loss.item()
        hooks.log_metrics(step, loss=loss_v, lr=a.lr)
        hooks.progress(step, a.steps)
        print(f"step {step} loss={loss_v:.4f} lr={a.lr:g}", flush=True)
        if a.step_s:
            time.sleep(a.step_s)
        if step % 10 == 0 or step == a.steps:
            val_acc = accuracy(model, xv, yv)
            hooks.log_metrics(step, val_acc=val_acc)
            print(f"step {step} val_acc={val_acc:.4f}", flush=True)

    save_model(model, a.out)
    metrics = {"loss": _json_float(loss_v), "val_acc": val_acc, "steps": a.steps, "lr": a.lr, "task": a.task}
    atomic_write_text(a.out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    hooks.mark_done(val_acc=val_acc, loss=loss_v)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
