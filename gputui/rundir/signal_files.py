"""Signal files: `signals/{task}.healthy|.done|.failed`, each with a JSON twin, for tools that watch a
folder instead of a database (the training-automation seed's contract). The marker and its twin are one
file under two names (a hard link): the marker appears once the facts are whole, and a signal costs one
new file, not two. Written atomically; made durable (fsync) by the scheduler in batches, every few seconds and
at its end, not one by one: a turn that settles a task never waits on the disk for it, and on a journaled
filesystem each fsync is a journal commit that also holds up every file being created meanwhile (the
workers' logs).

The twins are strict JSON, as every JSON file the run writes (`atomic.dumps_json`): a number that is not
finite (a NaN or infinite loss) is written as null, since strict parsers refuse a bare `NaN`. A task
stopped by a [health] rule has `stopped_by` ("health: nan") and the rule's evidence in `reason` ("health
check: loss=nan at step 5 (nan)"); its `exit_code` is the one recorded, 0 for a trainer that exits
cleanly when told to stop (Lightning), so `status` is what to read."""

from __future__ import annotations

import time
from collections.abc import Collection
from pathlib import Path

from gputui.files.atomic import atomic_link, atomic_write_json, fsync_dir, fsync_files
from gputui.rundir.paths import RunPaths

FACTS = ("step", "loss", "exit_code", "duration", "reason", "stopped_by")


def write_signal(paths: RunPaths, task_id: str, status: str, *, durable: bool = True, **facts) -> Path:
    """`status`: healthy | done | failed. `facts`: step, loss, exit_code, duration, reason, stopped_by (None if
    unknown or not so). `durable=False`: not fsynced yet; the file written, for `make_durable` later."""
    twin = {"task_id": task_id, "status": status, "time": time.time()} | {key: facts.get(key) for key in FACTS}
    marker = f"{paths.folders[2]}/{task_id}.{status}"
    twin_path = marker + ".json"
    atomic_write_json(twin_path, twin, fsync=durable, fsync_folder=False, indent=None)  # makes a missing folder
    atomic_link(twin_path, marker)
    if durable:
        fsync_dir(paths.signals)  # both names at once
    return Path(twin_path)


def make_durable(paths: RunPaths, written: Collection[Path]) -> None:
    """Signals written with `durable=False`: their data, then both names of each (one folder fsync, or one
    syncfs for a large batch)."""
    fsync_files(written, paths.signals)
