"""Which processes are ours, and the only way gputui ever signals one.

A process is ours when it carries this run's scheduler id and the task's id in its environment
(set at launch, inherited by descendants even when they start their own session, as torchrun ranks
and vLLM engines do), or when it descends from the task's recorded worker, itself identified by the
pid and start time the store recorded while it carried the tag. Every signal goes through `send`,
which checks pid and start time again just before kill(2).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

TAG_SCHEDULER = "GPUTUI_SCHEDULER_ID"
TAG_TASK = "GPUTUI_TASK_ID"
TAG_ATTEMPT = "GPUTUI_ATTEMPT"

# Start times are wall-clock (boot time + ticks); the boot time the kernel reports moves when the
# clock is stepped, so allow a little. A reused pid would also need our tag to be mistaken for ours.
CTIME_TOLERANCE_S = 1.5


def new_scheduler_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class ProcessRef:
    pid: int
    ctime: float  # psutil create_time: pid + ctime name one process, whatever pid reuse does later


def ref_of(pid: int) -> ProcessRef | None:
    try:
        return ProcessRef(pid, psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def alive(ref: ProcessRef) -> psutil.Process | None:
    """The process if `ref` still names a living process (not a zombie), else None."""
    try:
        p = psutil.Process(ref.pid)
        if abs(p.create_time() - ref.ctime) > CTIME_TOLERANCE_S or p.status() == psutil.STATUS_ZOMBIE:
            return None
        return p
    except psutil.Error:
        return None


def tags(p: psutil.Process) -> tuple[str | None, str | None, str | None]:
    """(scheduler id, task id, attempt) from the process's environment; Nones if unreadable."""
    try:
        env = p.environ()
    except (psutil.Error, OSError):
        return None, None, None
    return env.get(TAG_SCHEDULER), env.get(TAG_TASK), env.get(TAG_ATTEMPT)


def tagged_ref(pid: int, scheduler_id: str, task_id: str, attempt: int | None = None) -> ProcessRef | None:
    """pid + start time of `pid` if it is alive and tagged as this task's (so not a reused pid)."""
    try:
        p = psutil.Process(pid)
        ref = ProcessRef(pid, p.create_time())
    except psutil.Error:
        return None
    sched, task, att = tags(p)
    if sched != scheduler_id or task != task_id or (attempt is not None and att != str(attempt)):
        return None
    return ref


def find_tagged(scheduler_id: str, task_ids: Iterable[str] | None = None) -> dict[str, list[ProcessRef]]:
    """Every live process tagged with this scheduler id, grouped by task id (one /proc scan)."""
    wanted = None if task_ids is None else set(task_ids)
    found: dict[str, list[ProcessRef]] = {}
    me = os.getpid()
    for p in psutil.process_iter(["pid", "create_time"]):
        if p.info["pid"] == me:
            continue
        sched, task, _ = tags(p)
        if sched != scheduler_id or task is None or (wanted is not None and task not in wanted):
            continue
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        found.setdefault(task, []).append(ProcessRef(p.info["pid"], p.info["create_time"]))
    return found


def task_tree(
    scheduler_id: str, task_id: str, root: ProcessRef | None, tagged: dict[str, list[ProcessRef]] | None = None
) -> list[ProcessRef]:
    """The task's processes, parents first: the recorded worker (if still that process and still
    tagged as this task's), its descendants, and anything else tagged as this task's.

    `tagged` is a `find_tagged` result to share one /proc scan between several tasks.
    """
    refs: dict[int, ProcessRef] = {}
    p = alive(root) if root else None
    if p is not None and tags(p)[:2] == (scheduler_id, task_id):
        refs[root.pid] = root
        try:
            for child in p.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    refs[child.pid] = ProcessRef(child.pid, child.create_time())
        except psutil.Error:
            pass
    if tagged is None:
        tagged = find_tagged(scheduler_id, [task_id])
    for ref in tagged.get(task_id, []):
        refs[ref.pid] = ref
    return sorted(refs.values(), key=lambda r: (r.ctime, r.pid))


def send(ref: ProcessRef, sig: int) -> bool:
    """Signal `ref` only if it is still exactly that process (pid and start time)."""
    p = alive(ref)
    if p is None:
        return False
    try:
        p.send_signal(sig)  # psutil re-checks pid reuse itself before kill(2)
        return True
    except psutil.Error:
        return False


def describe_stuck(ref: ProcessRef) -> str:
    p = alive(ref)
    if p is None:
        return f"pid {ref.pid}: gone"
    try:
        status = p.status()
        name = p.name()
    except psutil.Error:
        return f"pid {ref.pid}: gone"
    if status == psutil.STATUS_DISK_SLEEP:
        return (
            f"pid {ref.pid} ({name}) is in uninterruptible sleep (state D, usually stuck I/O or a GPU "
            f"driver call); it will die when that call returns"
        )
    return f"pid {ref.pid} ({name}) survived SIGKILL (state {status})"
