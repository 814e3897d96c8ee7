"""Where this user's runs on this machine are, so `gputui ls` can list them without being told.

One small JSON file per run directory, named by a hash of its resolved path (a run started again
rewrites its own entry, never adds a second), written whole or not at all. The folder is
`$GPUTUI_REGISTRY_DIR`, else `~/.cache/gputui/<host>/runs`: the same per-machine cache root as the GPU
reservations (gpus/reservations.py), so a home shared over NFS never lists another machine's runs.

Recording is best effort: a run never fails because its entry could not be written (`record` says so
in one line instead). Imports only the standard library and leaves, so listing stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gputui.files.atomic import atomic_write_text

if TYPE_CHECKING:  # only their fields are read: importing them would slow `gputui ls`
    from gputui.jobs.spec import JobSpec
    from gputui.rundir.meta import RunIdentity

SUFFIX = ".json"


@dataclass(frozen=True)
class Entry:
    """What a run start recorded of its run directory."""

    run_dir: Path
    job: str
    job_file: str | None
    created_at: float | None  # when the run was first created (its identity's)
    scheduler_id: str
    opened_at: float  # when a scheduler last opened it to run
    file: Path  # the entry itself
    inode: int  # of the entry as read: `forget` leaves one rewritten meanwhile alone


def registry_dir() -> Path:
    env = os.environ.get("GPUTUI_REGISTRY_DIR")
    if env:
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "gputui" / socket.gethostname() / "runs"


def entry_name(run_dir: Path) -> str:
    return hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:24] + SUFFIX


def record(run_dir: Path, job: JobSpec, identity: RunIdentity) -> list[str]:
    """Write (or rewrite) the entry of a run being opened to run. Returns what to tell the user: nothing, or
    the one line saying it could not be written; never raises an Exception (an unwritable or full home must
    not stop the run)."""
    folder: Path | str = "the run list"
    try:
        root = run_dir.resolve()
        folder = registry_dir()
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        entry = {
            "run_dir": str(root),
            "job": job.name,
            "job_file": str(job.path),
            "created_at": identity.created_at,
            "scheduler_id": identity.scheduler_id,
            "opened_at": time.time(),
        }
        atomic_write_text(folder / entry_name(root), json.dumps(entry) + "\n", fsync=False, fsync_folder=False)
        return []
    except Exception as e:  # whatever it is, the run goes on
        why = getattr(e, "strerror", None) or str(e) or type(e).__name__
        return [f"this run is not listed by `gputui ls` ({folder}: {why}); the run goes on"]


def entries(folder: Path | None = None) -> list[Entry]:
    """Every readable entry; a file that is not one (foreign, damaged) is skipped and left alone."""
    try:
        folder = folder or registry_dir()
        names = [n for n in os.listdir(folder) if n.endswith(SUFFIX)]
    except (OSError, RuntimeError, KeyError):  # none recorded yet, unreadable, or no home: nothing to list
        return []
    found = []
    for name in names:
        entry = _read(folder / name)
        if entry is not None:
            found.append(entry)
    return found


def forget(entry: Entry) -> None:
    """Remove the entry of a run directory that is gone, unless a run start rewrote it since it was read."""
    try:
        if os.stat(entry.file).st_ino == entry.inode:
            os.unlink(entry.file)
    except OSError:
        pass


def _read(path: Path) -> Entry | None:
    try:
        with open(path, "rb") as f:
            inode = os.fstat(f.fileno()).st_ino
            raw = json.loads(f.read(64 * 1024))
        return Entry(
            run_dir=Path(raw["run_dir"]),
            job=str(raw.get("job") or ""),
            job_file=raw.get("job_file"),
            created_at=_number(raw.get("created_at")),
            scheduler_id=str(raw.get("scheduler_id") or ""),
            opened_at=_number(raw.get("opened_at")) or 0.0,
            file=path,
            inode=inode,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
