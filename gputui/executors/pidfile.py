"""Reading the files a supervisor leaves beside each attempt."""

from __future__ import annotations

import json
from pathlib import Path


def read_pid_file(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_exit_file(path: Path) -> dict | None:
    """{"exit_code": int, "ended_at": float} once the worker has ended, else None."""
    return read_pid_file(path)
