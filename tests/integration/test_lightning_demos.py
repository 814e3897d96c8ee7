"""Lightning's own demo models, as shipped (they log nothing), fitted under gputui as a sweep with the
GputuiCallback: the loss they return and their optimizers' lr reach the task's metrics, a NaN run is stopped
by the nan rule and an lr = 0 run by lr_zero instead of finishing "done" and being ranked."""

from __future__ import annotations

import csv
import importlib.util
import json
import sqlite3
import sys
import textwrap

import pytest

from tests.conftest import gputui

if importlib.util.find_spec("torch") is None or importlib.util.find_spec("lightning") is None:
    pytest.skip("the [train] extra (torch, lightning) is not installed", allow_module_level=True)

# Nothing here changes a model: BoringModel as it is; DemoModel at its own learning_rate knob, or fed NaN data.
FIT = textwrap.dedent(
    """
    import sys

    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.demos import BoringModel, DemoModel
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader

    from gputui.hooks.lightning import GputuiCallback

    case = sys.argv[1]
    callbacks, logger, data = [GputuiCallback()], False, None
    if case == "boring":  # returns {"loss": ...}; SGD at lr 0.1, divided by 10 each epoch (StepLR)
        model = BoringModel()
    elif case == "monitor":  # the same, with Lightning's LearningRateMonitor logging lr-SGD
        model, logger = BoringModel(), CSVLogger("logs")
        callbacks.append(LearningRateMonitor())
    elif case == "nan":  # returns a tensor; its data is NaN
        model, data = DemoModel(), DataLoader(torch.full((16, 32), float("nan")), batch_size=4)
    elif case == "lr0":  # Adam at learning_rate 0
        model, data = DemoModel(learning_rate=0.0), DataLoader(torch.randn(16, 32), batch_size=4)
    pl.Trainer(
        accelerator="cpu", max_epochs=2, limit_train_batches=4, limit_val_batches=2, log_every_n_steps=1,
        logger=logger, callbacks=callbacks, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(model, data)
    """
)


def test_demo_models_report_loss_and_lr_and_break_the_rules(tmp_path):
    (tmp_path / "fit.py").write_text(FIT)
    job = tmp_path / "job.toml"
    job.write_text(
        f"""
[job]
name = "demos"
kind = "sweep"
command = "{sys.executable} fit.py {{case}}"
[sweep]
metric = "loss"
goal = "min"
top_k = 1
[[sweep.stage]]
name = "demo"
params = [{{ case = "boring" }}, {{ case = "monitor" }}, {{ case = "nan" }}, {{ case = "lr0" }}]
[health]                 # nan and lr_zero on, as by default
explode_ratio = false    # BoringModel's loss on one random sample a batch swings 100x from step to step
[resources]
gpus_per_worker = 0
[retry]
max_attempts = 1
"""
    )
    run_dir = tmp_path / "run"
    r = gputui("run", "--jobs", job, "--run-dir", run_dir, timeout=240)
    assert r.returncode == 1, r.stdout + r.stderr  # two trials failed: the run says so

    db = sqlite3.connect(run_dir / "state.db")
    tasks = {t: (status, reason) for t, status, reason in db.execute("SELECT id, status, reason FROM tasks")}
    assert tasks["demo-0"][0] == tasks["demo-1"][0] == "done", tasks
    assert tasks["demo-2"] == ("failed", "health check: loss=nan at step 1 (nan)"), tasks
    assert tasks["demo-3"] == ("failed", "health check: lr=0 at step 2 (lr_zero)"), tasks
    rows = {row["trial_id"]: row for row in csv.DictReader((run_dir / "results" / "results.csv").open())}
    assert {rows["demo-2"]["note"], rows["demo-3"]["note"]} == {"not ranked: failed"}
    assert {rows["demo-0"]["rank"], rows["demo-1"]["rank"]} == {"1", "2"}

    # BoringModel's returned loss and its lr, as each step used it: 0.1 in the first epoch, 0.01 in the second.
    curve = list(csv.DictReader((run_dir / "tasks" / "demo-0" / "metrics.csv").open()))
    assert [int(row["step"]) for row in curve] == list(range(1, 9))
    assert [float(row["lr"]) for row in curve] == pytest.approx([0.1] * 4 + [0.01] * 4)
    assert all(float(row["loss"]) >= 0 for row in curve)
    final = json.loads((run_dir / "tasks" / "demo-0" / "summary.json").read_text())["final_metrics"]
    assert final["lr"] == pytest.approx(0.01) and final["loss"] == pytest.approx(float(curve[-1]["loss"]))

    # With LearningRateMonitor: its lr-SGD is kept as logged, and lr agrees with it at every training step.
    curve = [row for row in csv.DictReader((run_dir / "tasks" / "demo-1" / "metrics.csv").open()) if row["loss"]]
    assert len(curve) == 8
    assert [float(row["lr"]) for row in curve] == pytest.approx([float(row["lr-SGD"]) for row in curve])
