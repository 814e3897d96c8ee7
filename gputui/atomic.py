"""Atomic file writes: readers see the old file or the whole new one, never a torn one."""

from __future__ import annotations

import datetime as _dt
import decimal
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = True) -> None:
    """Write to a temp file in the same folder, fsync it, rename it over `path`, fsync the folder.

    `fsync=False` keeps rename atomicity (enough against a process crash) for files that only
    matter while the processes that wrote them are alive.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _mode_for(path))  # mkstemp's 0600 would hide reports from the user's group
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if fsync:
        _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, fsync: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def atomic_write_json(
    path: str | os.PathLike[str], obj: Any, *, fsync: bool = True, indent: int | None = 2
) -> None:
    atomic_write_text(path, dumps_json(obj, indent=indent) + "\n", fsync=fsync)


def dumps_json(obj: Any, *, indent: int | None = 2) -> str:
    return json.dumps(obj, indent=indent, default=json_default, ensure_ascii=False)


def json_default(o: Any) -> Any:
    """Make numpy/pandas scalars, arrays, paths, sets and dates JSON-able without importing numpy.

    The seed tool crashed writing its summary on `numpy.int64`; every JSON gputui writes goes
    through here.
    """
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    if isinstance(o, set | frozenset):
        return sorted(o, key=repr)
    if isinstance(o, _dt.datetime | _dt.date | _dt.time):
        return o.isoformat()
    if isinstance(o, decimal.Decimal):
        return float(o)
    if isinstance(o, bytes):
        return o.decode("utf-8", "replace")
    # pandas Timestamp / Timedelta before numpy-style checks (they also have .item()).
    if hasattr(o, "isoformat"):
        return o.isoformat()
    if hasattr(o, "tolist"):  # numpy arrays and scalars, pandas Series/Index
        return o.tolist()
    if hasattr(o, "item"):  # other array-API scalars
        return o.item()
    if hasattr(o, "to_dict"):  # pandas DataFrame
        return o.to_dict(orient="records")
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def _mode_for(path: Path) -> int:
    """The mode of the file being replaced, else what a plain open() would give under the umask."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting it (briefly) and back
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
