"""A resident worker's waiter: one worker takes task after task, its model loaded once, each task its own attempt.

    scheduler ──request (task, attempt)──► waiter ──the task (JSON)──► resident worker (gputui.hooks.resident)
                                             │   ◄──"end" + exit status──┘   │ stdout, stderr: a pipe
                                             ├──► this attempt's log ◄────────┘ (switched at each task)
                                             └──► journal: start (the worker's pid), exit, clear

A waiter becomes a slot at its first resident request and stays one until the scheduler closes its channel.
The worker is started for the first task (its command line and variables are that task's, its tags name
no task: GPUTUI_TASK_ID=resident), and told each task over a socket only this waiter holds; it says when the
task ended and with what status. The waiter records each task as an attempt of its own, the resident worker
as its worker: a kill or pause of the task reaches the worker's tree as for any attempt, and once an
attempt's end is in the journal nothing is signalled for it (control.py), so a late kill never reaches the
next task. The slot's GPU reservations are held by the waiter for its whole life and lent to each worker.

A worker that dies (killed, crashed, an exception out of its loop) ends only the attempt it was on: that
attempt's exit is its exit status, and the next task gets a new worker. A worker that dies between tasks is
simply replaced. If this waiter is killed, the keeper adopts the worker as for any attempt; the worker
finishes its task, cannot report it, and exits with the task's status, which the keeper records.
When the scheduler closes the channel, the worker is told there are no more tasks (its loop ends), given
`stop_grace_s` to exit, then ended as any attempt's leftovers are.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import time

from gputui.executors import cgroup as cgroups
from gputui.executors import ownership
from gputui.executors.log_writer import NAP_S, SMALL, LogPipe, LogWriter
from gputui.executors.waiter import _DEFAULT_SIGNALS, Waiter, _complain
from gputui.files.atomic import open_append

RESIDENT_ENV = "GPUTUI_RESIDENT"  # as gputui.hooks.resident reads it
RESIDENT_TAG = "resident"  # a resident worker's GPUTUI_TASK_ID: it serves many tasks, the journal says which


class ResidentSlot:
    def __init__(self, waiter: Waiter, held: list[int]):
        self.w = waiter
        self.held = held  # the slot's GPU reservations, until it ends
        self.grace = 10.0
        self.started = 0  # workers started so far (each gets a cgroup of its own)
        self.worker: ownership.ProcessRef | None = None
        self.ended: int | None = None  # a pidfd of the worker: readable once it has ended
        self.line: socket.socket | None = None  # our end of the socket its tasks go through
        self.pipe: LogPipe | None = None  # its output, copied into the log of its task (or its last task's)
        self.cg: str | None = None
        self.status = 0  # its wait status, once it has ended

    def serve(self, req: dict) -> None:
        try:
            while req is not None:
                self.grace = float(req.get("grace", self.grace))
                self.attempt(req)
                self.w.flush()  # every record on disk before the next task
                req = self.next_request()
            self.stop()
        finally:
            for fd in self.held:
                os.close(fd)
            if self.w.home is not None:
                self.w.home.close()

    # -- one task ------------------------------------------------------------------------------
    def attempt(self, req: dict) -> None:
        task, n = req["task"], req["n"]
        try:
            log = open_append(req["log"], self.w.proc_fds)
        except OSError as e:
            _complain(f"cannot open {req['log']}: {e}")
            self.w.record_exit(task, n, 127, 0)
            return
        if self.w.current is not None:
            self.w.current.set(req["log"])  # the keeper copies on into this log if we are killed
        if self.worker is None and not self.start(req, log):
            self.w.record_exit(task, n, 127, 0)
            return
        self.go_on()
        self.switch_log(log)
        self.w.record("start", task, n, self.w.me.pid, self.w.me.start, self.worker.pid, self.worker.start,
                      self.cg or "-")  # fmt: skip
        told = {"task": task, "attempt": n, "argv": req["argv"], "env": req["env"], "values": req["resident"]}
        with contextlib.suppress(OSError):  # a worker that is ending: its exit is this task's
            self.line.send(json.dumps(told).encode())
        self.wait(task, n)

    def start(self, req: dict, log: int) -> bool:
        """Start the resident worker with this task's command line; False (said in its log) if it cannot be."""
        try:
            out, into = os.pipe2(os.O_CLOEXEC)
        except OSError as e:
            _say(log, f"gputui: cannot make a pipe for a resident worker: {e}\n")
            os.close(log)
            return False
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except OSError as e:
            _say(log, f"gputui: cannot make a socket for a resident worker: {e}\n")
            for fd in (out, into, log):
                os.close(fd)
            return False
        argv = req["argv"]
        env = self.w.base_env | req["env"] | {RESIDENT_ENV: str(theirs.fileno())}
        env |= {ownership.TAG_TASK: RESIDENT_TAG, ownership.TAG_ATTEMPT: "0"}
        for fd in (*self.held, theirs.fileno()):
            os.set_inheritable(fd, True)

        def spawn() -> int:
            return os.posix_spawn(
                argv[0],
                argv,
                env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, into, 1),
                    (os.POSIX_SPAWN_DUP2, into, 2),
                ],
                setpgroup=0,
                setsigdef=_DEFAULT_SIGNALS,
            )

        self.started += 1
        try:
            if self.w.home is not None:
                name = cgroups.attempt_name(f"{RESIDENT_TAG}-{self.w.me.pid}", self.started)
                pid, self.cg = self.w.home.spawn_inside(name, spawn)
            else:
                pid, self.cg = spawn(), None
        except OSError as e:
            _say(log, f"gputui: cannot run {argv[0]!r} in {os.getcwd()}: {e.strerror}\n")
            for fd in (out, log):
                os.close(fd)
            ours.close()
            return False
        finally:
            os.close(into)
            theirs.close()
            for fd in self.held:
                os.set_inheritable(fd, False)
        self.worker = ownership.ProcessRef(pid, ownership.start_of(pid) or 0)
        try:
            self.ended = os.pidfd_open(pid)
        except (OSError, AttributeError):  # before Linux 5.3: looked at every 0.1 s
            self.ended = None
        self.line, self.pipe = ours, LogPipe(out, log)
        self.line.setblocking(False)
        self.w.lend(out, req["log"])  # its pipe replaces whatever the keeper held of ours
        return True

    def go_on(self) -> None:
        """No task is paused between tasks: a worker stopped now was paused as its last task ended (the pause
        and the end crossed), and goes on with its next one (its whole tree, as a pause stops it)."""
        if _stopped(self.worker.pid):
            for ref in [self.worker, *ownership.descendants([self.worker])]:
                ownership.send(ref, signal.SIGCONT)

    def switch_log(self, log: int) -> None:
        """The worker's output goes to `log` from now on (the last task's log is done with)."""
        old, self.pipe.writer = self.pipe.writer, LogWriter(log)
        if old.fd != log:
            self.retire(old)

    def retire(self, writer: LogWriter) -> None:
        if writer.finish():
            os.close(writer.fd)
        else:
            self.w.unsaid.append(writer)  # it still owes a `lines dropped` notice: the waiter retries it

    def wait(self, task: str, n: int) -> None:
        """Until the worker says the task ended, or dies: either is recorded as the attempt's end."""
        while True:
            ready = self.watch([self.line])
            if self.line in ready:
                told = self.told()
                if told is not None and (told.get("task"), told.get("attempt")) == (task, n):
                    self.pipe.drain()  # it flushed before telling: its lines are in the pipe
                    self.w.record_exit(task, n, int(told.get("end") or 0), 0)
                    return
            if self.worker_ended(ready):
                self.died(task, n)
                return

    def told(self) -> dict | None:
        """The worker's message, if one came (None at its end of the socket, or for a garbled one)."""
        try:
            data = self.line.recv(1 << 16)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        if not data:
            self.line.close()  # it closed its end: it is ending, and its exit will say how
            self.line = _closed()
            return None
        try:
            told = json.loads(data)
        except ValueError:
            return None
        return told if isinstance(told, dict) else None

    # -- between tasks -------------------------------------------------------------------------
    def next_request(self) -> dict | None:
        """The scheduler's next task for us (None once it has closed our channel), copying the worker's output
        meanwhile; a worker that dies between tasks is only collected (no task was on it)."""
        while True:
            ready = self.watch([self.w.channel])
            if self.worker is not None and self.line in ready:
                self.told()  # nothing is asked of it between tasks: only its end of the socket matters
            if self.worker_ended(ready):
                self.died(None, 0)
            if self.w.channel in ready:
                try:
                    msg, fds = self.w.receive()
                except OSError:
                    msg, fds = b"", []
                for fd in fds:  # a slot's GPUs are its own already
                    os.close(fd)
                return json.loads(msg) if msg else None

    def watch(self, more: list, timeout: int | None = None) -> set:
        """Wait for the worker's output (copied at once), its end, or `more` to be readable (at most `timeout`
        ms, if given); what is readable."""
        poll = select.poll()  # (select() stops at descriptor 1023)
        others = [s for s in more if s is not None and s.fileno() >= 0]
        for s in others:
            poll.register(s, select.POLLIN)
        if self.pipe is not None and self.pipe.open:
            poll.register(self.pipe.fd, select.POLLIN)
        if self.ended is not None:
            poll.register(self.ended, select.POLLIN)
        if timeout is None and self.ended is None and self.worker is not None:
            timeout = 100  # before Linux 5.3: its end is looked for every 0.1 s
        fds = {fd for fd, _ in poll.poll(timeout)}
        if self.pipe is not None and self.pipe.open and self.pipe.fd in fds and 0 < self.pipe.drain() < SMALL:
            time.sleep(NAP_S)  # let a trickle of lines gather
        ready = {s for s in others if s.fileno() in fds}
        if self.ended is not None and self.ended in fds:
            ready.add(self.ended)
        return ready

    def worker_ended(self, ready: set) -> bool:
        if self.worker is None or (self.ended is not None and self.ended not in ready):
            return False
        try:
            done, status = os.waitpid(self.worker.pid, os.WNOHANG)
        except ChildProcessError:  # collected already (by a reap of the leftovers)
            done, status = self.worker.pid, 0
        if done:
            self.status = status
        return bool(done)

    def died(self, task: str | None, n: int) -> None:
        """The worker has ended: the attempt it was on (if any) ends with its exit status, and whatever it left
        is ended before the slot takes another task; the next task gets a new worker."""
        self.pipe.drain()
        left = self.w.leftovers(self.cg)
        if task is not None:
            self.w.record_exit(task, n, os.waitstatus_to_exitcode(self.status), left)
        if left:
            ended = self.w.end_leftovers(self.cg, self.grace, self.pipe)
            self.pipe.drain()
            if task is not None:
                self.w.record("clear", task, n, f"{time.time():.3f}", ended, copy=True)
        self.forget()

    def forget(self) -> None:
        if not self.pipe.close():
            self.w.unsaid.append(self.pipe.writer)
        if self.ended is not None:
            os.close(self.ended)
        if self.line is not None:
            self.line.close()
        if self.cg:
            cgroups.remove(self.cg)
        self.worker = self.ended = self.line = self.pipe = self.cg = None

    # -- the end of the slot -------------------------------------------------------------------
    def stop(self) -> None:
        """No more tasks: the worker's loop ends (its socket is closed); it gets `grace` seconds to exit, then
        it and whatever it left are ended (SIGTERM, grace, SIGKILL) as an attempt's leftovers are."""
        if self.worker is None:
            return
        self.line.close()
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline and not self.worker_ended(self.watch([], timeout=100)):
            pass
        self.w.end_leftovers(self.cg, self.grace, self.pipe)
        self.pipe.drain()
        self.line = None
        self.forget()


def _stopped(pid: int) -> bool:
    """Whether the process is stopped (SIGSTOP): its state in /proc/<pid>/stat is T."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rfind(b")") + 2 :].startswith(b"T")


def _closed() -> socket.socket:
    """A closed socket: the worker's end of the line is gone (fileno -1, never readable)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.close()
    return s


def _say(log: int, text: str) -> None:
    with contextlib.suppress(OSError):
        os.write(log, text.encode())
