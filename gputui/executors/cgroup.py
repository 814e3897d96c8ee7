"""A cgroup per attempt, where the machine allows it (cgroup v2 with `cgroup.kill`, writable by us).

A process cannot leave its cgroup on its own, whatever it does to its environment, session or parentage
(it may only move into a cgroup made below it), so an attempt's cgroup with the cgroups below it is the
complete list of its processes, and `cgroup.kill` ends them all at once. The waiter creates it, steps into
it just long enough to spawn the worker (so the worker is born inside, before it can fork), and steps back
out, so pausing or killing the attempt never touches the waiter. Where cgroups cannot be had,
`CgroupHome.open` returns None and gputui relies on the waiter being the subreaper of the attempt's
processes (see ownership.py).

This module is the one place that knows the cgroup file system: where it is mounted, which cgroup a
process is in, who is in one (always with the cgroups below it), and the folders' names.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path


def run_root_name(scheduler_id: str) -> str:
    """The run's cgroup folder, beside the keeper's own cgroup."""
    return f"gputui-{scheduler_id}"


def attempt_name(task_id: str, number: int) -> str:
    """An attempt's cgroup folder, in the run's."""
    return f"{task_id}.{number}"


def _mounts() -> list[tuple[str, str]]:
    """(mount point, file system type) of every mount here, as /proc/self/mounts lists them."""
    try:
        with open("/proc/self/mounts") as f:
            entries = [line.split() for line in f]
    except OSError:
        return []
    return [(_unescape(e[1]), e[2]) for e in entries if len(e) > 2]


def _unescape(point: str) -> str:
    """A mount point as /proc/self/mounts writes it, its space, tab, newline and backslash as octal (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), point)


def mount() -> Path | None:
    """Where the cgroup v2 file system is mounted here (the first mount of it), or None."""
    return next((Path(point) for point, kind in _mounts() if kind == "cgroup2"), None)


