"""The keeper: forks waiters for this scheduler, one per request, and hands each one's channel over.

    scheduler ──"waiter"──► keeper ──fork──► waiter ◄──launch requests + GPU lock fds── scheduler
              ◄──its channel (SCM_RIGHTS), pid, start time──┘            └──► records (wake pipe)

One keeper per scheduler instance, in its own session, so the waiters it forks are not the
scheduler's children and share nothing with it but their channels. Each waiter is the parent of its
worker and records its start and end (waiter.py), so killing the keeper (or the keeper and the
scheduler together) loses no exit status; a scheduler whose keeper died starts a new one when it next
needs a waiter. The keeper is a child subreaper too: if a waiter is killed, its worker becomes the
keeper's child, and the keeper records its end instead (it knows the worker from the journal's start
record). It exits once the scheduler has closed its end and no such orphan is left.

Each waiter lends the keeper the read end of its workers' output pipe, once (waiter.py; a resident worker's
waiter, each worker's), so if the waiter is killed its worker does not die of SIGPIPE at its next print: the
keeper copies the output on into the attempt's log, which the waiter wrote in memory they share before the
worker started (log_writer.CurrentLog; what the waiter had read and not yet written, at most one chunk, is
lost). A launch wakes the keeper for nothing. A Slurm attempt's stand-in needs no pipe: it writes its few
lines to its log itself.

The keeper holds a descriptor per waiter (and one per lent pipe), so it waits with epoll (select() stops at
descriptor 1023) and raises its own soft limit on open files to the hard one; its waiters, and so the
workers, get the limit the keeper was started with. A waiter it cannot fork (no descriptor or process
left) is refused to the scheduler, and the keeper goes on serving the waiters it has.
"""

from __future__ import annotations

import contextlib
import os
import resource
import selectors
import signal
import socket
import sys
from pathlib import Path

from gputui.executors import cgroup as cgroups
from gputui.executors import keeper_spare, ownership
from gputui.executors.cgroup import CgroupHome
from gputui.executors.journal import JournalReader, exit_fields, exits_copy, line
from gputui.executors.log_writer import CurrentLog, LogPipe, borrow
from gputui.executors.waiter import Waiter, become_subreaper
from gputui.files.atomic import open_append


