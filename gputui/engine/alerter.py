"""Raising an alert: append it to alerts.jsonl, and hand it to the job's `[alerts].command`.

The command runs through the shell with the alert as one JSON object on its stdin, in its own session,
fire-and-forget: the scheduler never waits for it (it is reaped on later turns), one that runs past
COMMAND_TIMEOUT_S is killed, and its failure is said and logged, never fatal. Its output goes to
`logs/alert-command.log`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from gputui.rundir import alerts_file

COMMAND_TIMEOUT_S = 30.0
MAX_RUNNING = 4  # commands at once; more alerts wait their turn (a burst of failures must not fork a storm)
MAX_QUEUED = 200  # beyond this, alerts still reach alerts.jsonl but not the command
CLOSE_WAIT_S = 5.0  # at the end of a run, how long commands still running are given before being left


class Alerter:
    def __init__(
        self,
        path: Path,
        command: str | None,
        *,
        cwd: Path,
        env: dict[str, str],
        log_path: Path,
        say: Callable[[str], None],
    ) -> None:
        self.path = path
        self.command = command
        self.cwd = cwd
        self.env = env
        self.log_path = log_path
        self.say = say
        self.running: list[tuple[subprocess.Popen, float, str]] = []  # (process, deadline, what)
        self.queue: deque[dict] = deque()
        self._said_file_error = False

    def emit(self, event: dict) -> None:
        try:
            alerts_file.append(self.path, event)
        except OSError as e:
            if not self._said_file_error:
                self.say(f"cannot write alerts to {self.path}: {e}; the run goes on")
                self._said_file_error = True
        if self.command:
            if len(self.queue) < MAX_QUEUED:
                self.queue.append(event)
            self.poll()

    def poll(self) -> None:
        """Reap finished commands, kill those past their time, start queued ones. Never blocks."""
        now = time.monotonic()
        for entry in list(self.running):
            proc, deadline, what = entry
            code = proc.poll()
            if code is None and now < deadline:
                continue
            if code is None:
                _kill_group(proc)
                self.say(f"alert command for {what} ran past {COMMAND_TIMEOUT_S:g}s and was killed")
            elif code != 0:
                self.say(f"alert command for {what} failed (exit {code}); its output is in {self.log_path}")
            self.running.remove(entry)
        while self.queue and len(self.running) < MAX_RUNNING:
            self._start(self.queue.popleft())

    def close(self) -> None:
        """At the end of a run: give commands still due a few seconds, then leave them to finish alone."""
        deadline = time.monotonic() + CLOSE_WAIT_S
        while (self.running or self.queue) and time.monotonic() < deadline:
            self.poll()
            time.sleep(0.02)
        if self.running:
            self.say(f"{len(self.running)} alert command(s) still running are left to finish on their own")
        if self.queue:
            self.say(f"{len(self.queue)} alert(s) not given to the alert command (all are in {self.path})")

    def _start(self, event: dict) -> None:
        what = f"{event['kind']}" + (f" {event['task_id']}" if event.get("task_id") else "")
        try:
            with tempfile.TemporaryFile() as stdin, open(self.log_path, "ab") as log:
                stdin.write(json.dumps(event, ensure_ascii=False).encode() + b"\n")
                stdin.seek(0)  # a file, not a pipe: a command that never reads its stdin cannot block us
                proc = subprocess.Popen(
                    self.command,  # type: ignore[arg-type]
                    shell=True,
                    cwd=self.cwd,
                    env=self.env,
                    stdin=stdin,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as e:
            self.say(f"alert command for {what} could not start: {e}")
            return
        self.running.append((proc, time.monotonic() + COMMAND_TIMEOUT_S, what))


def _kill_group(proc: subprocess.Popen) -> None:
    """Our own child, not yet reaped (so its pid, and its session's group id, cannot have been reused)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        proc.wait(timeout=1.0)
    except subprocess.TimeoutExpired:  # stuck in the kernel: it is reaped by whoever outlives it
        pass
