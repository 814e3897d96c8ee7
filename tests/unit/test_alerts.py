"""alerts.jsonl: what the scheduler appends is what the app's reader gets, once each, whole lines only."""

from __future__ import annotations

import json

from gputui.rundir.alerts_file import AlertReader, alert, append


def test_reader_returns_each_alert_once_in_order(tmp_path):
    path = tmp_path / "alerts.jsonl"
    reader = AlertReader(path)
    assert reader.new() == []  # no file yet: no alerts
    append(path, alert("task_failed", "shard-0 failed", task_id="shard-0", log_path="/l/0.log", gpus=(0, 1)))
    append(path, alert("gpu_idle", "GPU 1 idle", task_id="shard-1", gpu=1))
    first = reader.new()
    assert [(a["kind"], a["task_id"], a["gpu"]) for a in first] == [
        ("task_failed", "shard-0", None),
        ("gpu_idle", "shard-1", 1),
    ]
    assert first[0]["log_path"] == "/l/0.log" and first[0]["gpus"] == [0, 1]
    assert set(first[1]) == {"time", "kind", "task_id", "gpu", "message", "log_path"}
    assert reader.new() == []
    append(path, alert("out_of_memory", "shard-2 OOM", task_id="shard-2"))
    assert [a["task_id"] for a in reader.new()] == ["shard-2"]


def test_a_line_still_being_written_waits_for_its_end(tmp_path):
    path = tmp_path / "alerts.jsonl"
    line = json.dumps(alert("task_failed", "shard-0 failed", task_id="shard-0"))
    path.write_text(line[:20])
    reader = AlertReader(path)
    assert reader.new() == []
    with open(path, "a") as f:
        f.write(line[20:] + "\n" + "not json\n")
    assert [a["task_id"] for a in reader.new()] == ["shard-0"]  # the damaged line is skipped


def test_from_end_skips_old_alerts_and_a_replaced_file_is_read_afresh(tmp_path):
    path = tmp_path / "alerts.jsonl"
    append(path, alert("task_failed", "old", task_id="shard-0"))
    reader = AlertReader(path, from_end=True)
    assert reader.new() == []
    append(path, alert("task_failed", "new", task_id="shard-1"))
    assert [a["message"] for a in reader.new()] == ["new"]
    path.unlink()
    append(path, alert("gpu_idle", "after a new run", gpu=0))
    assert [a["message"] for a in reader.new()] == ["after a new run"]
