"""The tiny trainer, run as a real process under GPUTUI_EVENTS, reports, checkpoints and can diverge."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")  # the [train] extra; CI installs it

from gputui.hooks.reader import Latest, read_all  # noqa: E402

ROOT = Path(__file__).parents[2]


def train(tmp_path: Path, name: str, *args: str) -> tuple[subprocess.CompletedProcess, Path, Path]:
    out, events = tmp_path / name, tmp_path / f"{name}.events.jsonl"
    env = {**os.environ, "GPUTUI_EVENTS": str(events), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "gputui.workers.tiny_trainer", "--out", str(out), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc, out, events


def test_trainer_reports_and_checkpoints(tmp_path):
    proc, out, events_path = train(tmp_path, "first", "--lr", "0.5", "--batch-size", "32", "--steps", "30")
    assert "step 10 loss=" in proc.stdout
    events = read_all(events_path)
    kinds = {e.kind for e in events}
    assert {"metrics", "progress", "done"} <= kinds
    latest = Latest().feed(events)
    assert latest.done and latest.fraction == 1.0 and latest.metric_step == 30
    assert [s for s, v in latest.series if "val_acc" in v] == [10, 20, 30]
    assert latest.metrics["val_acc"] > 0.8
    assert (out / "model.pt").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val_acc"] == latest.metrics["val_acc"]

    # A step with a vanishing lr leaves the weights as loaded: same data, so the same val_acc.
    proc2, out2, events2 = train(
        tmp_path, "second", "--lr", "1e-12", "--batch-size", "32", "--steps", "1", "--init", str(out)
    )
    assert f"init from {out / 'model.pt'}" in proc2.stdout
    assert Latest().feed(read_all(events2)).metrics["val_acc"] == latest.metrics["val_acc"]
    assert (out2 / "model.pt").is_file()


def test_huge_lr_blows_up(tmp_path):
    _, _, events_path = train(tmp_path, "diverge", "--lr", "1e3", "--batch-size", "32", "--steps", "20")
    losses = [e.values["loss"] for e in read_all(events_path) if "loss" in e.values]
    assert any(not math.isfinite(v) or v > 1e4 for v in losses)
