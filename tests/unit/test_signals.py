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


def _outbox(tmp_path):
    from gputui.engine.outbox import Outbox

    return Outbox(RunPaths(tmp_path), alerter=None, voice=None, on_settled=None)


def test_signals_of_a_turn_are_all_whole_when_the_turn_ends(tmp_path):
    outbox = _outbox(tmp_path)
    with outbox.writing():
        for i in range(20):
            outbox.signal(f"shard-{i}", "done", exit_code=0, duration=1.5)
    for i in range(20):  # every one whole before the turn may commit
        for name in (f"shard-{i}.done", f"shard-{i}.done.json"):
            facts = json.loads((outbox.paths.signals / name).read_text())
            assert facts["task_id"] == f"shard-{i}" and facts["exit_code"] == 0
    assert len(outbox.unsynced) == 20
    outbox.sync_signals()
    outbox.close()


def test_a_signal_that_cannot_be_written_fails_the_turn(tmp_path):
    outbox = _outbox(tmp_path)
    outbox.paths.signals.parent.mkdir(parents=True, exist_ok=True)
    outbox.paths.signals.write_text("not a folder")  # so no signal can be written
    try:
        with outbox.writing():
            outbox.signal("shard-0", "failed", exit_code=1)
    except OSError:
        pass
    else:
        raise AssertionError("the turn must fail (and be rolled back) when a signal cannot be written")
    finally:
        outbox.close()


def test_a_signal_outside_a_turn_is_written_at_once(tmp_path):
    outbox = _outbox(tmp_path)
    outbox.signal("shard-0", "done", exit_code=0)
    assert json.loads((outbox.paths.signals / "shard-0.done").read_text())["status"] == "done"
    assert outbox._pool is None  # no thread for a lone signal
