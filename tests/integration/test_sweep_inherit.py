"""Successive halving through `gputui run`: stage `short` runs a grid over lr and bs, stage `long` (inherit =
true) reruns the best two with epochs = 3. Each promoted trial runs with its parent's params, everywhere a
trial's params show, and keeps them when a later run (a new scheduler) starts it again."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import gputui

# A worker that writes the argv it was given and prints its metric: lr * bs * epochs (so the best parents are
# known: lr 0.01 with bs 64, then bs 32). While the file `broken` exists, trials of stage long fail.
WORKER = """\
import json, os, sys
params_json, lr, bs, epochs, stage, out, broken = sys.argv[1:]
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "argv.json"), "w") as f:
    json.dump({"params": json.loads(params_json), "lr": lr, "bs": bs, "epochs": epochs}, f)
print("params", params_json, flush=True)
if stage == "long" and os.path.exists(broken):
    sys.exit(3)
print(f"val_acc={float(lr) * int(bs) * int(epochs)}", flush=True)
"""


def halving_job(root: Path) -> Path:
    (root / "worker.py").write_text(WORKER)
    command = (
        f"{sys.executable} {root / 'worker.py'} {{params_json}} {{lr}} {{bs}} {{epochs}} {{stage}} {{output_dir}} "
        f"{root / 'broken'}"
    )
    lines = [
        "[job]",
        'name = "halving"',
        'kind = "sweep"',
        f"command = {json.dumps(command)}",
        "[params]",
        "epochs = 1",
        "[sweep]",
        'metric = "val_acc"',
        "top_k = 2",
        "metric_regex = 'val_acc=([0-9.eE+-]+)'",
        "[[sweep.stage]]",
        'name = "short"',
        "grid = { lr = [0.01, 0.003], bs = [32, 64] }",
        "[[sweep.stage]]",
        'name = "long"',
        "inherit = true",
        "params = [{ epochs = 3 }]",
        "[resources]",
        "gpus_per_worker = 0",
        "max_parallel = 4",
        "[retry]",
        "max_attempts = 1",
    ]
    job = root / "halving.toml"
    job.write_text("\n".join(lines) + "\n")
    return job


def test_promoted_trials_run_with_their_parents_params_and_keep_them_in_a_later_run(tmp_path):
    job = halving_job(tmp_path)
    run_dir = tmp_path / "run"
    (tmp_path / "broken").write_text("")
    first = gputui("run", "--jobs", job, "--run-dir", run_dir)
    assert first.returncode != 0 and "no trial was ranked (2 failed)" in first.stdout, first.stdout[-3000:]
    # The labels tell the two long trials apart by the params they inherited.
    assert "launch long-0 long lr=0.01 bs=64 epochs=3 attempt 1/1" in first.stdout, first.stdout[-3000:]
    assert "launch long-1 long lr=0.01 bs=32 epochs=3 attempt 1/1" in first.stdout

    # Fixed; the same command again: a new scheduler runs the failed long trials with the recorded params.
    (tmp_path / "broken").unlink()
    again = gputui("run", "--jobs", job, "--run-dir", run_dir)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr
    assert "launch long-0 long lr=0.01 bs=64 epochs=3 attempt 2/2" in again.stdout, again.stdout[-3000:]

    argv = {t: json.loads((run_dir / "trials" / t / "argv.json").read_text()) for t in ("long-0", "long-1")}
    assert argv["long-0"] == {
        "params": {"lr": 0.01, "bs": 64, "epochs": 3},  # {params_json}
        "lr": "0.01",
        "bs": "64",
        "epochs": "3",  # the stage's own value wins over [params]
    }
    assert argv["long-1"]["params"] == {"lr": 0.01, "bs": 32, "epochs": 3}

    df = pd.read_csv(run_dir / "results" / "results.csv").set_index("trial_id")
    assert list(df.columns[:5]) == ["stage", "stage_index", "lr", "bs", "epochs"]
    assert df.loc["long-0", ["lr", "bs", "epochs", "parent_id"]].tolist() == [0.01, 64, 3, "short-1"]
    assert df.loc["long-1", ["lr", "bs", "epochs", "parent_id"]].tolist() == [0.01, 32, 3, "short-0"]
    assert pd.isna(df.loc["short-0", "epochs"])  # stage short ran with the [params] default, not its own
    assert df.loc["long-0", "val_acc"] == pytest.approx(0.01 * 64 * 3) and df.loc["long-0", "rank"] == 1
    rows = [json.loads(line) for line in (run_dir / "results" / "results.jsonl").read_text().splitlines()]
    assert {r["trial_id"]: r["params"] for r in rows}["long-1"] == {"lr": 0.01, "bs": 32, "epochs": 3}

    summary = json.loads((run_dir / "tasks" / "long-0" / "summary.json").read_text())
    assert summary["params"] == {"lr": 0.01, "bs": 64, "epochs": 3}
    run_summary = json.loads((run_dir / "summary.json").read_text())
    assert run_summary["run_failed"] is None  # the last stage ranked after all: the run succeeded
    trials = {t["id"]: t for t in run_summary["tasks"]}
    assert trials["long-1"]["info"]["params"] == {"lr": 0.01, "bs": 32, "epochs": 3}
    assert trials["long-1"]["info"]["inherited"] == ["lr", "bs"]
    labels = [trials[t]["label"] for t in ("long-0", "long-1")]
    assert labels == ["long lr=0.01 bs=64 epochs=3", "long lr=0.01 bs=32 epochs=3"]

    status = gputui("status", "--run-dir", run_dir, env={**os.environ, "COLUMNS": "200"})  # cells unfolded
    assert "long lr=0.01 bs=32 epochs=3" in status.stdout, status.stdout
