"""Atomic file writes: readers see the old file or the whole new one, never a torn one.

Files are written unnamed (O_TMPFILE) and linked in once whole: a new name is linked in directly (one
step), an existing file is replaced through a temp name and a rename. A crash while writing leaves
nothing behind (an unnamed file vanishes with its last descriptor). Where a filesystem cannot (NFS), mkstemp
does it. New files cost the kernel more than the writing: on this project's 2-core VM, from 0.03 to 0.6 ms
each depending on the filesystem's state, so the run directory's contract keeps per-task files few.
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import decimal
import errno
import functools
import json
import math
import os
import sys
import tempfile
from collections.abc import Collection, Iterable
from typing import Any


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, fsync: bool = True, fsync_folder: bool = True
) -> None:
    """Write a new file beside `path` (fsync'ed), rename it over `path`, fsync the folder.

    `fsync=False` keeps rename atomicity (enough against a process crash) for files that only
    matter while the processes that wrote them are alive, or that are written again if lost.
    `fsync_folder=False`: the caller fsyncs the folder once, after several renames in it.
    """
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    try:
        _write_unnamed(path, folder, data, fsync)
    except FileNotFoundError:
        if os.path.isdir(folder):
            raise
        os.makedirs(folder, exist_ok=True)
        _write_unnamed(path, folder, data, fsync)
    except _NoUnnamedFiles:
        _write_named(path, folder, data, fsync)
    if fsync and fsync_folder:
        fsync_dir(folder)


class _NoUnnamedFiles(Exception):
    """The filesystem (NFS, an old kernel) or a missing /proc cannot name an O_TMPFILE file: use mkstemp."""


def _write_unnamed(path: str, folder: str, data: bytes, fsync: bool) -> None:
    """An O_TMPFILE file, named once written: linked in as `path` if that is a new name (one step, nothing
    to clean up), else under a temp name renamed over `path`, with the replaced file's mode."""
    try:
        fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666)  # the umask applies, as for open()
    except OSError as e:
        if isinstance(e, FileNotFoundError):
            raise  # the folder is missing: made, then tried again
        raise _NoUnnamedFiles from e
    try:
        _fill(fd, data, fsync)
        try:
            _link_as(fd, path)
            return
        except FileExistsError:
            _keep_mode(fd, path)
            tmp = _name(path, folder, lambda name: _link_as(fd, name))
    finally:
        os.close(fd)
    _rename(tmp, path)


def _name(path: str, folder: str, link) -> str:
    """`link(tmp)` under a free temp name beside `path`; that name."""
    while True:
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.urandom(6).hex()}.tmp")
        try:
            link(tmp)
            return tmp
        except FileExistsError:
            continue


def _link_as(fd: int, path: str, proc_fds: int | None = None) -> None:
    """Give the unnamed file `fd` the name `path` (linkat through /proc, as open(2) shows); `proc_fds`: the
    caller's descriptor of /proc/self/fd, else one is opened for this call (not kept: a fork's would differ)."""
    proc = proc_fds if proc_fds is not None else open_proc_fds()
    if proc is None:
        raise _NoUnnamedFiles
    try:
        os.link(str(fd), path, src_dir_fd=proc, follow_symlinks=True)
    except OSError as e:
        if e.errno in (errno.EXDEV, errno.ENOENT, errno.EPERM, errno.EOPNOTSUPP):
            raise _NoUnnamedFiles from e
        raise
    finally:
        if proc_fds is None:
            os.close(proc)


def open_proc_fds() -> int | None:
    """This process's descriptor of /proc/self/fd, for open_append to keep (None where there is none)."""
    try:
        return os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None


