"""Which processes are ours, and the only way gputui ever signals one.

A process is identified by its pid and its start time in clock ticks since boot, read from
/proc/<pid>/stat: exact (no tolerance), immune to clock steps, and different for a reused pid.

gputui signals a process only when one of these holds, checked again just before kill(2):
- it is an attempt's recorded worker: pid and start time as its waiter (its parent) recorded them;
- it descends from an attempt's recorded waiter or worker (the waiter is a child subreaper, so
  even a double-forked daemon stays its descendant while it lives);
- it is in the attempt's own cgroup or a cgroup below it (a worker may make one there), where the machine
  lets gputui create one: membership is only ever read through cgroup.pids, which counts those below,
  and `cgroup.kill` reaches them too.
- on a cluster's node, where the attempt has neither waiter nor cgroup: it descends from the command its
  runner started, or carries the attempt's tags *and* the mark its runner put in the command's environment
  (its own pid and start time, and a nonce), which a look-alike or another attempt does not (node_tree.py).
- in the app's monitor, a process the user picked and confirmed (a dialog naming pid, user and command) that
  belongs to the user running gputui: same uid (real, effective and saved) and same (pid, start time) as when
  it was picked, both read again just before kill(2) (`gputui.views.processes.end_process`). Another user's
  process is never signalled, even when gputui runs as root.
The environment tags (`GPUTUI_SCHEDULER_ID`, `GPUTUI_TASK_ID`, `GPUTUI_ATTEMPT`) alone never make a
process a target: anyone can copy them. They are used only to *notice* that something of a task may
still live (so it is never launched twice), never to signal it; and where the attempt had a cgroup, not
even that: membership decides (see `AttemptProcesses.sort_tagged`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from gputui.executors import cgroup as cgroups

TAG_SCHEDULER = "GPUTUI_SCHEDULER_ID"
TAG_TASK = "GPUTUI_TASK_ID"
TAG_ATTEMPT = "GPUTUI_ATTEMPT"


def new_scheduler_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class ProcessRef:
    pid: int
    start: int  # start time in clock ticks since boot: pid + start name one process, whatever pid reuse does


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start ticks) from /proc/<pid>/stat, or None if there is no such process."""
    try:  # os.open, not open(): no buffer, no tty probe, no fstat (read per launch, and per process looked at)
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)  # one read: the kernel makes the whole line at once
    except OSError:
        return None
    finally:
        os.close(fd)
    fields = data[data.rfind(b")") + 2 :].split()  # the command name may hold spaces and parentheses
    return fields[0].decode(), int(fields[1]), int(fields[19])


def start_of(pid: int) -> int | None:
    """A process's start time in ticks, zombies included (a waiter reads its child's even if it already exited)."""
    st = _stat(pid)
    return None if st is None else st[2]


def ref_of(pid: int) -> ProcessRef | None:
    st = _stat(pid)
    return None if st is None or st[0] == "Z" else ProcessRef(pid, st[2])


def alive(ref: ProcessRef, *, zombies: bool = False) -> bool:
    """True if `ref` still names exactly that process, and it has not ended (zombies have, unless
    `zombies`: an ended process its parent has not collected yet)."""
    st = _stat(ref.pid)
    return st is not None and st[2] == ref.start and (zombies or st[0] not in ("Z", "X"))


def living(pid: int) -> tuple[ProcessRef, int] | None:
    """A living process (not a zombie) and its parent's pid, from one read of its stat."""
    st = _stat(pid)
    return None if st is None or st[0] in ("Z", "X") else (ProcessRef(pid, st[2]), st[1])


def environ(pid: int, holding: bytes = b"") -> dict[str, str] | None:
    """A process's environment; None if it cannot be read, or does not hold `holding` (then it is not parsed:
    a scan of every process reads each one)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            data = f.read()
    except OSError:
        return None
    if holding not in data:
        return None
    pairs = (item.split(b"=", 1) for item in data.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def tags(pid: int) -> tuple[str | None, str | None, str | None]:
    """(scheduler id, task id, attempt) from a process's environment; Nones if unreadable."""
    env = environ(pid) or {}
    return env.get(TAG_SCHEDULER), env.get(TAG_TASK), env.get(TAG_ATTEMPT)


class Tagged(NamedTuple):
    task: str
    attempt: str | None  # as the tag says: not necessarily a number
    ref: ProcessRef


def scan_tagged(scheduler_id: str, task_ids: Iterable[str] | None = None) -> list[Tagged]:
    """Live processes carrying this scheduler's tag (of these tasks), with the task and attempt their tags
    name (one /proc scan, each environment read once). For noticing only: a tag can be forged, so these are
    never signalled on the strength of it."""
    wanted = None if task_ids is None else set(task_ids)
    found: list[Tagged] = []
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        env = environ(int(name)) or {}
        task = env.get(TAG_TASK, "")
        if env.get(TAG_SCHEDULER) != scheduler_id or not task or (wanted is not None and task not in wanted):
            continue
        ref = ref_of(int(name))
        if ref is not None:
            found.append(Tagged(task, env.get(TAG_ATTEMPT), ref))
    return found


def find_tagged(scheduler_id: str, task_ids: Iterable[str] | None = None) -> dict[str, list[ProcessRef]]:
    """The processes scan_tagged finds, by task id."""
    found: dict[str, list[ProcessRef]] = {}
    for t in scan_tagged(scheduler_id, task_ids):
        found.setdefault(t.task, []).append(t.ref)
    return found


