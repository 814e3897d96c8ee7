"""GPU reservations shared by every gputui run of every user on this machine: one map of who holds which GPU.

Free memory lags reservation: a worker loading its model shows little memory for seconds, so two
runs starting together would pick the same free-looking GPU (task-spooler keeps a used-GPU map for
the same reason). Each GPU has a lock file; a run claims a GPU with an flock on it and hands the open
file to the task's waiter, which lets its worker inherit it. The kernel keeps the claim while any of
them holds the file, so it lasts exactly as long as some process of that task lives, however they end,
and no stale claim can outlive them.

Tasks of one run sharing a GPU (`[resources] share_gpu = true`, engine/packing.py). An flock belongs to an open
file description, not to a process: every descriptor dup()ed from it, inherited by a child or passed over a
socket (SCM_RIGHTS, as the claim reaches a waiter) shares the one lock, which the kernel drops only when the last
of them is closed. So a run that packs tasks onto a GPU claims it once, exclusively, as any run does, and keeps
its own descriptor of that claim (`share`); each task it adds gets a dup of it (`share` again), handed to the
task's waiter as a claim of its own is. Then:

- another run (of any user, any gputui) never gets the GPU meanwhile: its claim is a new open file description
  and its exclusive flock fails while any descriptor of ours is open, exactly as against a task alone on it;
- the claim lasts as long as some process of a task on that GPU lives, however they end, as a lone task's does;
  the scheduler's own descriptor only adds its life to theirs while it may still add tasks, and it closes it at
  its next turn once none of its tasks is left on the GPU;
- if the scheduler dies, its descriptor goes with it and the tasks' copies keep the claim, with no gap: it
  never was a second lock that could lapse between two holders. A scheduler started again adopts the tasks but
  cannot get a descriptor of their claim (a new open() is a new description, which their lock refuses), so it
  adds no task to that GPU until they end, then claims it afresh: sharing resumes, one GPU at a time;
- a run never shares a GPU with its own older tasks by reopening the file (that would fail like any other
  claim): only descriptors dup()ed from the one claim share it, so "the same run" is the kernel's own fact, not
  a note anyone could write.

Where the lock files are (`lock_place`):

- `$GPUTUI_LOCK_DIR` when set (made mode 1777 if missing), files `<gpu>.lock`;
- else `/var/tmp`, files `gputui-gpu-<gpu>.lock`: the one folder every Linux machine has that every user may
  write to, that is owned by root and sticky (1777: no one deletes or renames another user's file), that is on
  disk and per machine (not a per-user tmpfs like /run/user, not /run, which users may not write, not /dev/shm,
  whose files logind removes when their owner logs out). The lock files sit in it directly, not in a folder of
  their own: such a folder would be owned by whoever made it first, who could then delete everyone's lock files
  (the sticky bit does not hold back a folder's owner). The GPU's UUID names its file, so even a /var/tmp shared
  between machines would not mix two machines' GPU 0. A claim needs nothing to survive a reboot (no process
  does); the files only need to stay while they are held, and /var/tmp is aged by its modification time only
  after 30 days (systemd-tmpfiles; a note is rewritten at every claim, so only a single task held for 30 days
  is at risk: an admin may exclude them with `x /var/tmp/gputui-gpu-*` in tmpfiles.d).
- a folder that is not safe to share (world-writable without the sticky bit, or owned by another user who is
  not root) is refused in one line (`warning`), and the runs of this user reserve among themselves only, in
  `~/.cache/gputui/<host>/gpu-locks`, as gputui did before reservations were machine-wide (a folder an older
  gputui left there is simply no longer used).

Lock files are made readable and writable by all (0666, set after creating: the umask would narrow it), so any
user can flock them and write the note that says who holds it (user, uid, host, run, task, since). Anyone may
overwrite a note: it only says who holds the GPU, the flock is the claim, and a user who wants to bypass gputui
can run on any GPU anyway; reservations keep honest runs apart, they are no security boundary.

Simulated GPUs are private to their run unless `--simulate shared:...` (gpus/simulated.py): their locks live in
the run directory (`run_lock_dir`), so no other run, of this user or another, sees or waits for them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import pwd
import re
import socket
import stat
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from gputui.gpus.probe import GpuSnapshot

NOTE_SIZE = 1024
SHARED_DIR = Path("/var/tmp")
SHARED_PREFIX = "gputui-gpu-"
USER_TURN_WAIT_S = 5.0  # the longest a run waits for another run of its user to finish claiming


def private_dir() -> Path:
    """This user's own folder (runs of this user only), used where the shared one is not safe."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "gputui" / socket.gethostname() / "gpu-locks"


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid with no name (a container's)
        return f"uid {uid}"


def unsafe_reason(folder: Path, uid: int | None = None) -> str | None:
    """Why `folder` may not hold lock files shared with other users (None: it may; also when it is missing)."""
    uid = os.getuid() if uid is None else uid
    try:
        st = os.stat(folder)
    except FileNotFoundError:
        return None
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a folder"
    if st.st_uid not in (0, uid):
        return f"is owned by {user_name(st.st_uid)} (neither root nor you), who could delete your lock files"
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        return "is writable by everyone without the sticky bit (anyone could delete your lock files)"
    if not os.access(folder, os.W_OK | os.X_OK):
        return "is not writable by you"
    return None


def lock_place() -> tuple[Path, str, bool, str | None]:
    """(folder, file name prefix, shared with other users, a one-line warning where the shared folder was
    refused and this user's own folder is used instead)."""
    env = os.environ.get("GPUTUI_LOCK_DIR")
    folder, prefix = (Path(env), "") if env else (SHARED_DIR, SHARED_PREFIX)
    why = unsafe_reason(folder)
    if why is None:
        return folder, prefix, True, None
    fallback = private_dir()
    warning = (
        f"GPU reservations: {folder} {why}; refusing to share it, so this user's runs reserve GPUs among "
        f"themselves only (in {fallback}), not against other users' runs"
    )
    return fallback, "", False, warning


def run_lock_dir(run_dir: Path) -> Path:
    """Where a run keeps the locks of its private simulated GPUs."""
    return Path(run_dir) / "gpu-locks"


def gpu_key(gpu: GpuSnapshot) -> str:
    """A file name that names the physical GPU (its UUID), or its index when it has none."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", gpu.uuid) if gpu.uuid else f"gpu-index-{gpu.index}"


def holder_text(note: dict, *, clock: bool = True) -> str:
    """Who holds a GPU, as the panels and `gputui gpus` show it: "alice: runs/sweep shard-3 since 14:02", and what
    the task is doing where its note says ("..., paused, memory freed": `Reservations.mark`); an older gputui's
    note names no user: "run sweep (shard-3)"."""
    task = note.get("task") or "?"
    if not note.get("user"):
        return f"run {note.get('job', '?')} ({task})"
    run_dir = str(note.get("run_dir") or note.get("job") or "?")
    run = "/".join(Path(run_dir).parts[-2:]) if "/" in run_dir else run_dir
    since = note.get("since")
    when = ""
    if clock and isinstance(since, int | float):
        when = f" since {datetime.fromtimestamp(since).strftime('%H:%M')}"
    state = f", {note['state']}" if isinstance(note.get("state"), str) and note["state"] else ""
    return f"{note['user']}: {run} {task}{when}{state}"


class Reservations:
    def __init__(self, folder: Path | None = None, *, prefix: str = "", shared: bool | None = None):
        """`folder`: where the lock files are (a test's, a run's private simulated GPUs'); None: the machine's
        (`lock_place`), whose refusal, if any, is `warning`."""
        self.warning: str | None = None
        if folder is None:
            folder, prefix, shared, self.warning = lock_place()
        self.folder = Path(folder)
        self.shared = bool(shared) if shared is not None else False
        self._prefix = os.path.join(self.folder, prefix)  # paths as strings: `holders` runs every refresh
        self._name_prefix = prefix
        self._made = False

    @classmethod
    def for_probe(cls, probe: object, run_dir: Path | None) -> Reservations | None:
        """The map a probe's GPUs are claimed in: the machine's, or the run's own for private simulated GPUs
        (None: private simulated GPUs with no run, which nobody holds)."""
        if getattr(probe, "private", False):
            return cls(run_lock_dir(run_dir)) if run_dir is not None else None
        return cls()

    def _path(self, key: str) -> str:
        return f"{self._prefix}{key}.lock"

    def _make_folder(self) -> None:
        if self._made:
            return
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            if self.shared:  # ($GPUTUI_LOCK_DIR named a folder not made yet: every user may use it)
                os.chmod(self.folder, 0o1777)
        self._made = True

    def _open(self, path: str) -> int | None:
        """The lock file, opened for writing (made, open to all users where shared, if missing); None where it
        cannot be (another user made it a moment ago and has not opened it to all yet, or it is not a plain
        file). Never follows a link someone left in a shared folder, never blocks on a FIFO; never creates
        over an existing file (fs.protected_regular refuses O_CREAT on another user's file in a sticky
        folder)."""
        flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
        for _ in range(3):
            try:
                fd = os.open(path, flags)
            except FileNotFoundError:
                try:
                    fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o666 if self.shared else 0o600)
                except FileExistsError:
                    continue  # made by another just now: open it
                if self.shared:
                    os.fchmod(fd, 0o666)
            except OSError as e:
                if e.errno in (errno.EACCES, errno.EPERM, errno.ELOOP, errno.ENXIO):
                    return None
                raise
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                return None
            return fd
        return None

    def claim(self, key: str) -> int | None:
        """An open, flocked descriptor for this GPU, or None if another holder has it. The holder then
        says who it is with `annotate`, for `holders` to show."""
        self._make_folder()
        fd = self._open(self._path(key))
        if fd is None:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def claim_some(
        self, gpus: list[GpuSnapshot], need: int, note: dict | None = None
    ) -> tuple[dict[int, int], dict[int, dict]]:
        """Claim up to `need` of these GPUs, in order: ({index: locked fd}, {index: the note of the run that
        holds it (its user, job, run_dir...; empty where unreadable)}) for the ones claimed and the ones another
        run holds. `note`: written on each claim at once (who claims it), so a count of claims never misses it."""
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
                if note is not None:
                    self.annotate(fd, note)
        return claims, foreign

    @contextlib.contextmanager
    def user_turn(self) -> Iterator[None]:
        """Held while this user's claims are counted and made (a box policy's limit per user): two runs of one
        user never both see room for the same last GPU. Best effort: where the file is not this user's own (someone
        else put one there) or stays locked for seconds, the claims go on without it."""
        self._make_folder()
        path = f"{self._prefix}user-{os.getuid()}.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
        except OSError:
            yield
            return
        try:
            st = os.fstat(fd)
            if st.st_uid == os.getuid() and stat.S_ISREG(st.st_mode):
                deadline = time.monotonic() + USER_TURN_WAIT_S
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            break
                        time.sleep(0.01)
            yield
        finally:
            os.close(fd)

    @staticmethod
    def share(fd: int) -> int:
        """Another descriptor of the claim `fd` (the same open file description, so the same lock): for one more
        task on a GPU the run shares, or for the run to keep while it may add more. Closed on exec, as claims
        are: it reaches a waiter over its socket."""
        return os.dup(fd)

    @staticmethod
    def annotate(fd: int, note: dict) -> None:
        """Written over whatever note was there, padded to a fixed size: no truncation (which costs a
        metadata update per task)."""
        data = json.dumps(note | {"since": time.time()}).encode()[:NOTE_SIZE]
        os.pwrite(fd, data.ljust(NOTE_SIZE), 0)

    def mark(self, run_dir: Path, task: str, state: str | None) -> int:
        """Say on the notes of the GPUs that `task` of the run in `run_dir` holds what it is doing ("paused, memory
        freed"; None: nothing more). The claims stay as they are: the flock is the claim, the note only says who
        holds it (and `since` is kept). How many notes were rewritten."""
        if not self.folder.is_dir():
            return 0
        here = str(Path(run_dir).resolve())
        start, n = len(self._prefix), 0
        for path in sorted(str(p) for p in self.folder.glob(f"{self._name_prefix}*.lock")):
            key = path[start : -len(".lock")]
            note = self.holders([key]).get(key)
            if not note or note.get("task") != task or not note.get("run_dir"):
                continue
            if str(Path(note["run_dir"]).resolve()) != here:
                continue
            note = {k: v for k, v in note.items() if k != "state"} | ({"state": state} if state else {})
            fd = self._open(path)
            if fd is None:
                continue
            try:
                os.pwrite(fd, json.dumps(note).encode()[:NOTE_SIZE].ljust(NOTE_SIZE), 0)
                n += 1
            finally:
                os.close(fd)
        return n

    def holders(self, keys: list[str]) -> dict[str, dict]:
        """Who holds each of these GPUs now (only those that are held)."""
        held: dict[str, dict] = {}
        for key in keys:
            try:
                fd = os.open(self._path(key), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    note = json.loads(os.pread(fd, NOTE_SIZE, 0).strip(b"\0 \n") or b"{}")
                    held[key] = note if isinstance(note, dict) else {}
                except ValueError:
                    held[key] = {}
            finally:
                os.close(fd)
        return held

    def held_by_user(self, keys: list[str], uid: int | None = None) -> int:
        """How many of these GPUs runs of user `uid` (this one) hold now, as their notes say."""
        uid = os.getuid() if uid is None else uid
        return sum(1 for note in self.holders(keys).values() if note.get("uid") == uid)


def claim_note(run_dir: Path, job: str, scheduler_id: str, task: str | None = None) -> dict:
    """What a claim says of its holder: the user (name and uid), the host, the run, its task, its scheduler."""
    uid = os.getuid()
    return {
        "user": user_name(uid),
        "uid": uid,
        "host": socket.gethostname(),
        "run_dir": str(run_dir),
        "job": job,
        "scheduler_id": scheduler_id,
        "pid": os.getpid(),
        "task": task,
    }