def atomic_link(existing: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Give the file `existing` a second name, `path`, replacing what was there at once (no new inode: the
    kernel's costly part of a new file)."""
    existing, path = os.fspath(existing), os.fspath(path)
    try:
        os.link(existing, path)
        return
    except FileExistsError:
        pass
    _rename(_name(path, os.path.dirname(path) or ".", lambda name: os.link(existing, name)), path)


def open_append(path: str, proc_fds: int | None = None) -> int:
    """An O_APPEND descriptor of `path` (an attempt's log), created first if missing, the same cheap way:
    an unnamed file linked in under its name (another process linking first: that file is used). Opened
    again by its name, so /proc and lsof show the path, not a deleted temp file. `proc_fds`: the caller's own
    descriptor of /proc/self/fd, kept (opened by this process: a fork's would name its parent's files)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
    try:  # (not contextlib.suppress: done for every attempt)
        return os.open(path, flags)
    except FileNotFoundError:
        pass
    head = path[: path.rfind("/") + 1]  # os.path.dirname's answer, without its cost (an attempt's log each)
    try:
        fd = os.open(head.rstrip("/") or head or ".", flags | os.O_TMPFILE, 0o666)
    except OSError as e:
        if isinstance(e, FileNotFoundError):
            raise
        return os.open(path, flags | os.O_CREAT, 0o666)
    try:
        _link_as(fd, path, proc_fds)
    except (FileExistsError, _NoUnnamedFiles):
        pass
    finally:
        os.close(fd)
    return os.open(path, flags | os.O_CREAT, 0o666)


def _write_named(path: str, folder: str, data: bytes | Iterable[bytes], fsync: bool) -> None:
    """Through a temp name renamed over `path` once whole; `data` may come in pieces."""
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        if not _keep_mode(fd, path):
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide reports
        for chunk in [data] if isinstance(data, bytes | bytearray | memoryview) else data:
            _fill(fd, chunk, fsync=False)
        if fsync:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink(tmp)
        raise
    os.close(fd)
    _rename(tmp, path)


def _keep_mode(fd: int, path: str) -> bool:
    """Give `fd` the mode of the file at `path`, if there is one."""
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        return False
    os.fchmod(fd, mode)
    return True


def _fill(fd: int, data: bytes, fsync: bool) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    if fsync:
        os.fsync(fd)


def _rename(tmp: str, path: str) -> None:
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def atomic_write_chunks(path: str | os.PathLike[str], chunks: Iterable[bytes], *, fsync: bool = True) -> None:
    """As atomic_write_bytes, for a file made a piece at a time (too big to hold whole: a run's 100,000 tasks).
    The pieces go to a temp file beside `path`, renamed over it once whole; a failure removes it (only a process
    killed while writing leaves it behind, under a `.NAME.*.tmp` name)."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    _write_named(path, folder, chunks, fsync)
    if fsync:
        fsync_dir(folder)


def atomic_write_text(
    path: str | os.PathLike[str], text: str, *, fsync: bool = True, fsync_folder: bool = True
) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync, fsync_folder=fsync_folder)


def atomic_write_json(
    path: str | os.PathLike[str],
    obj: Any,
    *,
    fsync: bool = True,
    fsync_folder: bool = True,
    indent: int | None = 2,
) -> None:
    atomic_write_text(path, dumps_json(obj, indent=indent) + "\n", fsync=fsync, fsync_folder=fsync_folder)


def dumps_json(obj: Any, *, indent: int | None = 2) -> str:
    """Strict JSON (RFC 8259): a number that is not finite (a NaN loss) is written as null, never as the bare
    `NaN` or `Infinity` that strict parsers refuse. Checked by the encoder itself (`allow_nan=False`), so
    the common case costs nothing more; only an object that holds one is walked and encoded again."""
    try:
        return _encoder(indent).encode(obj)
    except ValueError as e:
        if "Out of range float" not in str(e):
            raise
    return json.dumps(
        finite_or_null(obj), indent=indent, default=_finite_default, ensure_ascii=False, allow_nan=False
    )


@functools.lru_cache(maxsize=8)
def _encoder(indent: int | None) -> json.JSONEncoder:
    """json.dumps's encoder for dumps_json, made once (json.dumps makes one per call when given options)."""
    return json.JSONEncoder(indent=indent, default=json_default, ensure_ascii=False, allow_nan=False)


def finite_or_null(o: Any) -> Any:
    """`o` with every float that is not finite replaced by None (in dicts, lists and tuples)."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: finite_or_null(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [finite_or_null(v) for v in o]
    return o


def _finite_default(o: Any) -> Any:
    return finite_or_null(json_default(o))


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


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Make a file's data durable, if it is still there."""
    _fsync(path, os.O_RDONLY | os.O_CLOEXEC)


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Make the names created or replaced in `folder` durable (a rename is only as durable as its folder)."""
    _fsync(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def fsync_files(paths: Collection[str | os.PathLike[str]], folder: str | os.PathLike[str]) -> None:
    """Make many files in `folder` durable, then the names in it. Past a few files, one syncfs(2) of the
    filesystem replaces an fsync per file: on a journaled filesystem each fsync is a journal commit, so 500
    signals cost 500 commits (0.6 s on this machine) against one. Where syncfs is missing, one by one."""
    if len(paths) > _SYNCFS_FROM and _syncfs(folder):
        return
    for path in paths:
        fsync_file(path)
    fsync_dir(folder)


_SYNCFS_FROM = 8


def _syncfs(folder: str | os.PathLike[str]) -> bool:
    """syncfs(2) on the filesystem holding `folder`; False when it cannot be done (not Linux, no libc)."""
    libc = _libc()
    if libc is None:
        return False
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return libc.syncfs(fd) == 0
    finally:
        os.close(fd)


@functools.cache
def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syncfs.argtypes = [ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


def _fsync(path: str | os.PathLike[str], flags: int) -> None:
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
