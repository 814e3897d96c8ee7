"""The attempts journal: what every worker's waiter saw, appended as it happened, read by anyone.

    start <task> <attempt> <waiter pid> <waiter start> <worker pid> <worker start> <cgroup or ->
    exit  <task> <attempt> <status> <ended_at> <leftovers> [<boottime> <boot id>]
    clear <task> <attempt> <at> <ended>

`status` is the worker's exit code, or minus the signal that killed it; `leftovers` counts the task's
processes still alive when its worker ended (a daemon it left behind); `clear` says they are all gone,
so its GPUs may be given to another task. Times are epoch seconds, start times clock ticks; an `exit`
also carries CLOCK_BOOTTIME and the boot's id (see gputui.clock: durations never follow a wall-clock
step), which older records lack and older readers ignore.

Each record is one O_APPEND write of a short line ending in a CRC-32 of the rest, so records from
many waiters never interleave, and a torn, truncated or damaged line is recognised and ignored instead
of being read as a wrong fact. `exit` and `clear` records are written first to a second journal,
`logs/exits.journal`, so a damaged, truncated or deleted journal never loses how a worker ended.
Readers fold both into one view; a record read twice changes nothing.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path

from gputui import clock
from gputui.executors.ownership import ProcessRef
from gputui.files.tail import LineTail


@dataclass
class AttemptEnds:
    """Everything the journal says of one attempt."""

    waiter: ProcessRef | None = None
    worker: ProcessRef | None = None
    cgroup: str | None = None
    exit_code: int | None = None
    ended_at: float | None = None  # a clock.Stamp where the record carries CLOCK_BOOTTIME
    leftovers: int = 0
    cleared_at: float | None = None

    @property
    def started(self) -> bool:
        return self.waiter is not None

    @property
    def ended(self) -> bool:
        return self.exit_code is not None

    @property
    def cleared(self) -> bool:
        return self.cleared_at is not None or (self.ended and self.leftovers == 0)


def line(*fields: object) -> bytes:
    body = " ".join(map(str, fields))
    return f"{body} #{zlib.crc32(body.encode()):08x}\n".encode()


def exit_fields(code: int, leftovers: int) -> tuple[object, ...]:
    """The fields of an `exit` record after its task and attempt, stamped now."""
    at = clock.now()
    boot = () if at.boot is None else (f"{at.boot:.3f}", at.boot_id)
    return (code, f"{at:.3f}", leftovers, *boot)


def append(fd: int, *fields: object) -> bytes:
    data = line(*fields)
    os.write(fd, data)
    return data


def _verified(text: str) -> list[str] | None:
    body, sep, crc = text.rstrip("\n").rpartition(" #")
    if not sep or f"{zlib.crc32(body.encode()):08x}" != crc:
        return None
    return body.split()


def parse(text: str, into: dict[tuple[str, int], AttemptEnds]) -> tuple[str, int] | None:
    """Fold one record into `into`; returns its (task, attempt) key, or None for a damaged line."""
    parts = _verified(text)
    if parts is None:
        return None
    try:
        kind, key = parts[0], (parts[1], int(parts[2]))
        if kind == "start":
            ends = into.setdefault(key, AttemptEnds())
            ends.waiter = ProcessRef(int(parts[3]), int(parts[4]))
            if parts[5] != "-":
                ends.worker = ProcessRef(int(parts[5]), int(parts[6]))
            ends.cgroup = None if parts[7] == "-" else parts[7]
        elif kind == "exit":
            ends = into.setdefault(key, AttemptEnds())
            boot, boot_id = (float(parts[6]), parts[7]) if len(parts) >= 8 else (None, None)
            ends.exit_code, ends.leftovers = int(parts[3]), int(parts[5])
            ends.ended_at = clock.Stamp(float(parts[4]), boot, boot_id)
        elif kind == "clear":
            into.setdefault(key, AttemptEnds()).cleared_at = float(parts[3])
        else:
            return None
    except (IndexError, ValueError):
        return None
    return key


def exits_copy(journal: Path) -> Path:
    return Path(journal).parent / "logs" / "exits.journal"


def rotate(path: Path) -> None:
    """Set an old journal (and its copy of exits) aside so records of another run's attempts can never
    settle this one's. Waiters of that run still running append to the renamed files (they hold them open)."""
    for p in (path, exits_copy(path)):
        if p.exists():
            os.replace(p, p.with_name(f"{p.name}.{int(p.stat().st_mtime)}.old"))


class JournalReader:
    """What the journal and its copy of exits say of every attempt, read incrementally (a file that shrank or
    was replaced is read again: files.tail); damaged lines are skipped, and a record in either file is enough."""

    def __init__(self, path: Path):
        self.tails = [LineTail(path), LineTail(exits_copy(path))]
        self.attempts: dict[tuple[str, int], AttemptEnds] = {}

    def update(self) -> dict[tuple[str, int], AttemptEnds]:
        for tail in self.tails:
            for text in tail.read():
                parse(text.decode("utf-8", "replace"), self.attempts)
        return self.attempts

    def get(self, task_id: str, attempt: int) -> AttemptEnds:
        return self.update().get((task_id, attempt)) or AttemptEnds()
