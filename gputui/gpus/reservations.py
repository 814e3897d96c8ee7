"""GPU reservations shared by every gputui run of this user on this machine.

Free memory lags reservation: a worker loading its model shows little memory for seconds, so two
runs starting together would pick the same free-looking GPU (task-spooler keeps a used-GPU map for
the same reason). Each GPU has a lock file; a run claims a GPU with an flock on it and hands the open
file to the task's waiter, which lets its worker inherit it. The kernel keeps the claim while any of
them holds the file, so it lasts exactly as long as some process of that task lives, however they end,
and no stale claim can outlive them.

The folder is `$GPUTUI_LOCK_DIR`, else `~/.cache/gputui/<host>/gpu-locks` (per machine, so a home
shared over NFS never mixes two machines' GPU 0).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import time
from pathlib import Path

from gputui.gpus.probe import GpuSnapshot

NOTE_SIZE = 1024


def lock_dir() -> Path:
    env = os.environ.get("GPUTUI_LOCK_DIR")
    if env:
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "gputui" / socket.gethostname() / "gpu-locks"


def gpu_key(gpu: GpuSnapshot) -> str:
    """A file name that names the physical GPU (its UUID), or its index when it has none."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", gpu.uuid) if gpu.uuid else f"gpu-index-{gpu.index}"


class Reservations:
    def __init__(self, folder: Path | None = None):
        self.folder = folder or lock_dir()
        self._prefix = os.path.join(self.folder, "")  # paths as strings: `holders` runs every refresh
        self._made = False

    def _path(self, key: str) -> str:
        return f"{self._prefix}{key}.lock"

    def claim(self, key: str) -> int | None:
        """An open, flocked descriptor for this GPU, or None if another holder has it. The holder then
        says who it is with `annotate`, for `holders` to show."""
        if not self._made:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._made = True
        fd = os.open(self._path(key), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def claim_some(self, gpus: list[GpuSnapshot], need: int) -> tuple[dict[int, int], dict[int, dict]]:
        """Claim up to `need` of these GPUs, in order: ({index: locked fd}, {index: the note of the run that
        holds it (its job, run_dir...; empty where unreadable)}) for the ones claimed and the ones another run
        holds."""
        claims: dict[int, int] = {}
        foreign: dict[int, dict] = {}
        for gpu in gpus:
            if len(claims) >= need:
                break
            key = gpu_key(gpu)
            fd = self.claim(key)
            if fd is None:
                foreign[gpu.index] = self.holders([key]).get(key, {})
            else:
                claims[gpu.index] = fd
        return claims, foreign

    @staticmethod
    def annotate(fd: int, note: dict) -> None:
        """Written over whatever note was there, padded to a fixed size: no truncation (which costs a
        metadata update per task)."""
        data = json.dumps(note | {"since": time.time()}).encode()[:NOTE_SIZE]
        os.pwrite(fd, data.ljust(NOTE_SIZE), 0)

    def holders(self, keys: list[str]) -> dict[str, dict]:
        """Who holds each of these GPUs now (only those that are held)."""
        held: dict[str, dict] = {}
        for key in keys:
            try:
                fd = os.open(self._path(key), os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    held[key] = json.loads(os.pread(fd, NOTE_SIZE, 0).strip() or b"{}")
                except ValueError:
                    held[key] = {}
            finally:
                os.close(fd)
        return held