def _inside(pid: int | str) -> str | None:
    """A process's cgroup v2 path within the hierarchy (`0::` in /proc/<pid>/cgroup), or None."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return next((line[3:].strip() for line in f if line.startswith("0::")), None)
    except OSError:
        return None


def of(pid: int | str) -> str | None:
    """The cgroup v2 folder a process is in (absolute, under the cgroup2 mount), or None if unknown."""
    base, inside = mount(), _inside(pid)
    return None if base is None or inside is None else str(base / inside.lstrip("/"))


def on_cgroup2(path: str) -> bool:
    """Whether `path` lies in a cgroup v2 file system mounted here: the deepest mount that holds it is one.
    Only there does a missing folder say something (the cgroup was removed)."""
    path = os.path.normpath(path)
    if not os.path.isabs(path):
        return False
    deepest, kind = "", None
    for point, fs in _mounts():  # of mounts on one point, the last listed is the one seen
        if (point == "/" or path == point or path.startswith(point + "/")) and len(point) >= len(deepest):
            deepest, kind = point, fs
    return kind == "cgroup2"


def pids(path: str) -> set[int] | None:
    """Pids in a cgroup and every cgroup below it (a worker may make its own there, but cannot leave the
    attempt's). Empty when the cgroup is gone: it could be removed only once empty, and nothing can join a
    removed one. None when membership cannot be told: it cannot be read, or the path is not in a cgroup file
    system mounted here (a missing folder then says nothing)."""
    found: set[int] = set()
    folders = [path]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as entries:
                folders += [e.path for e in entries if e.is_dir(follow_symlinks=False)]
            found.update(map(int, Path(folder, "cgroup.procs").read_text().split()))
        except FileNotFoundError:  # removed (meanwhile): it holds nothing
            if folder == path and not on_cgroup2(path):
                return None
        except (OSError, ValueError):
            return None
    return found


def attempt_folder(path: str, scheduler_id: str, task_id: str, number: int) -> str | None:
    """The attempt's own cgroup folder, where `path` (a process's cgroup) is it or a cgroup below it:
    `.../gputui-<scheduler id>/<task>.<n>[/...]`; else None."""
    parts = Path(path).parts
    root = run_root_name(scheduler_id)
    if root not in parts[:-1]:
        return None
    i = parts.index(root)
    return str(Path(*parts[: i + 2])) if parts[i + 1] == attempt_name(task_id, number) else None


class CgroupHome:
    """The run's cgroup folder (beside the keeper's own cgroup) and the way back to the keeper's."""

    def __init__(self, root: Path, home_procs: int):
        self.root = root
        self.home_procs = home_procs
        self._below = f"{root}/"  # an attempt's cgroup is this and its name: made and entered for every attempt

    @classmethod
    def open(cls, scheduler_id: str) -> CgroupHome | None:
        if os.environ.get("GPUTUI_NO_CGROUP"):
            return None
        base = of("self")  # the keeper's own cgroup
        if base is None:
            return None
        root = Path(base) / run_root_name(scheduler_id)
        try:
            root.mkdir(exist_ok=True)
            if not (root / "cgroup.kill").exists():  # kernels before 5.14
                return None
            home_procs = os.open(Path(base, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
        except OSError:
            return None
        return cls(root, home_procs)

    def close(self) -> None:
        """Remove the run's cgroup folder if no attempt's cgroup is left in it."""
        with contextlib.suppress(OSError):
            self.root.rmdir()

    def spawn_inside(self, name: str, spawn):
        """Run `spawn()` with this process inside a new cgroup `name`; returns (its result, the cgroup
        path or None when the cgroup could not be used)."""
        path = self._below + name
        try:
            try:  # (not contextlib.suppress: done for every attempt)
                os.mkdir(path)
            except FileExistsError:
                pass
            procs = os.open(f"{path}/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(procs, b"0")
            finally:
                os.close(procs)
        except OSError:
            with contextlib.suppress(OSError):
                os.rmdir(path)
            return spawn(), None
        try:
            result = spawn()
        finally:
            try:
                os.write(self.home_procs, b"0")
                inside = path
            except OSError:  # stuck inside: never use it to pause or kill, that would hit the waiter too
                inside = None
        return result, inside


def members(path: str) -> list[int]:
    """Pids in a cgroup and the cgroups below it (none where that cannot be told)."""
    return sorted(pids(path) or ())


def kill(path: str) -> bool:
    """SIGKILL every process in a cgroup and the cgroups below it, at once; False if that could not be asked."""
    try:
        Path(path, "cgroup.kill").write_text("1")
        return True
    except OSError:
        return False


def remove(path: str, wait: float = 2.0) -> bool:
    """Remove an emptied cgroup and the cgroups a worker made below it, deepest first (its last processes
    may take a moment to be released). Whether it is gone."""
    deadline = time.monotonic() + wait
    while True:
        try:
            os.rmdir(path)  # the common case, no cgroup below it: no walk over its files
            return True
        except FileNotFoundError:
            return True
        except OSError:
            pass
        try:
            for folder, _, _ in os.walk(path, topdown=False):
                os.rmdir(folder)
            return True
        except FileNotFoundError:
            continue  # removed meanwhile (or already): tried again, which ends at once once it is gone
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)


class Orphans:
    """Cgroups of attempts whose waiter died before it could remove them (it does, otherwise): each removed
    once its last process is released, tried again every turn until then, and with the last of them the run
    folder of the scheduler that made them, if that was an earlier one (this scheduler's own folder is empty
    between attempts and its keeper removes it at the end). Other runs' folders are never looked at."""

    def __init__(self, scheduler_id: str):
        base = of("self")  # the keeper, our child, makes its folder beside our own cgroup
        self.own_root = os.path.join(base, run_root_name(scheduler_id)) if base else None
        self.waiting: set[str] = set()

    def add(self, path: str) -> None:
        self.waiting.add(path)
        self.sweep()

    def sweep(self, wait: float = 0.0) -> None:
        """`wait`: for all of them together, at most."""
        deadline = time.monotonic() + wait
        for path in list(self.waiting):
            if not remove(path, wait=max(0.0, deadline - time.monotonic())):
                continue
            self.waiting.discard(path)
            root = os.path.dirname(path)
            if root != self.own_root and os.path.basename(root).startswith(run_root_name("")):
                with contextlib.suppress(OSError):  # another attempt's cgroup is still in it: its removal retries
                    os.rmdir(root)
