"""A finished large run's `status --json` task list, kept beside its state so asking again costs a file read, not
a second of SQLite formatting 100,000 rows (issue 24: <= 1 s at 100,000 tasks).

The cache is trusted only while the state file is byte for byte what it was made from: the same file (device,
inode), size and modification time, with nothing waiting in its write-ahead log, and no scheduler on the run
(a live run changes under the reader; its rows also word pending tasks differently). Any write to the state
after it was made (a retry, `gputui set`, a second `gputui run`) changes the modification time, so the reader
falls back to SQLite. A state file modified within the file system clock's tick of the key being taken could
change again without moving its time, so the key is taken only once the file has been still for KEY_AGE_NS
(git's "racy" rule). Written atomically; a file that does not end as the document ends (cut short) is ignored.

Layout: one header line (JSON: format, gputui version, key, the head of `status --json`, how long the run was
active for `gputui status`), then the body: the text of `status --json` after `"tasks": [`, exactly as printed."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import BinaryIO

from gputui import __version__
from gputui.files.atomic import atomic_write_chunks
from gputui.rundir.paths import RunPaths

FORMAT = 1
# Below this many tasks SQLite answers in a blink and no cache is kept ($GPUTUI_STATUS_CACHE_MIN: for tests).
MIN_TASKS = int(os.environ.get("GPUTUI_STATUS_CACHE_MIN", "10000"))
KEY_AGE_NS = 50_000_000
END = b"]\n}\n"  # how the body, and the document, ends

Key = list[int]


def path(paths: RunPaths) -> Path:
    return paths.root / "cache" / "status.jsonl"


def key(paths: RunPaths) -> Key | None:
    """The state file's identity, or None where it has unread log (a `-wal` with content) or is missing."""
    try:
        st = os.stat(paths.db)
    except OSError:
        return None
    try:
        if os.stat(f"{paths.db}-wal").st_size:
            return None
    except FileNotFoundError:
        pass
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def settled_key(paths: RunPaths) -> Key | None:
    """`key`, once the state file has not been modified for KEY_AGE_NS (see the module's docstring)."""
    found = key(paths)
    if found is not None and found[3] + KEY_AGE_NS > time.time_ns():  # (a clock stepped back: waits no longer)
        time.sleep(KEY_AGE_NS / 1e9)
        found = key(paths)
    return found


def write(paths: RunPaths, made_from: Key, head: dict, body: Iterable[str], spent_s: float | None) -> None:
    """Keep `body` (the text after `"tasks": [`, streamed: never held whole) for the state `made_from` names, with
    how long the run was active (`spent_s`: None where an attempt has no end, so its time still grows)."""
    header = {"format": FORMAT, "version": __version__, "key": made_from, "head": head, "spent_s": spent_s}
    lines = chain([json.dumps(header) + "\n"], body)
    atomic_write_chunks(path(paths), (text.encode() for text in lines), fsync=False)


def drop(paths: RunPaths) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path(paths))


def open_valid(paths: RunPaths) -> tuple[dict, BinaryIO] | None:
    """The header (its `head`, `spent_s`) and the body (a file positioned at it) where the cache still describes
    the state; else None."""
    try:
        f = open(path(paths), "rb")  # noqa: SIM115 - handed to the caller, closed by `chunks`
    except OSError:
        return None
    try:
        header = json.loads(f.readline())
        body = f.tell()
        f.seek(-len(END), os.SEEK_END)
        whole = f.read() == END  # (a file cut short ends elsewhere)
        f.seek(body)
        fits = (
            whole
            and header.get("format") == FORMAT
            and header.get("version") == __version__
            and header.get("key") == key(paths)
        )
    except (OSError, ValueError, AttributeError):
        fits = False
    if not fits:
        f.close()
        return None
    return header, f


def spent(paths: RunPaths) -> float | None:
    """How long the run was active, kept with a cache that still describes the state; None otherwise."""
    found = open_valid(paths)
    if found is None:
        return None
    header, body = found
    body.close()
    value = header.get("spent_s")
    return float(value) if isinstance(value, int | float) else None


def chunks(f: BinaryIO, size: int = 1 << 20) -> Iterator[str]:
    with f:
        while piece := f.read(size):
            yield piece.decode("ascii")
