"""A cgroup per attempt, where the machine allows it (cgroup v2 with `cgroup.kill`, writable by us).

A process cannot leave its cgroup on its own, whatever it does to its environment, session or
parentage, so an attempt's cgroup is the complete list of its processes, and `cgroup.kill` ends them
all at once. The waiter creates it, steps into it just long enough to spawn the worker (so the worker
is born inside, before it can fork), and steps back out, so pausing or killing the attempt never
touches the waiter. Where cgroups cannot be had, `open_home` returns None and gputui relies on the
waiter being the subreaper of the attempt's processes (see ownership.py).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path


def _mount() -> Path | None:
    try:
        with open("/proc/self/mounts") as f:
            for entry in f:
                parts = entry.split()
                if len(parts) > 2 and parts[2] == "cgroup2":
                    return Path(parts[1])
    except OSError:
        pass
    return None


def _own() -> str | None:
    try:
        with open("/proc/self/cgroup") as f:
            for entry in f:
                if entry.startswith("0::"):
                    return entry[3:].strip()
    except OSError:
        pass
    return None


class CgroupHome:
    """The run's cgroup folder (beside the keeper's own cgroup) and the way back to the keeper's."""

    def __init__(self, root: Path, home_procs: int):
        self.root = root
        self.home_procs = home_procs

    @classmethod
    def open(cls, scheduler_id: str) -> CgroupHome | None:
        if os.environ.get("GPUTUI_NO_CGROUP"):
            return None
        mount, own = _mount(), _own()
        if mount is None or own is None:
            return None
        base = mount / own.lstrip("/")
        root = base / f"gputui-{scheduler_id}"
        try:
            root.mkdir(exist_ok=True)
            if not (root / "cgroup.kill").exists():  # kernels before 5.14
                return None
            home_procs = os.open(base / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
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
        path = self.root / name
        try:
            with contextlib.suppress(FileExistsError):
                path.mkdir()
            with open(path / "cgroup.procs", "w") as procs:
                procs.write("0")
        except OSError:
            with contextlib.suppress(OSError):
                path.rmdir()
            return spawn(), None
        try:
            result = spawn()
        finally:
            try:
                os.write(self.home_procs, b"0")
                inside = str(path)
            except OSError:  # stuck inside: never use it to pause or kill, that would hit the waiter too
                inside = None
        return result, inside


def members(path: str) -> list[int]:
    try:
        return [int(p) for p in Path(path, "cgroup.procs").read_text().split()]
    except OSError:
        return []


def kill(path: str) -> None:
    with contextlib.suppress(OSError):
        Path(path, "cgroup.kill").write_text("1")


def remove(path: str, wait: float = 2.0) -> None:
    """Remove an emptied cgroup (its last processes may take a moment to be released)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() >= deadline:
                return
            time.sleep(0.01)
