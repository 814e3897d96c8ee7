"""Resident workers: one process takes task after task, keeping what it loaded (a model) between them.

    for task in gputui.hooks.resident_tasks():
        args = parser.parse_args(task.args)   # this task's command-line arguments
        ...                                   # its work; task.fail(reason) if it failed
    # the loop ends when gputui has no more tasks for this worker

Under gputui with `[job] resident = true`, the worker's waiter hands it one task at a time over a socket
(``GPUTUI_RESIDENT`` names its descriptor): the task's command line as gputui filled it for that task, its
placeholders and its variables (``GPUTUI_TASK_ID``, ``GPUTUI_ATTEMPT``, ``GPUTUI_EVENTS``, set in
``os.environ`` for the task, so the other hooks report to that task's attempt). Taking the next task says the
last one ended: its exit status is 0, or the one `fail` gave. Output is flushed first, so each task's lines
land in its own log. An exception that leaves the loop ends the process: the task it was on fails with it,
and gputui starts a new worker for the tasks left. Outside gputui, or in a job that is not resident, the
loop runs once, over the process's own command line: the same script works both ways.

Standard library only (imported inside users' environments, like the rest of gputui.hooks).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

RESIDENT_ENV = "GPUTUI_RESIDENT"  # the descriptor of the socket a resident worker's tasks come through


@dataclass
class ResidentTask:
    """One task for a resident worker: its arguments (`args`, as sys.argv[1:] would be), its whole command
    line (`argv`), its filled placeholders (`values`: low, high, output, attempt, task_id, [params]...)."""

    task_id: str
    attempt: int
    args: list[str]
    argv: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    exit_code: int = 0  # what gputui records as this task's exit status once the next one is taken

    def fail(self, reason: str | None = None, code: int = 1) -> None:
        """This task failed (it is retried as a failed attempt is); the worker goes on with the next one."""
        if reason:
            from gputui import hooks

            hooks.mark_failed(reason)
        self.exit_code = code or 1


def resident() -> bool:
    """True when this process is a resident worker under gputui (its tasks come from its waiter)."""
    return bool(os.environ.get(RESIDENT_ENV))


def resident_tasks(argv: list[str] | None = None) -> Iterator[ResidentTask]:
    """This worker's tasks, one at a time (see the module's docstring). `argv`: the arguments of the one task
    run outside resident mode (default sys.argv[1:])."""
    fd = os.environ.get(RESIDENT_ENV)
    if not fd:
        args = list(sys.argv[1:] if argv is None else argv)
        yield ResidentTask(os.environ.get("GPUTUI_TASK_ID", ""), int(os.environ.get("GPUTUI_ATTEMPT") or 1), args)
        return
    yield from _served(int(fd), len(sys.argv) - 1 if argv is None else len(argv))


def _served(fd: int, nargs: int) -> Iterator[ResidentTask]:
    os.set_inheritable(fd, False)  # a process the worker starts must not hold the waiter's line open
    del os.environ[RESIDENT_ENV]  # nor think itself resident
    channel = socket.socket(fileno=fd)
    with channel:
        while True:
            try:
                message = channel.recv(1 << 22)
            except OSError:
                message = b""
            if not message:  # the waiter is gone, or has no more tasks for us
                return
            ask = json.loads(message)
            os.environ.update(ask["env"])
            argv = list(ask["argv"])
            args = argv[max(0, len(argv) - nargs) :]  # its arguments: as many as this process was started with
            task = ResidentTask(ask["task"], ask["attempt"], args, argv, ask["values"])
            yield task
            _flush()
            done = {"end": task.exit_code, "task": task.task_id, "attempt": task.attempt}
            try:
                channel.send(json.dumps(done).encode())
            except OSError:  # the waiter was killed: our exit status is the record of this task (its keeper's)
                raise SystemExit(task.exit_code) from None


def _flush() -> None:
    """Everything the task wrote reaches its log before its end is told."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
