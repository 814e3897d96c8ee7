"""GputuiCallback says "eval" around each validation and "train" after it, so [health] stall_factor does not
take a long validation for a stall."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")  # the [train] extra; CI installs it
pytest.importorskip("lightning")

import lightning.pytorch as pl  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from gputui import hooks  # noqa: E402
from gputui.hooks.lightning import GputuiCallback  # noqa: E402
from gputui.hooks.reader import read_all  # noqa: E402


class WithValidation(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def test_validation_runs_in_phase_eval_and_training_resumes_in_phase_train(tmp_path, monkeypatch):
    events_path = tmp_path / "events.jsonl"
    monkeypatch.setenv(hooks.ENV_VAR, str(events_path))
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=8)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=8,
        val_check_interval=4,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[GputuiCallback()],
    )
    trainer.fit(WithValidation(), loader, loader)
    kinds = [e.phase if e.kind == "phase" else e.kind for e in read_all(events_path) if e.kind != "metrics"]
    first_eval = kinds.index("eval")
    assert kinds[first_eval - 1] == "progress" and kinds[first_eval + 1] == "train"  # nothing steps in eval
    assert kinds.count("eval") == kinds.count("train") == 2 and kinds[-1] == "done"
