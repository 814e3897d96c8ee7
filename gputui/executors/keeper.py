"""The keeper: forks waiters for this scheduler, one per request, and hands each one's channel over.

    scheduler ──"waiter"──► keeper ──fork──► waiter ◄──launch requests + GPU lock fds── scheduler
              ◄──its channel (SCM_RIGHTS), pid, start time──┘            └──► records (wake pipe)

One keeper per scheduler instance, in its own session, so the waiters it forks are not the
scheduler's children and share nothing with it but their channels. It records nothing itself: each
waiter is the parent of its worker and records its start and end (waiter.py). Killing the keeper (or
the keeper and the scheduler together) loses no exit status; a scheduler whose keeper died starts a
new one when it next needs a waiter. When the scheduler closes its end, the keeper exits.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

from gputui import ownership
from gputui.executors.cgroup import CgroupHome
from gputui.executors.journal import exits_copy
from gputui.executors.waiter import Waiter


class Keeper:
    def __init__(self, requests: socket.socket, wake: int, journal: int, exits: int, home: CgroupHome | None):
        self.requests = requests
        self.wake = wake
        self.journal = journal
        self.exits = exits
        self.home = home

    def run(self) -> None:
        while True:
            try:
                asked = self.requests.recv(64)
            except OSError:
                break
            if not asked:
                break  # the scheduler is gone
            self.reap()
            channel, pid = self.fork_waiter()
            try:
                start = ownership.start_of(pid) or 0
                socket.send_fds(self.requests, [f"waiter {pid} {start}".encode()], [channel.fileno()])
            except OSError:
                break
            finally:
                channel.close()  # the scheduler holds the only other end now
        if self.home is not None:
            self.home.close()

    def fork_waiter(self) -> tuple[socket.socket, int]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # the waiter: keep only its own channel, the journal and the wake pipe
            try:
                ours.close()
                self.requests.close()
                Waiter(theirs, self.journal, self.exits, self.wake, self.home).serve()
            finally:
                os._exit(0)
        theirs.close()
        return ours, pid

    @staticmethod
    def reap() -> None:
        """Collect waiters that ended (they end when their scheduler is gone, or when killed)."""
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return


def main() -> None:
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # a Ctrl-C or a lost terminal must not orphan exit statuses
    journal_path, scheduler_id = Path(sys.argv[1]), sys.argv[2]
    journal, exits = (
        os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        for p in (journal_path, exits_copy(journal_path))
    )
    requests = socket.socket(fileno=os.dup(0))
    os.close(0)
    os.open(os.devnull, os.O_RDONLY)  # fd 0 again, so no waiter or worker keeps the scheduler's socket
    os.set_inheritable(1, False)  # the wake pipe: waiters get it by fork, workers never
    Keeper(requests, 1, journal, exits, CgroupHome.open(scheduler_id)).run()


if __name__ == "__main__":
    main()
