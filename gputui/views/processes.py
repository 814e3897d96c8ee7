"""A task's processes as a tree (worker, its children, daemons in its cgroup), with what each uses.

Only processes ownership's rule attributes to the task are listed (see `RunView.processes`); a process
whose parent is not among them is a root (a daemon that left the worker's tree, found in the cgroup).
Blocking (/proc): call from a thread.

Also the monitor's two process facts: which GPU processes its filter lists (`ProcessFilter`), and the one
rule by which it ends a process (`Target`, `refusal`, `end_process`): a process of the user running
gputui, named in a confirmation, its pid, start time and uid read again just before the signal.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psutil

from gputui.engine.monitor import CpuSampler
from gputui.executors.ownership import (
    TAG_ATTEMPT,
    TAG_SCHEDULER,
    TAG_TASK,
    ProcessRef,
    alive,
    environ,
    ref_of,
    send,
)
from gputui.text_safety import visible


@dataclass(frozen=True)
class TreeRow:
    depth: int
    pid: int
    command: str
    cpu_percent: float | None
    rss: int | None  # bytes
    gpu_memory: int | None  # bytes on GPUs, where the driver lists the pid


def process_tree(
    refs: Sequence[ProcessRef], gpu_memory: Mapping[int, int], cpu: CpuSampler | None = None
) -> list[TreeRow]:
    """Rows parents first, children indented under them (depth), in start order."""
    info: dict[int, tuple[int, str, int | None]] = {}
    for ref in refs:
        try:
            p = psutil.Process(ref.pid)
            with p.oneshot():
                command = visible(" ".join(p.cmdline()) or p.name())  # a worker may rewrite its argv
                info[ref.pid] = (p.ppid(), command, p.memory_info().rss)
        except (psutil.Error, OSError):
            continue
    children: dict[int, list[int]] = {}
    roots = []
    for pid in (r.pid for r in refs if r.pid in info):
        parent = info[pid][0]
        (children.setdefault(parent, []) if parent in info else roots).append(pid)
    rows: list[TreeRow] = []

    def walk(pid: int, depth: int) -> None:
        _, command, rss = info[pid]
        percent = cpu.percent(pid) if cpu is not None else None
        rows.append(TreeRow(depth, pid, command, percent, rss, gpu_memory.get(pid)))
        for child in children.get(pid, []):
            walk(child, depth + 1)

    for pid in roots:
        walk(pid, 0)
    return rows


# -- the monitor's process filter -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessFilter:
    """Which GPU processes the monitor lists: `user:alice gpu:0,1 pid:123 python`. Values of one key are
    alternatives (gpu:0,1 is GPU 0 or 1); keys and words must all hold; a word matches the user or the
    command, case-insensitively."""

    users: frozenset[str] = frozenset()
    gpus: frozenset[int] = frozenset()
    pids: frozenset[int] = frozenset()
    words: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> ProcessFilter:
        """ValueError (saying which) for a gpu: or pid: that is not a number, or a key it does not know."""
        users: set[str] = set()
        gpus: set[int] = set()
        pids: set[int] = set()
        words: list[str] = []
        for token in text.split():
            key, colon, value = token.partition(":")
            if not colon:
                words.append(token.lower())
                continue
            key = key.lower()
            values = [v for v in value.split(",") if v]
            if key in ("user", "u"):
                users.update(values)
            elif key in ("gpu", "g"):
                gpus.update(_numbers(values, "gpu"))
            elif key in ("pid", "p"):
                pids.update(_numbers(values, "pid"))
            else:
                raise ValueError(f"{key}: not a filter (user:NAME gpu:N pid:N, or words of the command)")
        return cls(frozenset(users), frozenset(gpus), frozenset(pids), tuple(words))

    def __bool__(self) -> bool:
        return bool(self.users or self.gpus or self.pids or self.words)

    def matches(self, *, gpu: int, pid: int, user: str, command: str) -> bool:
        if self.gpus and gpu not in self.gpus:
            return False
        if self.pids and pid not in self.pids:
            return False
        if self.users and user not in self.users:
            return False
        said = f"{user} {command}".lower()
        return all(word in said for word in self.words)

    def text(self) -> str:
        """The filter as it would be typed (the panel's title shows it)."""
        parts = []
        if self.users:
            parts.append("user:" + ",".join(sorted(self.users)))
        if self.gpus:
            parts.append("gpu:" + ",".join(map(str, sorted(self.gpus))))
        if self.pids:
            parts.append("pid:" + ",".join(map(str, sorted(self.pids))))
        return " ".join([*parts, *self.words])


def _numbers(values: Sequence[str], key: str) -> set[int]:
    try:
        numbers = {int(v) for v in values}
    except ValueError:
        raise ValueError(f"{key}: expects numbers, e.g. {key}:0,1") from None
    if any(n < 0 for n in numbers):
        raise ValueError(f"{key}: expects numbers of 0 or more")
    return numbers


# -- ending a process from the monitor ------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A process the monitor's user picked to end, as read when they picked it: what the confirmation names,
    and the (pid, start time) that must still hold when the signal goes."""

    ref: ProcessRef
    uid: int | None  # None: could not be read
    user: str
    command: str
    run: str | None = None  # a gputui worker: 'task T (attempt N) of run <scheduler id[:8]>'
    run_dir: str | None = None  # as the worker's environment says (to suggest `gputui kill`), never trusted
    task_id: str | None = None
    scheduler: str | None = None


def read_target(pid: int) -> Target | None:
    """The process now, or None when it is gone. Blocking (/proc): call from a thread."""
    ref = ref_of(pid)
    if ref is None:
        return None
    try:
        p = psutil.Process(pid)
        with p.oneshot():
            uids, user = p.uids(), p.username()
            command = visible(" ".join(p.cmdline()) or p.name())
    except (psutil.Error, OSError):
        return None
    uid = uids.real if uids.real == uids.effective == uids.saved else -1  # set-uid: not simply one user's
    env = environ(pid, TAG_SCHEDULER.encode()) or {}
    scheduler, task, attempt = env.get(TAG_SCHEDULER), env.get(TAG_TASK), env.get(TAG_ATTEMPT)
    run = None
    if scheduler and task:
        run = f"task {task}" + (f" (attempt {attempt})" if attempt else "") + f" of gputui run {scheduler[:8]}"
    if run is None:
        return Target(ref, uid, user, command)
    return Target(ref, uid, user, command, run, env.get("GPUTUI_RUN_DIR"), task, scheduler)


def refusal(target: Target, my_uid: int | None = None) -> str | None:
    """Why the monitor will not signal `target` (None: it may, after a confirmation). Only a process of the
    user running gputui, with one uid throughout (real, effective, saved), is ever signalled: on a shared
    machine, not even root ends another user's process from here."""
    me = os.getuid() if my_uid is None else my_uid
    if target.uid == me:
        return None
    if target.uid == -1:
        return f"pid {target.ref.pid} ({target.user}) runs with another user's rights (set-uid): not signalled"
    who = "root" if me == 0 else "you"
    return f"pid {target.ref.pid} belongs to {target.user}, not to {who}: gputui ends only your own processes" + (
        " (not even root's: this is a shared machine)" if me == 0 else ""
    )


def end_process(target: Target, sig: int) -> str:
    """Send `sig` to `target` if it is still exactly that process (pid and start time, read again now) and
    still of this user (uid read again now); the outcome in words. Blocking: call from a thread."""
    pid = target.ref.pid
    if not alive(target.ref):
        return f"pid {pid} is gone (or its pid now names another process): nothing was signalled"
    now = read_target(pid)
    if now is None or now.ref != target.ref:
        return f"pid {pid} is gone (or its pid now names another process): nothing was signalled"
    if (why := refusal(now)) is not None:
        return why
    name = signal.Signals(sig).name
    if not send(target.ref, sig):  # checks pid and start time once more, just before kill(2)
        return f"pid {pid}: {name} could not be sent (it has ended, or the system refused)"
    return f"{name} sent to pid {pid} ({target.user})"
