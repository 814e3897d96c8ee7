"""Signal files: `signals/{task}.healthy|.done|.failed`, each with a JSON twin, for tools that watch a
folder instead of a database (the training-automation seed's contract). The marker and its twin are one
file under two names (a hard link): the marker appears once the facts are whole, and a signal costs one
new file, not two. Written atomically and durably."""

from __future__ import annotations

import time

from gputui.atomic import atomic_link, atomic_write_json, fsync_dir
from gputui.engine.rundir import RunPaths


def write_signal(paths: RunPaths, task_id: str, status: str, **facts) -> None:
    """`status`: healthy | done | failed. `facts`: step, loss, exit_code, duration, reason (None if unknown)."""
    twin = {"task_id": task_id, "status": status, "time": time.time()}
    for key in ("step", "loss", "exit_code", "duration", "reason"):
        twin[key] = facts.get(key)
    marker = paths.signals / f"{task_id}.{status}"
    twin_path = marker.with_name(marker.name + ".json")
    atomic_write_json(twin_path, twin, fsync_folder=False, indent=None)  # makes a missing folder
    atomic_link(twin_path, marker)
    fsync_dir(paths.signals)  # both names at once
