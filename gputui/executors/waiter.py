"""The waiter: the parent of one worker at a time, and the witness of how it ended.

    scheduler ──request──► waiter (child subreaper) ──posix_spawn──► worker (own process group, own cgroup)
                              │  ◄──────── its stdout and stderr: a pipe ─────────┘
                              ├──► the attempt's log (log_writer.py: a full disk drops lines, not the worker)
                              └──► journal (+ its copy of exits) + the scheduler's wake pipe

A waiter outlives the scheduler and the keeper (it ignores the terminal's signals and holds its own
copies of every file it writes to), so a worker's exit status is recorded whoever else is killed.
Being a child subreaper, it inherits every orphan of its task (a double-forked daemon included): when
the worker ends, whatever of the task is still alive is ended (SIGTERM, grace, SIGKILL, or
`cgroup.kill`) before `clear` is recorded and the task's GPU reservations are let go.

The worker's output reaches its log through the waiter, never straight from the worker: a full disk
fails a write of the waiter's (it drops lines, and says how many), not the worker's print. The keeper holds
the pipe's read end too, so a killed waiter's worker does not die of SIGPIPE: the keeper copies its output
on. Only if the waiter and its keeper are both killed does the worker's next write fail (EPIPE, or SIGPIPE)
-- the case in which its exit status is lost anyway. A Slurm attempt's stand-in is no worker: it writes its
few lines to the log itself (a line a full disk refuses is lost), and needs no pipe.

The pipe is the waiter's, made at its first attempt and lent to the keeper then, once: every attempt's
worker writes to it in turn. An attempt's output cannot reach the next one's log: the next worker starts
only once nothing of the last attempt is left (its clear) and the pipe is emptied into the last one's log;
which log the pipe feeds is written, before each worker starts, where the keeper reads it if this waiter is
killed (log_writer.CurrentLog). So a launch costs the keeper nothing, not even a wake.

Waiters are forked by the keeper and reused by the scheduler for attempt after attempt (it sends the
next request once the last attempt is cleared), so a task costs one posix_spawn, as with `xargs -P`.
(An attempt on Ray needs none: the run's Ray bridge records it the same way, see ray_bridge.py.) A waiter
exits when the scheduler closes its channel, after its attempt. It holds no ownership tag.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import json
import os
import select
import signal
import socket
import sys
import time

from gputui.executors import cgroup as cgroups
from gputui.executors import ownership, slurm_task
from gputui.executors.journal import exit_fields, line
from gputui.executors.log_writer import NAP_S, SMALL, CurrentLog, LogPipe, LogWriter, lend
from gputui.files.atomic import open_append, open_proc_fds

_DEFAULT_SIGNALS = tuple(signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP})
_PR_SET_CHILD_SUBREAPER = 36
RETRY_WRITE_S = 1.0  # a full disk: try the journal again this often; the record is kept until then
_FDS_SPACE = socket.CMSG_LEN(64 * array.array("i").itemsize)  # a request carries at most 64 descriptors
_JSON = json.JSONDecoder()


class Waiter:
    def __init__(
        self,
        channel: socket.socket,
        journal: int,
        exits: int,
        wake: int,
        home: cgroups.CgroupHome | None,
        keeper: socket.socket | None = None,
        current: CurrentLog | None = None,
    ):
        self.channel = channel
        self.keeper = keeper  # where an output pipe's read end is lent (see the module's docstring)
        self.current = current  # which log that pipe feeds now, as the keeper will read it
        self.pipe: LogPipe | None = None  # the workers' output, attempt after attempt
        self.into = -1  # its write end
        self.journal = journal
        self.exits = exits
        self.wake = wake
        self.home = home
        self.base_env = dict(os.environ)
        self.me = ownership.ProcessRef(os.getpid(), ownership.start_of(os.getpid()) or 0)
        self.unwritten: list[tuple[int, bytes]] = []  # records not yet on disk (a full disk), by descriptor
        self.unsaid: list[LogWriter] = []  # logs that must still say how many lines a full disk cost
        self.proc_fds = open_proc_fds()  # (opened here, in the waiter: kept for every log it creates)
        self.inbox = bytearray(1 << 20)  # each request is read into it: no 1 MiB buffer made and freed for each

    def serve(self) -> None:
        become_subreaper()
        while True:
            try:
                msg, fds = self.receive()
            except OSError:
                msg, fds = b"", []
            if not msg:  # the scheduler is gone: nothing more will be asked
                if self.home is not None:
                    self.home.close()
                return
            req = _JSON.raw_decode(msg.decode())[0]  # (json.loads, less its steps for any input)
            if req.get("resident") is not None:  # this waiter is a resident worker's from now on
                from gputui.executors.resident_slot import ResidentSlot

                ResidentSlot(self, fds).serve(req)
                return
            try:
                self.run(req, fds)
            finally:
                let_go(fds)
            self.flush()  # every record on disk before the next attempt

    def receive(self) -> tuple[bytes, list[int]]:
        """The scheduler's next request (b"" once it has closed our channel) and the descriptors it carries."""
        size, ancdata, _, _ = self.channel.recvmsg_into([self.inbox], _FDS_SPACE)
        fds = array.array("i")
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
        return bytes(memoryview(self.inbox)[:size]), list(fds)

    # -- one attempt ---------------------------------------------------------------------------
    def run(self, req: dict, held: list[int]) -> None:
        task, n, argv = req["task"], req["n"], req["argv"]
        try:
            log = open_append(req["log"], self.proc_fds)
        except OSError as e:
            _complain(f"cannot open {req['log']}: {e}")
            let_go(held)
            self.record_exit(task, n, 127, 0)
            return
        standin = argv[1:2] == ["-S"] and slurm_task.is_standin(argv)
        pipe = None
        if not standin:  # (a stand-in writes to its log itself: it needs no pipe)
            pipe = self.output(req["log"])
            if pipe is None:
                os.close(log)
                let_go(held)
                self.record_exit(task, n, 127, 0)
                return
            if self.current is not None:
                self.current.set(req["log"])  # before its worker starts: see the module's docstring
            pipe.writer = LogWriter(log)
        for fd in held:  # GPU reservations: held as long as any process of the task holds them
            os.set_inheritable(fd, True)

        def spawn() -> int:
            if standin:
                return self.fork_standin(argv, req["env"], log)
            return os.posix_spawn(
                argv[0],
                argv,
                self.base_env | req["env"],
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, self.into, 1),
                    (os.POSIX_SPAWN_DUP2, self.into, 2),
                ],
                setpgroup=0,
                setsigdef=_DEFAULT_SIGNALS,  # ignored signals would stay ignored across exec
            )

        try:
            if self.home is not None and not standin:  # a stand-in's tree is on a node, not here
                pid, cg = self.home.spawn_inside(cgroups.attempt_name(task, n), spawn)
            else:
                pid, cg = spawn(), None
        except OSError as e:
            with contextlib.suppress(OSError):
                os.write(log, f"gputui: cannot run {argv[0]!r} in {os.getcwd()}: {e.strerror}\n".encode())
            os.close(log)
            let_go(held)
            self.record_exit(task, n, 127, 0)
            return
        finally:
            for fd in held:
                os.set_inheritable(fd, False)
        self.record("start", task, n, self.me.pid, self.me.start, pid, ownership.start_of(pid) or 0, cg or "-")
        status = self.wait_copying(pid, pipe)
        if pipe is not None:
            pipe.drain()  # all the worker wrote is in the pipe: the log is whole before its exit is recorded
        left = self.leftovers(cg)
        if not left:
            self.close_log(pipe, log)
            let_go(held)  # nothing of the task is left: its GPUs are free before its end is heard of
        self.record_exit(task, n, os.waitstatus_to_exitcode(status), left)
        if left:
            ended = self.end_leftovers(cg, float(req.get("grace", 10.0)), pipe)
            if pipe is not None:
                pipe.drain()  # nothing of the task is left to write: the pipe is empty for the next attempt
            self.close_log(pipe, log)
            let_go(held)
            self.record("clear", task, n, f"{time.time():.3f}", ended, copy=True)
        if cg:
            cgroups.remove(cg)

    def output(self, log: str) -> LogPipe | None:
        """The workers' output pipe, made (and lent to the keeper) at the first attempt; None if it cannot be."""
        if self.pipe is not None and self.pipe.open:
            return self.pipe
        if self.pipe is not None:  # (a read failed: never on a pipe, but not to be read again)
            for fd in (self.pipe.fd, self.into):
                os.close(fd)
            self.pipe = None
        try:
            out, self.into = os.pipe2(os.O_CLOEXEC)  # the workers' stdout and stderr
        except OSError as e:
            _complain(f"cannot make a pipe: {e}")
            return None
        self.pipe = LogPipe(out, -1)
        self.lend(out, log)
        return self.pipe

    def lend(self, out: int, log: str) -> None:
        """The keeper gets the output pipe's read end too: it copies on if this waiter is killed. Never
        waited for (a stopped keeper delays no launch); without it, a killed waiter's worker dies of EPIPE."""
        if self.keeper is None:
            return
        try:
            lend(self.keeper, out, log)
        except OSError as e:
            if not isinstance(e, BlockingIOError):
                self.keeper = None  # the keeper is gone

    def wait_copying(self, pid: int, pipe: LogPipe | None) -> int:
        """Wait for the worker to end (not to stop: paused is not ended), copying its output meanwhile."""
        try:
            ended = os.pidfd_open(pid)
        except (OSError, AttributeError):  # before Linux 5.3: look every 0.1 s
            ended = None
        poll = select.poll()
        if pipe is not None:
            poll.register(pipe.fd, select.POLLIN)
        if ended is not None:
            poll.register(ended, select.POLLIN)
        output = -1 if pipe is None else pipe.fd
        try:
            while True:
                ready = [fd for fd, _ in poll.poll(None if ended is not None else 100)]
                if output in ready:
                    if 0 < pipe.drain() < SMALL:
                        time.sleep(NAP_S)  # let a trickle of lines gather
                    if not pipe.open:  # (a read failed)
                        poll.unregister(output)
                        output = -1
                if ended is None or ended in ready:
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done:
                        return status
        finally:
            if ended is not None:
                os.close(ended)

    def close_log(self, pipe: LogPipe | None, log: int) -> None:
        """The attempt's log is done with (a stand-in's, written by the stand-in, is only closed)."""
        if pipe is None:
            os.close(log)
        elif not pipe.end_log():
            self.unsaid.append(pipe.writer)

    def fork_standin(self, argv: list[str], env: dict[str, str], log: int) -> int:
        """A Slurm attempt's stand-in runs code this process has loaded: forked, not exec'd, it starts in a
        millisecond instead of tens (the same command line, the same code, as its own process group). Its
        output goes straight to the attempt's log: it outlives this waiter, were the waiter killed."""
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        pid = os.fork()
        if pid:
            return pid
        code = 127
        try:
            os.setpgid(0, 0)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # nothing of the waiter's (its channel, the journal)
            for sig in _DEFAULT_SIGNALS:
                with contextlib.suppress(OSError, ValueError):
                    signal.signal(sig, signal.SIG_DFL)
            os.environ.clear()
            os.environ.update(self.base_env | env)
            code = slurm_task.main(argv[4:])
        except BaseException as e:  # the child must never return into the waiter's loop
            with contextlib.suppress(BaseException):
                print(f"gputui: the attempt's stand-in failed: {type(e).__name__}: {e}", flush=True)
        finally:
            os._exit(code)

    def leftovers(self, cg: str | None) -> int:
        """How many processes of the task are still alive now that its worker has ended (every one of
        them is our descendant, so with no child left there is nothing left)."""
        if not self.reap():
            return 0
        return max(len(cgroups.members(cg)) if cg else 0, len(self.children()))

    def end_leftovers(self, cg: str | None, grace: float, pipe: LogPipe | None = None) -> int:
        """SIGTERM what is left, SIGKILL it after `grace`; returns how many were ended. Orphans of
        what is killed become our children, and are ended in the next round."""
        ended: set[ownership.ProcessRef] = set()
        deadline, sig = time.monotonic() + grace, signal.SIGTERM
        while True:
            self.reap()
            # Our children (a pid cannot be reused before we reap it) and whatever is in the cgroup.
            targets = {r for r in map(ownership.ref_of, self.children()) if r} | set(ownership.cgroup_members(cg))
            if not targets:
                return len(ended)
            if sig == signal.SIGTERM and time.monotonic() >= deadline:
                sig = signal.SIGKILL
                if cg:
                    cgroups.kill(cg)
            for ref in targets - (ended if sig == signal.SIGTERM else set()):
                if ownership.send(ref, sig) and sig == signal.SIGTERM:
                    ownership.send(ref, signal.SIGCONT)
                ended.add(ref)
            _copy_for(pipe, 0.05)

    def children(self) -> list[int]:
        return ownership.children_of(self.me.pid)

    @staticmethod
    def reap() -> bool:
        """Collect ended children; True if some child is still alive."""
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return False
            if pid == 0:
                return True

    # -- records -------------------------------------------------------------------------------
    def record_exit(self, task: str, n: int, code: int, left: int) -> None:
        self.record("exit", task, n, *exit_fields(code, left), copy=True)

    def record(self, *fields: object, copy: bool = False) -> None:
        """To the journal (and first to its copy of exits, `copy`), then to the scheduler if it listens."""
        data = line(*fields)
        if copy:
            self.write(self.exits, data)
        self.write(self.journal, data)
        try:
            os.write(self.wake, data)  # the scheduler, if it still listens
        except OSError:
            pass

    def write(self, fd: int, data: bytes) -> None:
        try:
            os.write(fd, data)
        except OSError as e:  # e.g. the disk is full: keep it, and try again before taking new work
            if not self.unwritten:
                _complain(f"cannot write the journal: {e}; will retry every {RETRY_WRITE_S:g}s")
            self.unwritten.append((fd, data))

    def flush(self) -> None:
        """Before the next attempt, try again every RETRY_WRITE_S what a full disk held back: the notices
        logs still owe (`gputui: N lines dropped`) and the records not written yet. An exit record
        usually went through already, in run(): a settle may read the log before its notice is there."""
        while self.unwritten or self.unsaid:
            self.unsaid = [w for w in self.unsaid if not _said(w)]
            pending, self.unwritten = self.unwritten, []
            for fd, data in pending:
                self.write(fd, data)
            if self.unwritten or self.unsaid:
                time.sleep(RETRY_WRITE_S)


