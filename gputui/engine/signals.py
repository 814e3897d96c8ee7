"""Signal files: `signals/{task}.healthy|.done|.failed`, each with a JSON twin, for tools that watch a
folder instead of a database (the training-automation seed's contract). Written atomically."""

from __future__ import annotations

import time

from gputui.atomic import atomic_write_json, atomic_write_text, fsync_dir
from gputui.engine.rundir import RunPaths


def write_signal(paths: RunPaths, task_id: str, status: str, **facts) -> None:
    """`status`: healthy | done | failed. `facts`: step, loss, exit_code, duration, reason (None if unknown)."""
    paths.signals.mkdir(parents=True, exist_ok=True)
    twin = {"task_id": task_id, "status": status, "time": time.time()}
    for key in ("step", "loss", "exit_code", "duration", "reason"):
        twin[key] = facts.get(key)
    atomic_write_json(paths.signals / f"{task_id}.{status}.json", twin, fsync_folder=False)
    atomic_write_text(paths.signals / f"{task_id}.{status}", "", fsync=False)  # empty: nothing but its name
    fsync_dir(paths.signals)  # both names at once: two fsyncs per signal, not four
