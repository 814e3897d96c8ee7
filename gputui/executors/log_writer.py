"""A worker's output, from its pipe to its log file: a full disk costs lines, never the worker.

    worker ──stdout+stderr──► pipe ──► waiter (LogPipe) ──► logs/<task>.attemptN.log
                                 └──── the keeper holds the read end too, and copies in the waiter's place
                                       if the waiter is killed (into the log CurrentLog names)

Were the log file the worker's stdout, a full disk would fail the worker's next print (Python: OSError,
exit 1). Through the pipe, a write the disk refuses is dropped instead, to the end of its line, and its
lines counted; once a write goes through again, the log says first `gputui: N lines dropped: disk full`.
Only a full disk (ENOSPC, EDQUOT) is waited out once the output has ended (its waiter tries the notice
again every second before it takes other work); after any other error (EIO, EFBIG...) the lines are dropped
and counted all the same, but a notice that cannot be written then is given up.
Copying through a pipe costs the waiter a read and a write per chunk (up to 1 MiB), not per line.

A waiter keeps one pipe for attempt after attempt (each attempt's tree is gone, and the pipe emptied into
its log, before the next worker gets it), lent to the keeper once; which log it feeds now is written into
memory the keeper shares (CurrentLog), so an attempt costs the keeper nothing.
"""

from __future__ import annotations

import array
import errno
import mmap
import os
import socket

CHUNK = 1 << 20
FIRST = 64 << 10  # a first read: a pipe's default size, and no 1 MiB buffer to map and unmap for a few lines
# After a read of less than this, wait NAP_S before the next: a worker that flushes every line would wake
# its waiter for each one (20,000 lines/s: 6 % of a core); a pipe (64 KiB) fills in no less than 1 ms at
# 400,000 lines/s, so a faster worker is not held up.
SMALL, NAP_S = 16 << 10, 0.001
_FULL = (errno.ENOSPC, errno.EDQUOT)


class LogWriter:
    """Appends to a log descriptor (O_APPEND); a failed write drops lines, and says how many once it can."""

    def __init__(self, fd: int):
        self.fd = fd
        self.dropped = 0  # lines dropped since the log last said so
        self.why = ""
        self.owed = False  # some output was dropped: the log must say so before anything else
        self.full = False  # the last write was refused for room (ENOSPC, EDQUOT): worth trying again later
        self.skipping = False  # inside a line whose start was dropped: the rest of it goes too
        self.mid_line = False  # the log's last byte is not a newline (a notice starts on a line of its own)

    def write(self, data: bytes) -> None:
        if self.skipping:
            end = data.find(b"\n")
            if end < 0:
                return
            self.dropped += 1
            self.skipping = False
            data = data[end + 1 :]
        if self.owed and not self._notice():
            self._drop(data)
            return
        if data:
            self._put(data)

    def finish(self) -> bool:
        """The output has ended: True once the log says all it must, or cannot for another reason than a
        full disk (the notice is given up); False while the disk is full: call again later."""
        if self.skipping:  # an unfinished last line, dropped
            self.dropped += 1
            self.skipping = False
        return not self.owed or self._notice() or not self.full

    def _put(self, data: bytes) -> bool:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except OSError as e:
                self.full = e.errno in _FULL
                self.why = "disk full" if self.full else (e.strerror or str(e))
                self.owed = True
                self._drop(view)
                return False
            self.mid_line = view[n - 1] != 10
            view = view[n:]
        return True

    def _drop(self, data) -> None:
        if data:
            self.dropped += bytes(data).count(b"\n")
            self.skipping = data[-1] != 10

    def _notice(self) -> bool:
        n, first = self.dropped, "\n" if self.mid_line else ""
        text = f"{first}gputui: {n} line{'' if n == 1 else 's'} dropped: {self.why}\n"
        self.owed = False  # _put sets it again if the disk is still full
        if self._put(text.encode()):
            self.dropped = 0
            return True
        self.dropped = n  # what the notice's own failed write counted is not output of the worker
        self.skipping = False
        return False


class LogPipe:
    """The read end of a worker's output pipe (non-blocking), copied into a log by a LogWriter."""

    def __init__(self, fd: int, log: int):
        os.set_blocking(fd, False)
        self.fd = fd
        self.writer = LogWriter(log)
        self.open = True  # some process may still write to it

    def drain(self) -> int:
        """Copy what is in the pipe now; returns how many bytes. `open` turns False at its end (no writer
        left)."""
        copied, size = 0, FIRST
        while self.open:
            try:
                data = os.read(self.fd, size)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self.open = False
                break
            self.writer.write(data)
            copied += len(data)
            if len(data) < size:
                break
            size = CHUNK
        return copied

    def end_log(self) -> bool:
        """The attempt's log is done with; the pipe goes on, for the next attempt's. True once the log says all
        it must, else call `LogWriter.finish` again later and close `writer.fd` then."""
        if self.writer.finish():
            os.close(self.writer.fd)
            return True
        return False

    def close(self) -> bool:
        """Stop reading (a resident worker's pipe, once that worker is gone; a waiter keeps its own pipe). What a
        process still writes does not fail at once: the keeper holds the read end lent to it until the waiter
        lends another (EPIPE after that), and copies on from it once the waiter ends; until then it waits in
        the pipe (a writer blocks once the pipe is full). True once the log says all it must, else call
        `LogWriter.finish` again later and close `writer.fd` then."""
        os.close(self.fd)
        if self.writer.finish():
            os.close(self.writer.fd)
            return True
        return False


class CurrentLog:
    """Which log a waiter's output pipe feeds now, in memory shared with its keeper (an anonymous shared mapping
    made before the fork): the waiter writes each attempt's before its worker starts, the keeper reads it once
    the waiter is dead. Two slots and a byte naming the whole one: a waiter killed while writing one leaves the
    other in force (no worker of the new attempt exists yet: nothing of it is in the pipe)."""

    SLOT = 4 + 4096  # its length, then the path (PATH_MAX)

    def __init__(self):
        self.mem = mmap.mmap(-1, 1 + 2 * self.SLOT)  # MAP_SHARED: a forked waiter writes what the keeper reads

    def set(self, path: str) -> None:
        data = os.fsencode(path)
        if len(data) > self.SLOT - 4:
            data = b""  # (no such path could be opened)
        at = 1 + (1 - self.mem[0]) * self.SLOT
        self.mem[at : at + 4 + len(data)] = len(data).to_bytes(4, "little") + data
        self.mem[0] = 1 - self.mem[0]

    def get(self) -> str | None:
        at = 1 + self.mem[0] * self.SLOT
        size = int.from_bytes(self.mem[at : at + 4], "little")
        return os.fsdecode(self.mem[at + 4 : at + 4 + size]) if 0 < size <= self.SLOT - 4 else None

    def close(self) -> None:
        self.mem.close()


def lend(sock: socket.socket, fd: int, log: str) -> None:
    """Send the pipe's read end `fd` and its log's path over `sock` without waiting (BlockingIOError if the
    other side is not reading). socket.send_fds would ignore the flags before Python 3.12."""
    fds = array.array("i", [fd])
    sock.sendmsg([log.encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)], socket.MSG_DONTWAIT)


def borrow(sock: socket.socket) -> tuple[bytes, list[int]]:
    """One message sent by `lend`, without waiting (BlockingIOError if there is none): its log's path
    (b"" once the other side is gone) and the descriptors it carried (close-on-exec)."""
    msg, ancdata, _, _ = sock.recvmsg(4096, socket.CMSG_LEN(4), socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC)
    fds = array.array("i")
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    return msg, list(fds)
