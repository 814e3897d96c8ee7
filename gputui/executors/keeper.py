"""The keeper: spawns this scheduler's workers, reaps them, and records how each one ended.

    scheduler ──requests (stdin)──► keeper (own session) ──posix_spawn──► workers (own process groups)
              ◄──records (stdout)──      └──► journal (same records, for whoever comes next)

One keeper per scheduler instance. It appends a `start` record as soon as a worker exists and an
`exit` record when it ends, so a scheduler that crashed, was killed or lost its terminal learns on
restart how every worker ended without re-running it. When the scheduler goes away (its end of the
request pipe closes) the keeper stays until its last worker has ended, then exits.

The keeper's own environment carries no ownership tag (only the workers' do), so a tag scan finds
workers and never the keeper. It is small and single-threaded; posix_spawn (vfork) and one append
per record keep the cost per task near that of `xargs -P`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from gputui.executors.journal import append
from gputui.wakeup import Wakeup

_DEFAULT_SIGNALS = tuple(signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP})


class Keeper:
    def __init__(self, requests: int, events: int, journal: int):
        self.requests = requests
        self.events = events
        self.journal = journal
        self.events_open = True
        self.children: dict[int, tuple[str, int]] = {}
        self.buffer = b""
        self.base_env = dict(os.environ)  # the scheduler's; each request adds the worker's own variables

    def record(self, *fields: object) -> None:
        try:
            append(self.journal, *fields)  # first: the journal must know whatever the scheduler hears
        except OSError as e:  # e.g. disk full: the scheduler still hears it, and the keeper goes on
            print(f"gputui keeper: cannot write the journal: {e}", file=sys.stderr, flush=True)
        if self.events_open:
            try:
                append(self.events, *fields)
            except OSError:  # the scheduler is gone; the journal still tells the story
                self.events_open = False

    def spawn(self, req: dict) -> None:
        """Start one worker; any failure becomes that attempt's exit 127, never the keeper's end."""
        task, n, argv = req["task"], req["n"], req["argv"]
        log = None
        try:
            log = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            pid = os.posix_spawn(
                argv[0],
                argv,
                self.base_env | req["env"],
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, log, 1),
                    (os.POSIX_SPAWN_DUP2, log, 2),
                ],
                setpgroup=0,
                setsigdef=_DEFAULT_SIGNALS,  # ignored signals would stay ignored across exec
            )
        except OSError as e:
            if log is not None:
                os.write(log, f"gputui: cannot run {argv[0]!r} in {os.getcwd()}: {e.strerror}\n".encode())
            else:
                print(f"gputui keeper: cannot open {req['log']}: {e}", file=sys.stderr, flush=True)
            self.record("exit", task, n, 127, time.time())
            return
        finally:
            if log is not None:
                os.close(log)
        self.children[pid] = (task, n)
        self.record("start", task, n, pid)

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)  # no WUNTRACED: paused is not ended
            except ChildProcessError:
                return
            if pid == 0:
                return
            task_n = self.children.pop(pid, None)
            if task_n is not None:
                self.record("exit", *task_n, os.waitstatus_to_exitcode(status), time.time())

    def read_requests(self) -> bool:
        """Spawn what was asked; False once the scheduler has closed its end."""
        try:
            data = os.read(self.requests, 1 << 16)
        except BlockingIOError:
            return True
        if not data:
            return False
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                req = json.loads(line)
            except ValueError:
                print(f"gputui keeper: bad request {line[:200]!r}", file=sys.stderr, flush=True)
                continue
            self.spawn(req)
        return True

    def run(self) -> None:
        wakeup = Wakeup()
        signal.signal(signal.SIGCHLD, lambda *_: None)
        os.set_blocking(self.requests, False)
        listening = True
        while listening or self.children:
            ready = wakeup.wait([self.requests] if listening else [], 1.0)
            self.reap()  # also on timeout: a missed wake-up never strands an exit
            if self.requests in ready:
                listening = self.read_requests()
                self.reap()


def main() -> None:
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # a Ctrl-C or a lost terminal must not orphan exit statuses
    journal = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    Keeper(sys.stdin.fileno(), sys.stdout.fileno(), journal).run()


if __name__ == "__main__":
    main()