class Keeper:
    def __init__(
        self,
        requests: socket.socket,
        wake: int,
        journal: int,
        exits: int,
        home: CgroupHome | None,
        journal_path: Path,
    ):
        self.requests = requests
        self.wake = wake
        self.journal = journal
        self.exits = exits
        self.home = home
        self.waiters: set[int] = set()
        self.orphans: dict[int, tuple[str, int] | None] = {}  # workers of killed waiters: pid -> attempt
        self.starts = JournalReader(journal_path)
        self.cgroup_of: dict[tuple[str, int], str | None] = {}
        self.lenders: dict[socket.socket, int] = {}  # each waiter's socket lending its workers' output pipe
        self.lent: dict[int, tuple[int, str]] = {}  # waiter pid -> its workers' output pipe (read end), a log
        self.current: dict[int, CurrentLog] = {}  # waiter pid -> the log its pipe feeds now (the waiter says)
        self.copying: list[LogPipe] = []  # outputs of killed waiters' workers, copied on by the keeper
        self.watched = selectors.DefaultSelector()  # the wake pipe, requests, lenders and pipes copied on
        self.files_limit = _raise_files_limit()  # what the waiters get back

    def run(self) -> None:
        become_subreaper()
        woken, wake_me = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(wake_me, warn_on_full_buffer=False)  # a child's end wakes the wait at once
        self.watched.register(woken, selectors.EVENT_READ)
        self.watched.register(self.requests, selectors.EVENT_READ)
        listening = True
        while listening or self.orphans or self.waiters:  # busy waiters may be killed yet
            ready = {key.fileobj for key, _ in self.watched.select(1.0)}
            with contextlib.suppress(OSError):
                os.read(woken, 4096)
            self.take_lent([s for s in ready if s in self.lenders])
            self.reap()
            if self.requests in ready:
                listening = self.serve_request()
                if not listening:
                    self.watched.unregister(self.requests)
        for pipe in self.copying:  # no process of ours is left: what still writes there is not ours
            pipe.drain()
            pipe.close()
        if self.home is not None:
            self.home.close()

    def serve_request(self) -> bool:
        """Fork a waiter for the scheduler; False once the scheduler is gone."""
        try:
            asked = self.requests.recv(64)
        except OSError:
            return False
        if not asked:
            return False
        try:
            channel, pid = self.fork_waiter()
        except OSError as e:  # no descriptor or process left: the scheduler is told (a reply without a channel)
            with contextlib.suppress(OSError):
                self.requests.send(f"refused: cannot fork a waiter: {e}".encode())
            return True
        try:
            start = ownership.start_of(pid) or 0
            socket.send_fds(self.requests, [f"waiter {pid} {start}".encode()], [channel.fileno()])
        except OSError:
            return False
        finally:
            channel.close()  # the scheduler holds the only other end now
        return True

    def fork_waiter(self) -> tuple[socket.socket, int]:
        made: list[socket.socket] = []
        current = None
        try:
            made += socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            made += socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            current = CurrentLog()
            pid = os.fork()
        except OSError:
            for sock in made:
                sock.close()
            if current is not None:
                current.close()
            raise
        ours, theirs, lender, lending = made
        if pid == 0:  # the waiter: keep only its own channel, the journal, the wake pipe and its lending socket
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                self.watched.close()
                ours.close()
                lender.close()
                self.requests.close()
                for other in self.lenders:
                    other.close()
                for fd in [fd for fd, _ in self.lent.values()] + [p.fd for p in self.copying]:
                    os.close(fd)
                for p in self.copying:
                    os.close(p.writer.fd)
                for other in self.current.values():
                    other.close()
                theirs, lending = _renumbered(theirs), _renumbered(lending)  # below the limit given back
                with contextlib.suppress(OSError, ValueError):
                    resource.setrlimit(resource.RLIMIT_NOFILE, self.files_limit)
                Waiter(theirs, self.journal, self.exits, self.wake, self.home, lending, current).serve()
            finally:
                os._exit(0)
        theirs.close()
        lending.close()
        self.lenders[lender] = pid
        self.current[pid] = current
        self.watched.register(lender, selectors.EVENT_READ)
        self.waiters.add(pid)
        return ours, pid

    def take_lent(self, lenders: list[socket.socket]) -> None:
        """Output pipes lent by waiters (the last one of each is kept); a waiter gone (its socket ended), its
        last worker's output is copied on from here, for as long as some process of that task writes to it,
        into the log the waiter last named (CurrentLog)."""
        for sock in lenders:
            pid = self.lenders[sock]
            while True:
                try:
                    msg, fds = borrow(sock)
                except BlockingIOError:
                    break
                except OSError:
                    msg, fds = b"", []
                if msg and fds:
                    old = self.lent.pop(pid, None)
                    if old is not None:
                        os.close(old[0])
                    self.lent[pid] = (fds[0], msg.decode())
                    continue
                for fd in fds:
                    os.close(fd)
                if msg:
                    continue
                del self.lenders[sock]  # the waiter is gone
                self.watched.unregister(sock)
                sock.close()
                lent, current = self.lent.pop(pid, None), self.current.pop(pid, None)
                if lent is not None:  # into the log the waiter last said it fed (before any worker wrote to it)
                    self.adopt(lent[0], (current.get() if current is not None else None) or lent[1])
                if current is not None:
                    current.close()
                break
        self.copy()

    def lending_now(self) -> list[socket.socket]:
        return [key.fileobj for key, _ in self.watched.select(0) if key.fileobj in self.lenders]

    def adopt(self, out: int, log: str) -> None:
        try:
            into = open_append(log)
        except OSError:
            try:
                into = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            except OSError:  # no descriptor left: its worker's next write fails (EPIPE), as if we were gone
                os.close(out)
                return
        self.copying.append(LogPipe(out, into))
        self.watched.register(out, selectors.EVENT_READ)

    def copy(self) -> None:
        for pipe in self.copying:
            pipe.drain()
        for pipe in [p for p in self.copying if not p.open]:
            self.copying.remove(pipe)
            self.watched.unregister(pipe.fd)
            pipe.close()

    def reap(self) -> None:
        """Collect ended children: waiters (they end when their scheduler is gone, or when killed) and
        orphaned workers, whose exit the keeper records in their killed waiter's place."""
        for pid in ownership.children_of(os.getpid()):
            if pid not in self.waiters and pid not in self.orphans:
                self.orphans[pid] = None
        if None in self.orphans.values():
            attempts = self.starts.update()
            workers = {e.worker.pid: key for key, e in attempts.items() if e.worker and not e.ended}
            self.cgroup_of = {key: e.cgroup for key, e in attempts.items()}
            for pid in [p for p, key in self.orphans.items() if key is None]:
                self.orphans[pid] = workers.get(pid)
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.waiters.discard(pid)
            key = self.orphans.pop(pid, None)
            if key is not None:  # a leftover of such a worker is only collected
                self.take_lent(self.lending_now())  # its log whole before its exit
                cg = self.cgroup_of.get(key)
                left = len(cgroups.members(cg)) if cg else len(self.orphans)  # the scheduler ends them
                data = line("exit", *key, *exit_fields(os.waitstatus_to_exitcode(status), left))
                for fd in (self.exits, self.journal, self.wake):
                    with contextlib.suppress(OSError):
                        os.write(fd, data)


def _raise_files_limit() -> tuple[int, int]:
    """Raise this process's soft limit on open files to the hard one; the limit as it was."""
    was = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (was[1], was[1]))
    return was


def _renumbered(sock: socket.socket) -> socket.socket:
    """The same socket on the lowest free descriptor (close-on-exec)."""
    low = sock.dup()
    sock.close()
    return low


def main() -> None:
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # a Ctrl-C or a lost terminal must not orphan exit statuses
    requests = socket.socket(fileno=os.dup(0))
    os.close(0)
    os.open(os.devnull, os.O_RDONLY)  # fd 0 again, so no waiter or worker keeps the scheduler's socket
    if sys.argv[1:] == ["--spare"]:  # started before its run was known (keeper_spare.py)
        journal, scheduler_id = keeper_spare.await_run(requests)
    else:
        journal, scheduler_id = sys.argv[1], sys.argv[2]
    journal_path = Path(journal)
    journal, exits = (
        os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666)
        for p in (journal_path, exits_copy(journal_path))
    )
    os.set_inheritable(1, False)  # the wake pipe: waiters get it by fork, workers never
    Keeper(requests, 1, journal, exits, CgroupHome.open(scheduler_id), journal_path).run()


if __name__ == "__main__":
    main()