def tagged_as(scheduler_id: str, task_id: str, number: int) -> list[ProcessRef]:
    """Live processes carrying exactly this attempt's tags (noticing only, as for scan_tagged)."""
    return [t.ref for t in scan_tagged(scheduler_id, [task_id]) if t.attempt == str(number)]


def children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:  # a kernel without CONFIG_PROC_CHILDREN: scan
        return [int(n) for n in os.listdir("/proc") if n.isdigit() and (_stat(int(n)) or ("", 0))[1] == pid]


def descendants(roots: Iterable[ProcessRef]) -> list[ProcessRef]:
    """Every living descendant of the roots that are still exactly those processes (one /proc scan)."""
    roots = [r for r in roots if alive(r)]
    if not roots:
        return []
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                children.setdefault(st[1], []).append(int(name))
    found: dict[int, ProcessRef] = {}
    todo = [r.pid for r in roots]
    while todo:
        for pid in children.get(todo.pop(), []):
            ref = ref_of(pid)
            if ref is not None and pid not in found:
                found[pid] = ref
                todo.append(pid)
    return sorted(found.values(), key=lambda r: (r.start, r.pid))


def lineage(pid: int) -> list[ProcessRef]:
    """The process and its ancestors, nearest first (a few reads, not a /proc scan): to tell whose a
    handful of processes (those on a GPU) are."""
    chain: list[ProcessRef] = []
    while pid > 1 and len(chain) < 64:
        st = _stat(pid)
        if st is None or st[0] in ("Z", "X"):
            break
        chain.append(ProcessRef(pid, st[2]))
        pid = st[1]
    return chain


def cgroup_members(cgroup: str | None) -> list[ProcessRef]:
    """Processes in an attempt's cgroup or below it (empty if it has none, it is gone or unreadable)."""
    return _refs(cgroups.pids(cgroup) if cgroup else None) or []


def _refs(pids: set[int] | None) -> list[ProcessRef] | None:
    return None if pids is None else [r for r in map(ref_of, sorted(pids)) if r is not None]


@dataclass(frozen=True)
class AttemptProcesses:
    """What gputui recorded of one attempt: enough to find every process of it, and nothing else."""

    waiter: ProcessRef | None
    worker: ProcessRef | None
    cgroup: str | None

    def members(self) -> list[ProcessRef] | None:
        """The living processes in the attempt's cgroup or below it; None where it had none or membership
        cannot be told (see cgroup.pids), empty where its cgroup is gone."""
        return _refs(cgroups.pids(self.cgroup)) if self.cgroup else None

    def tree(self) -> list[ProcessRef]:
        """The attempt's processes, parents first: its worker and every descendant of its waiter or
        worker, and every member of its cgroup. Never the waiter itself."""
        refs: dict[int, ProcessRef] = {}
        if self.worker is not None and alive(self.worker):
            refs[self.worker.pid] = self.worker
        for ref in descendants(r for r in (self.waiter, self.worker) if r is not None):
            refs[ref.pid] = ref
        for ref in self.members() or ():
            refs[ref.pid] = ref
        if self.waiter is not None:
            refs.pop(self.waiter.pid, None)
        return sorted(refs.values(), key=lambda r: (r.start, r.pid))

    def holds(self, chain: list[ProcessRef]) -> bool:
        """Whether the process whose `lineage` this is belongs to the attempt: tree()'s rule, asked of one."""
        if not chain or chain[0] == self.waiter:
            return False
        if any(ref == self.worker or ref == self.waiter for ref in chain):
            return True
        return chain[0] in (self.members() or ())

    def sort_tagged(self, tagged: list[ProcessRef]) -> tuple[list[ProcessRef], list[ProcessRef]]:
        """Processes carrying this attempt's tags, as (may be its own, cannot be). Where the attempt had a
        cgroup that can be read, membership decides: one outside carries copied tags, and one inside is
        the attempt's, provably, so it is in tree() and in neither list. Without a cgroup (or when it
        cannot be read) a tag cannot be checked: every tagged process may be its own."""
        members = cgroups.pids(self.cgroup) if self.cgroup else None
        if members is None:
            return list(tagged), []
        return [], [r for r in tagged if r.pid not in members]

    def kill_cgroup(self) -> bool:
        """SIGKILL every process in the attempt's cgroup and below it at once (nothing escapes by forking)."""
        if not self.cgroup:
            return False
        return cgroups.kill(self.cgroup)


def send(ref: ProcessRef, sig: int) -> bool:
    """Signal `ref` only if it is still exactly that process (pid and start time).

    The check and kill(2) are two steps; a pid freed and reused in between would need the new
    process to start within the same clock tick, which the kernel's pid allocation makes practically
    impossible for the processes we track (pids are not reused until the pid space wraps)."""
    if not alive(ref):
        return False
    try:
        os.kill(ref.pid, sig)
        return True
    except OSError:
        return False


def describe_stuck(ref: ProcessRef) -> str:
    st = _stat(ref.pid)
    if st is None or not alive(ref):
        return f"pid {ref.pid}: gone"
    try:
        name = Path(f"/proc/{ref.pid}/comm").read_text().strip()
    except OSError:
        name = "?"
    if st[0] == "D":
        return (
            f"pid {ref.pid} ({name}) is in uninterruptible sleep (state D, usually stuck I/O or a GPU "
            f"driver call); it will die when that call returns"
        )
    return f"pid {ref.pid} ({name}) survived SIGKILL (state {st[0]})"
