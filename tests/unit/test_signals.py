"""Signal files, read the way a tool watching the folder reads them."""

from __future__ import annotations

import json

from gputui.rundir.paths import RunPaths
from gputui.rundir.signal_files import make_durable, write_signal


def test_a_signal_is_a_marker_with_a_json_twin_holding_the_facts(tmp_path):
    paths = RunPaths(tmp_path / "run")  # no signals folder yet: the first signal makes it
    write_signal(paths, "train", "healthy", step=10, loss=2.5)
    write_signal(paths, "train", "done", step=100, loss=0.5, exit_code=0, duration=12.5)
    names = sorted(p.name for p in paths.signals.iterdir())
    assert names == ["train.done", "train.done.json", "train.healthy", "train.healthy.json"]
    done = json.loads((paths.signals / "train.done.json").read_text())
    assert done["status"] == "done" and done["step"] == 100 and done["exit_code"] == 0 and done["reason"] is None
    assert json.loads((paths.signals / "train.done").read_text()) == done  # the marker says the same


def test_a_signal_written_again_replaces_both_names(tmp_path):
    paths = RunPaths(tmp_path)
    write_signal(paths, "trial-1", "healthy", step=5)
    write_signal(paths, "trial-1", "healthy", step=50)  # a retried attempt is healthy again
    for name in ("trial-1.healthy", "trial-1.healthy.json"):
        assert json.loads((paths.signals / name).read_text())["step"] == 50
    assert len(list(paths.signals.iterdir())) == 2  # no temp file left


def test_signals_made_durable_later_are_whole_at_once_and_a_vanished_one_is_skipped(tmp_path):
    paths = RunPaths(tmp_path)
    written = [write_signal(paths, f"shard-{i}", "done", durable=False, exit_code=0) for i in range(3)]
    assert [json.loads(p.read_text())["task_id"] for p in written] == ["shard-0", "shard-1", "shard-2"]
    written[1].unlink()  # a user tidying the folder meanwhile
    make_durable(paths, written)
    assert json.loads((paths.signals / "shard-2.done").read_text())["exit_code"] == 0
