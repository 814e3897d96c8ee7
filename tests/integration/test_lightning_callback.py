"""GputuiCallback under a real Trainer.fit on CPU: progress, the logged loss and done reach the events file."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")  # the [train] extra; CI installs it
pytest.importorskip("lightning")

import lightning.pytorch as pl  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from gputui import hooks  # noqa: E402
from gputui.hooks.lightning import GputuiCallback  # noqa: E402
from gputui.hooks.reader import Latest, read_all  # noqa: E402


class Tiny(pl.LightningModule):
    def __init__(self, fail_at: int | None = None):
        super().__init__()
        self.net = torch.nn.Linear(4, 1)
        self.fail_at = fail_at

    def training_step(self, batch, batch_idx):
        if self.fail_at is not None and self.global_step >= self.fail_at:
            raise RuntimeError("synthetic failure")
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


class TinyWithVal(Tiny):
    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    return DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=8)


def _trainer(**kw) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


def test_fit_reports_progress_metrics_and_done(tmp_path, monkeypatch):
    events_path = tmp_path / "events.jsonl"
    monkeypatch.setenv(hooks.ENV_VAR, str(events_path))
    trainer = _trainer(max_steps=20, val_check_interval=4, callbacks=[GputuiCallback(every_n_steps=5)])
    trainer.fit(TinyWithVal(), _loader(), _loader())

    events = read_all(events_path)
    progress = [e for e in events if e.kind == "progress"]
    assert [e.done for e in progress] == [5, 10, 15, 20]
    assert progress[-1].total == 20
    metrics = [e for e in events if e.kind == "metrics"]
    assert any("train_loss" in e.values for e in metrics)
    assert any("val_loss" in e.values for e in metrics)
    latest = Latest().feed(events)
    assert latest.done and not latest.failed and latest.fraction == 1.0
    assert "train_loss" in [e for e in events if e.kind == "done"][0].values


def test_exception_marks_failed(tmp_path, monkeypatch):
    events_path = tmp_path / "events.jsonl"
    monkeypatch.setenv(hooks.ENV_VAR, str(events_path))
    trainer = _trainer(max_steps=20, callbacks=[GputuiCallback()])
    with pytest.raises(RuntimeError, match="synthetic failure"):
        trainer.fit(Tiny(fail_at=3), _loader())
    latest = Latest().feed(read_all(events_path))
    assert latest.failed and not latest.done
    assert "synthetic failure" in latest.reason
    assert latest.progress_done == 3


def test_outside_gputui_the_callback_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(hooks.ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    _trainer(max_steps=3, callbacks=[GputuiCallback()]).fit(Tiny(), _loader())
    assert not [p for p in tmp_path.rglob("*") if p.suffix == ".jsonl"]


class Silent(Tiny):
    """Logs nothing, as Lightning's demo models: the callback reads the loss it returns and its optimizer's lr."""

    def __init__(self):
        super().__init__()
        self.returned: list[float] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.returned.append(loss.item())
        return {"loss": loss}


def test_a_silent_model_reports_the_loss_it_returned_not_lightnings_accumulation_share(tmp_path, monkeypatch):
    events_path = tmp_path / "events.jsonl"
    monkeypatch.setenv(hooks.ENV_VAR, str(events_path))
    model = Silent()
    trainer = _trainer(max_steps=3, accumulate_grad_batches=2, callbacks=[GputuiCallback()])
    trainer.fit(model, _loader())
    metrics = [e for e in read_all(events_path) if e.kind == "metrics"]
    assert [e.step for e in metrics] == [0, 1, 2, 3]  # each step once
    # with the loss of the micro-batch that made it (the 2nd, 4th, 6th; step 0: the first, before any)
    assert [e.values["loss"] for e in metrics] == pytest.approx([model.returned[i] for i in (0, 1, 3, 5)])
    assert {e.values["lr"] for e in metrics} == {0.05}


class Stream(torch.utils.data.IterableDataset):  # no length: the callback cannot know the total
    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        for _ in range(5):
            x = torch.randn(8, 4, generator=g)
            yield x, x.sum(dim=1, keepdim=True)


def test_the_last_step_is_reported_though_every_n_steps_skips_it(tmp_path, monkeypatch):
    events_path = tmp_path / "events.jsonl"
    monkeypatch.setenv(hooks.ENV_VAR, str(events_path))
    _trainer(max_epochs=1, callbacks=[GputuiCallback(every_n_steps=2)]).fit(Silent(), DataLoader(Stream()))
    events = read_all(events_path)
    assert [e.step for e in events if e.kind == "metrics"] == [2, 4, 5]  # 5: at the end, for the rules to read
    done = [e for e in events if e.kind == "done"][0]
    assert set(done.values) == {"loss", "lr"}
