"""Signal twins are read by other tools, often with strict JSON parsers: no bare NaN ever, and a task
stopped by a [health] rule says so (its exit code may well be 0: Lightning exits 0 when told to stop)."""

from __future__ import annotations

import json
import math

from gputui.rundir.paths import RunPaths
from gputui.rundir.signal_files import write_signal


def _strict(text: str):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_a_nan_loss_is_null_and_the_stopping_rule_is_named(tmp_path):
    paths = RunPaths(tmp_path)
    reason = "health check: loss=nan at step 5 (nan)"
    twin = write_signal(
        paths, "train", "failed", step=5, loss=math.nan, exit_code=0, duration=3.5, reason=reason,
        stopped_by="health: nan",
    )  # fmt: skip
    failed = _strict(twin.read_text())
    assert failed["loss"] is None and failed["exit_code"] == 0
    assert failed["stopped_by"] == "health: nan" and failed["reason"] == reason
    healthy = _strict(write_signal(paths, "train", "healthy", step=1, loss=math.inf).read_text())
    assert healthy["loss"] is None and healthy["stopped_by"] is None
