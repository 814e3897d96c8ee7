"""One attempt's processes on a cluster's node: what its runner (node_runner.py) pauses, resumes and ends.

A node has no waiter to be the subreaper of the attempt's processes, and the runner (a Ray worker, a Slurm
batch step) makes no cgroup for it, so the runner names them thus:
- the command's first process, as the runner started it (pid and start time), and its living descendants;
- every process carrying the attempt's tags (`GPUTUI_SCHEDULER_ID`, `GPUTUI_TASK_ID`, `GPUTUI_ATTEMPT`) *and*
  the mark the runner puts in the command's environment (`GPUTUI_RUNNER`: the runner's pid and start time,
  and a nonce), with its descendants: a child that started its own session and lost its parent (torchrun
  ranks, vLLM engines do) still carries them.
Nothing else: not a look-alike running the same command, nor a process with another run's or attempt's
tags, nor one with this attempt's tags but not the mark (the attempt's stand-in, where the Slurm node is the
machine that submitted it). Each is signalled through `ownership.send`, which checks its pid and start time
again just before kill(2). A process that lost its parent and scrubbed its environment, or overwrote it (the
`setproctitle` package does, unless SPT_NOENV is set), is beyond reach: where Slurm tracks jobs by cgroup, it
still ends with the job.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from gputui.executors import ownership
from gputui.executors.ownership import TAG_ATTEMPT, TAG_SCHEDULER, TAG_TASK, ProcessRef

TAG_RUNNER = "GPUTUI_RUNNER"
KILL_PASSES = 3  # a tree forking as it is killed: looked at again, this many times at most


class Mark(NamedTuple):
    """What every process of one attempt carries in its environment, on its node."""

    scheduler: str | None
    task: str | None
    attempt: str | None
    runner: str  # "<runner pid>.<its start time>.<nonce>"

    @classmethod
    def of(cls, env: Mapping[str, str]) -> Mark | None:
        """The mark an environment carries (None: no runner's)."""
        runner = env.get(TAG_RUNNER)
        if runner is None:
            return None
        return cls(env.get(TAG_SCHEDULER), env.get(TAG_TASK), env.get(TAG_ATTEMPT), runner)


def new_mark(env: Mapping[str, str]) -> Mark:
    """A mark for the command this process is about to start with `env` (its tags): no other attempt's, on
    this node or in this process (a Ray worker runs attempt after attempt)."""
    me = os.getpid()
    runner = f"{me}.{ownership.start_of(me) or 0}.{secrets.token_hex(4)}"
    return Mark(env.get(TAG_SCHEDULER), env.get(TAG_TASK), env.get(TAG_ATTEMPT), runner)


@dataclass(frozen=True)
class Seen:
    """A living process, as one look at /proc found it."""

    ref: ProcessRef
    parent: int
    mark: Mark | None


def members(leader: ProcessRef | None, mark: Mark, seen: Iterable[Seen], me: int) -> list[ProcessRef]:
    """The attempt's processes among `seen`, oldest first: the command's first process (`leader`) if it is
    still exactly that one, every process carrying `mark`, and their descendants; never `me` (the runner)."""
    seen = [s for s in seen if s.ref.pid != me]
    children: dict[int, list[ProcessRef]] = {}
    for s in seen:
        children.setdefault(s.parent, []).append(s.ref)
    roots = [s.ref for s in seen if s.mark == mark or s.ref == leader]
    found = {r.pid: r for r in roots}
    todo = [r.pid for r in roots]
    while todo:
        for ref in children.get(todo.pop(), ()):
            if ref.pid not in found:
                found[ref.pid] = ref
                todo.append(ref.pid)
    return sorted(found.values(), key=lambda r: (r.start, r.pid))


def look(me: int, mark: Mark, leader: ProcessRef | None) -> list[Seen]:
    """Every living process here but `me`, with its parent, and the mark its environment carries if it
    carries `mark`'s runner (no other environment is parsed); none when nothing is the attempt's (no process
    carries the mark, and the command's first process has ended): then no process's parent is read, which
    halves what the look at an attempt's end costs, the usual case."""
    holding = f"{TAG_RUNNER}={mark.runner}\0".encode()
    pids = [int(name) for name in os.listdir("/proc") if name.isdigit() and int(name) != me]
    marks = {pid: Mark.of(env) for pid in pids if (env := ownership.environ(pid, holding)) is not None}
    if mark not in marks.values() and (leader is None or not ownership.alive(leader)):
        return []
    found = []
    for pid in pids:
        alive = ownership.living(pid)
        if alive is not None:
            found.append(Seen(alive[0], alive[1], marks.get(pid)))
    return found


@dataclass
class NodeTree:
    """The attempt this runner started: its command's first process, and the mark its processes carry."""

    leader: ProcessRef | None
    mark: Mark
    me: int = field(default_factory=os.getpid)

    def processes(self) -> list[ProcessRef]:
        return members(self.leader, self.mark, look(self.me, self.mark, self.leader), self.me)

    def signal(self, sig: int) -> list[ProcessRef]:
        """`sig` to the command's process group (as the runner made it: what forks meanwhile is in it) and to
        every process of the attempt; those signalled."""
        if self.leader is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.leader.pid, sig)
        return [ref for ref in self.processes() if ownership.send(ref, sig)]

    def kill(self) -> None:
        """SIGKILL to everything of the attempt, looked for again while a look finds some."""
        for _ in range(KILL_PASSES):
            if not self.signal(signal.SIGKILL):
                return
