"""The attempts journal: one line per worker start and end, appended by keepers, read by anyone.

    start <task_id> <attempt> <pid>
    exit <task_id> <attempt> <status> <ended_at>

Each record is one O_APPEND write of a short line, so records from several keepers never interleave
and a reader sees whole lines (a line without its newline is not yet written and is skipped).
Status is the worker's exit code, or minus the signal that killed it. A journal belongs to one
run's state: when that state is created afresh, the old journal is set aside (`rotate`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass
class AttemptEnds:
    pid: int | None = None
    exit_code: int | None = None
    ended_at: float | None = None

    @property
    def ended(self) -> bool:
        return self.exit_code is not None


def append(fd: int, *fields: object) -> None:
    os.write(fd, (" ".join(map(str, fields)) + "\n").encode())


def parse(line: str, into: dict[tuple[str, int], AttemptEnds]) -> tuple[str, int] | None:
    """Fold one record into `into`; returns its (task, attempt) key, or None for a malformed line."""
    parts = line.split()
    try:
        key = (parts[1], int(parts[2]))
        rec = into.setdefault(key, AttemptEnds())
        if parts[0] == "start":  # a new start of the same key supersedes whatever was said of it
            rec.pid, rec.exit_code, rec.ended_at = int(parts[3]), None, None
        elif parts[0] == "exit":
            rec.exit_code, rec.ended_at = int(parts[3]), float(parts[4])
        else:
            return None
    except (IndexError, ValueError):
        return None
    return key


def rotate(path: Path) -> None:
    """Set an old journal aside so records of another run's attempts can never settle this one's.

    Keepers of that run still running append to the renamed file (they hold it open)."""
    if path.exists():
        os.replace(path, path.with_name(f"{path.name}.{int(path.stat().st_mtime)}.old"))


class JournalReader:
    """Reads new records since the last call (by offset), keeping what every attempt did."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.attempts: dict[tuple[str, int], AttemptEnds] = {}

    def update(self) -> dict[tuple[str, int], AttemptEnds]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return self.attempts
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].decode("utf-8", "replace").splitlines():
            parse(line, self.attempts)
        return self.attempts

    def get(self, task_id: str, attempt: int) -> AttemptEnds:
        return self.update().get((task_id, attempt), AttemptEnds())
