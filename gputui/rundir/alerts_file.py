"""The run's alerts file, `alerts.jsonl`: one JSON object a line, appended by the scheduler, tailed by the app.

Each line: `time` (epoch seconds), `kind` (one of KINDS), `task_id`, `gpu` (an index, or null), `message`,
`log_path` (the attempt's log, or null), plus `gpus` (the attempt's GPUs) where a task is concerned.
Lines are appended with one write each (O_APPEND), so a reader sees whole lines, or a last one still
being written, which it leaves for next time.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from gputui.files.tail import LineTail
from gputui.text_safety import visible

KINDS = ("task_failed", "out_of_memory", "gpu_idle", "ghost_memory", "gpu_lost")


def alert(
    kind: str,
    message: str,
    *,
    task_id: str | None = None,
    gpu: int | None = None,
    log_path: str | None = None,
    gpus: tuple[int, ...] | None = None,
    now: float | None = None,
) -> dict:
    """One alert, as written to alerts.jsonl and given to the [alerts] command on its stdin."""
    event = {
        "time": round(time.time() if now is None else now, 3),
        "kind": kind,
        "task_id": task_id,
        "gpu": gpu,
        "message": visible(message),  # often a worker's words: shown in a toast, handed to a command
        "log_path": log_path,
    }
    if gpus is not None:
        event["gpus"] = list(gpus)
    return event


def append(path: Path, event: dict) -> None:
    """Add one line (one write, so concurrent readers never see half of it); the file gets the user's
    normal mode."""
    data = (json.dumps(event, ensure_ascii=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


class AlertReader:
    """Alerts appended since the last call to `new()`. The first call returns the whole file (or nothing,
    with `from_end`). A missing file is no alerts yet; a file replaced or cut short is read afresh."""

    def __init__(self, path: str | os.PathLike[str], *, from_end: bool = False) -> None:
        self.path = Path(path)
        self._tail = LineTail(path, from_end=from_end)

    def new(self) -> list[dict]:
        events = []
        for line in self._tail.read():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a damaged line is skipped, never fatal
            if isinstance(event, dict):
                if isinstance(event.get("message"), str):  # a file older than the sanitiser
                    event["message"] = visible(event["message"])
                events.append(event)
        return events
