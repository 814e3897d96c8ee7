"""The run directory: where every file of a run lives, and the lock that gives it one scheduler."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import struct
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from gputui.files.atomic import atomic_write_text


class RunLocked(RuntimeError):
    """Another gputui process drives this run directory."""


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def db(self) -> Path:
        return self.root / "state.db"

    @property
    def lock(self) -> Path:
        return self.root / "scheduler.lock"

    @property
    def job_copy(self) -> Path:
        return self.root / "job.toml"

    @property
    def exports(self) -> Path:
        return self.root / "exports"

    @property
    def merge_summary(self) -> Path:
        return self.root / "merge_summary.json"

    # Paths asked for several times per task: their folders are made once (a Path join costs microseconds).
    @cached_property
    def _logs(self) -> Path:
        return self.root / "logs"

    @cached_property
    def events_dir(self) -> Path:
        return self.root / "events"

    @cached_property
    def tasks_dir(self) -> Path:
        return self.root / "tasks"

    @cached_property
    def folders(self) -> tuple[str, str, str]:
        """The logs, events and signals folders as strings: the scheduler names files in them per task, where a
        Path's parsing costs more than the name."""
        return str(self._logs), str(self.events_dir), str(self.signals)

    def log(self, task_id: str, attempt: int) -> Path:
        return self._logs / f"{task_id}.attempt{attempt}.log"

    def events(self, task_id: str, attempt: int) -> Path:
        """What the attempt's worker reports through gputui.hooks (the GPUTUI_EVENTS file), one JSON a line."""
        return self.events_dir / self.events_name(task_id, attempt)

    def events_file(self, task_id: str, attempt: int) -> str:
        """`events` as a string (what a worker is told)."""
        return f"{self.folders[1]}/{self.events_name(task_id, attempt)}"

    @staticmethod
    def events_name(task_id: str, attempt: int) -> str:
        return f"{task_id}.attempt{attempt}.jsonl"

    def task_dir(self, task_id: str) -> Path:
        """A task's own products: metrics.csv, summary.json (and the signal files' folder beside it)."""
        return self.tasks_dir / task_id

    @cached_property
    def signals(self) -> Path:
        return self.root / "signals"

    @property
    def results(self) -> Path:
        """results.csv and results.jsonl: one row per settled trial (sweeps)."""
        return self.root / "results"

    @property
    def alerts(self) -> Path:
        """One JSON line per alert (see alerts.py), appended by the scheduler, tailed by the app."""
        return self.root / "alerts.jsonl"

    @property
    def journal(self) -> Path:
        return self.root / "attempts.journal"

    def make(self) -> None:
        for sub in ("logs", "exports", "events"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)


class RunLock:
    """An flock on the run directory itself: the kernel drops it when its holder dies, however it dies,
    and no file can be deleted or replaced to defeat it. `scheduler.lock` only names the holder.

    The directory is opened close-on-exec, so no keeper, waiter or worker keeps a dead scheduler's lock.
    Its path is claimed too (an abstract socket named after it, dropped as its holder dies): a run
    directory deleted and made again under a scheduler that still drives the old one is not a free one,
    since that scheduler's tasks still write there.
    """

    def __init__(self, paths: RunPaths):
        self.paths = paths
        self._fd: int | None = None
        self._claim: socket.socket | None = None

    def try_acquire(self, role: str) -> bool:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.paths.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            claim.bind(_claim_name(self.paths.root))
            claim.listen(64)  # only so that `path_holder` can ask who it is
        except OSError:  # held by whoever drives the directory this path named before
            claim.close()
            os.close(fd)
            return False
        note = {"pid": os.getpid(), "host": socket.gethostname(), "role": role, "since": time.time()}
        try:
            atomic_write_text(self.paths.lock, json.dumps(note), fsync=False)
        except OSError:  # a read-only run directory: the lock still holds, only the note is missing
            pass
        self._fd, self._claim = fd, claim
        return True

    def acquire(self, role: str, patience: float = 1.0) -> None:
        """Take the lock, waiting briefly: a `status` or control verb may hold it for a moment."""
        deadline = time.monotonic() + patience
        while not self.try_acquire(role):
            if time.monotonic() >= deadline:
                raise RunLocked(self.describe_holder())
            time.sleep(0.05)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._claim is not None:
            self._claim.close()
            self._claim = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> dict | None:
        """Who holds the lock: the note it wrote, unless the kernel names other holders (the note was
        deleted, or left by an earlier holder); then the process the kernel names."""
        try:
            note = json.loads(self.paths.lock.read_text() or "null")
        except (OSError, ValueError):
            note = None
        pids = flock_holders(self.paths.root)
        if not pids or (isinstance(note, dict) and note.get("pid") in pids):
            return note
        return _describe_process(pids[0])

    def describe_holder(self) -> str:
        if not flock_holders(self.paths.root) and (pid := path_holder(self.paths.root)):
            h = _describe_process(pid)
            return (
                f"{self.paths.root} was deleted and made again while gputui (pid {pid}, "
                f"{h.get('role', 'gputui')}) still drives the run that was there, whose tasks still write "
                f"to this path; refusing to start a second scheduler on it. Stop that one first (kill {pid}: "
                "it stops its tasks), then start again."
            )
        h = self.holder() or {}
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h["since"])) if "since" in h else "?"
        return (
            f"{self.paths.root} is already driven by gputui (pid {h.get('pid', '?')} on "
            f"{h.get('host', '?')}, {h.get('role', 'scheduler')} since {since}); refusing to start a second "
            f"scheduler on it. Use `gputui status --run-dir {self.paths.root}` to watch it, or stop it first."
        )

    def is_live(self) -> bool:
        """True when some process holds the lock. Checked with a shared lock, so the holder note
        is left alone; a scheduler starting at this instant waits a moment in `acquire`."""
        if self.held:
            return True
        try:
            fd = os.open(self.paths.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False


def _claim_name(root: Path) -> str:
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:24]
    return f"\0gputui-run-{digest}"


def path_holder(root: Path) -> int | None:
    """The pid of the process that claims the run directory's path (see RunLock), if one does."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.setblocking(False)
        try:
            s.connect(_claim_name(root))
        except OSError:
            return None
        pid, _uid, _gid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        return pid or None


def flock_holders(folder: Path) -> list[int]:
    """Pids of the processes that hold an exclusive flock on `folder`, as /proc/locks lists them."""
    try:
        st = os.stat(folder)
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    wanted = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    pids = []
    for fields in (line.split() for line in lines):
        # "1: FLOCK  ADVISORY  WRITE 9968 fe:00:260072 0 EOF"; a waiter's line has "->" after the number
        if len(fields) < 6 or fields[1:2] != ["FLOCK"] or fields[3] != "WRITE":
            continue
        try:
            major, minor, inode = fields[5].split(":")
            if (int(major, 16), int(minor, 16), int(inode)) == wanted and int(fields[4]) > 0:
                pids.append(int(fields[4]))
        except ValueError:
            continue
    return pids


def _describe_process(pid: int) -> dict:
    import psutil

    try:
        proc = psutil.Process(pid)
        role = "scheduler" if "run" in proc.cmdline() else "gputui"
        return {"pid": pid, "host": socket.gethostname(), "role": role, "since": proc.create_time()}
    except psutil.Error:  # it ended meanwhile, or is another user's
        return {"pid": pid, "host": socket.gethostname()}
