"""Local executor: the scheduler's side of the keeper (see keeper.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gputui.executors.journal import AttemptEnds, parse
from gputui.ownership import TAG_ATTEMPT, TAG_SCHEDULER, TAG_TASK, ProcessRef, ref_of


@dataclass(frozen=True)
class LaunchSpec:
    task_id: str
    number: int
    argv: Sequence[str]
    env: Mapping[str, str]  # the worker's own variables (tags, GPUs), on top of the executor's env
    log_path: Path


class LocalExecutor:
    """Starts a keeper on first use; `launch` asks it for a worker, `events` says what happened."""

    def __init__(self, cwd: Path, env: Mapping[str, str], keeper_log: Path, journal: Path):
        self.cwd = cwd
        self.env = {k: v for k, v in env.items() if k not in (TAG_SCHEDULER, TAG_TASK, TAG_ATTEMPT)}
        self.keeper_log = keeper_log
        self.journal = journal
        self.keeper: subprocess.Popen | None = None
        self._buffer = b""
        self._which: dict[str, str] = {}
        self._keeper_ref: tuple[int, ProcessRef | None] | None = None
        self._dead = False  # a launch found the keeper gone: the next `events` says so

    def keeper_ref(self) -> ProcessRef | None:
        """The keeper that will run the next launch (started if need be)."""
        self.start()
        if self._keeper_ref is None or self._keeper_ref[0] != self.keeper.pid:
            ref = ref_of(self.keeper.pid)
            self._keeper_ref = (self.keeper.pid, ref)
        return self._keeper_ref[1]

    def fileno(self) -> int | None:
        return None if self.keeper is None else self.keeper.stdout.fileno()

    def start(self) -> None:
        """Start the keeper now (its start-up overlaps the scheduler's); `launch` would anyway."""
        if self.keeper is None:
            self._start_keeper()

    def launch(self, spec: LaunchSpec) -> None:
        self.start()
        argv = [self._resolve(spec.argv[0]), *spec.argv[1:]]
        request = {
            "task": spec.task_id,
            "n": spec.number,
            "argv": argv,
            "env": dict(spec.env),
            "log": str(spec.log_path),
        }
        try:
            self.keeper.stdin.write((json.dumps(request) + "\n").encode())
            self.keeper.stdin.flush()
        except (BrokenPipeError, ValueError) as e:
            self._dead = True
            raise OSError(f"the keeper process died: {e}") from None

    def events(self) -> dict[tuple[str, int], AttemptEnds] | None:
        """What the keeper reported since the last call; None if it is gone (its attempts must be polled)."""
        if self.keeper is None:
            return {}
        try:
            data = b"" if self._dead else os.read(self.keeper.stdout.fileno(), 1 << 16)
        except BlockingIOError:
            return {}
        if not data:  # it died (it never leaves while we listen): a new one serves the next launch
            self.keeper.wait()
            self.close()
            self._dead = False
            return None
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        news: dict[tuple[str, int], AttemptEnds] = {}
        for line in lines:
            parse(line.decode(), news)
        return news

    def close(self) -> None:
        """Let the keeper go: it stays until its last worker ends, then exits."""
        if self.keeper is not None:
            try:
                self.keeper.stdin.close()
            except OSError:  # BrokenPipe: it is already gone
                pass
            self.keeper.stdout.close()
            self.keeper = None

    def _resolve(self, program: str) -> str:
        """Look a program up on PATH once (posix_spawnp would try every PATH entry for every task)."""
        if os.sep in program:
            return program
        if program not in self._which:
            self._which[program] = shutil.which(program, path=self.env.get("PATH")) or program
        return self._which[program]

    def _start_keeper(self) -> None:
        self.keeper_log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.keeper_log, "ab") as err:
            self.keeper = subprocess.Popen(
                [sys.executable, "-P", "-m", "gputui.executors.keeper", str(self.journal)],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,
            )
        os.set_blocking(self.keeper.stdout.fileno(), False)
