"""The keeper: hands this scheduler's launch requests to waiters, forking a new one when none is idle.

    scheduler ──requests + GPU lock fds (unix socket)──► keeper ──► idle waiter ──► worker
              ◄────────────── records (wake pipe) ─────────────────── waiter

One keeper per scheduler instance, in its own session. It records nothing itself: each waiter is
the parent of its worker and records its start and end (waiter.py), so killing the keeper (or the
keeper and the scheduler together) loses no exit status; a new scheduler starts a new keeper, and
the old waiters finish their attempts and exit. When the scheduler closes its end of the socket,
the keeper closes the waiters' channels (idle ones exit at once, busy ones after their attempt)
and exits.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys

from gputui.executors.cgroup import CgroupHome
from gputui.executors.waiter import Waiter


class Keeper:
    def __init__(self, requests: socket.socket, wake: int, journal: int, home: CgroupHome | None):
        self.requests = requests
        self.wake = wake
        self.journal = journal
        self.home = home
        self.waiters: dict[int, socket.socket] = {}  # by fileno
        self.idle: list[socket.socket] = []

    def run(self) -> None:
        while True:
            ready, _, _ = select.select([self.requests, *self.waiters.values()], [], [], 1.0)
            self.reap()  # ended waiters, at most a second late
            for w in [r for r in ready if r is not self.requests]:
                try:
                    said = w.recv(16)
                except OSError:
                    said = b""
                if said:
                    self.idle.append(w)
                else:
                    self.drop(w)
            if self.requests in ready and not self.take_request():
                break
        for w in list(self.waiters.values()):
            self.drop(w)
        if self.home is not None:
            self.home.close()

    def take_request(self) -> bool:
        """Pass one request (with its descriptors) to a waiter; False once the scheduler is gone."""
        try:
            msg, fds, _, _ = socket.recv_fds(self.requests, 1 << 20, 64)
        except OSError:
            return False
        if not msg:
            return False
        try:
            while True:
                w = self.idle.pop() if self.idle else self.fork_waiter(fds)
                try:
                    socket.send_fds(w, [msg], fds)
                    return True
                except OSError:  # it died while idle: forget it, use another
                    self.drop(w)
        finally:
            for fd in fds:
                os.close(fd)

    def fork_waiter(self, passing: list[int]) -> socket.socket:
        """A new waiter. It must not inherit `passing` (the descriptors of the request about to be
        sent), or an idle waiter would hold GPU reservations of a task that has ended."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # the waiter: keep only its own channel, the journal and the wake pipe
            try:
                for fd in passing:
                    os.close(fd)
                ours.close()
                self.requests.close()
                for w in self.waiters.values():
                    w.close()
                Waiter(theirs, self.journal, self.wake, self.home).serve()
            finally:
                os._exit(0)
        theirs.close()
        self.waiters[ours.fileno()] = ours
        return ours

    def drop(self, w: socket.socket) -> None:
        self.waiters.pop(w.fileno(), None)
        if w in self.idle:
            self.idle.remove(w)
        w.close()

    @staticmethod
    def reap() -> None:
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
    journal_path, scheduler_id = sys.argv[1], sys.argv[2]
    journal = os.open(journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    requests = socket.socket(fileno=os.dup(0))
    os.close(0)
    os.open(os.devnull, os.O_RDONLY)  # fd 0 again, so no waiter or worker keeps the scheduler's socket
    os.set_inheritable(1, False)  # the wake pipe: waiters get it by fork, workers never
    Keeper(requests, 1, journal, CgroupHome.open(scheduler_id)).run()


if __name__ == "__main__":
    main()