def _said(writer: LogWriter) -> bool:
    if writer.finish():
        os.close(writer.fd)
        return True
    return False


def _copy_for(pipe: LogPipe | None, seconds: float) -> None:
    """Sleep `seconds`, copying the output of what is left of the task meanwhile."""
    deadline = time.monotonic() + seconds
    while pipe is not None and pipe.open and (left := deadline - time.monotonic()) > 0:
        poll = select.poll()  # (select() stops at descriptor 1023)
        poll.register(pipe.fd, select.POLLIN)
        poll.poll(left * 1000)
        pipe.drain()
    time.sleep(max(0.0, deadline - time.monotonic()))


def let_go(held: list[int]) -> None:
    """Close the waiter's copies of a task's GPU reservations (emptying `held`: closed once). Done before the
    record that tells the scheduler nothing of the task is left, so the scheduler, placing its next task on
    those GPUs at once, finds them free rather than still held by this waiter."""
    while held:
        os.close(held.pop())


def become_subreaper() -> None:
    """Orphans of our descendants become our children instead of init's (Linux prctl)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _complain(text: str) -> None:
    """To keeper.log, if it can be written: a waiter never dies of a full disk or a closed stderr."""
    with contextlib.suppress(OSError, ValueError):
        print(f"gputui waiter: {text}", file=sys.stderr, flush=True)
