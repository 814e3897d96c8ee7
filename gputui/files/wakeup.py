"""Sleep until a file descriptor is readable or a signal arrives: one poll() for the loops that
must also notice signals at once (the scheduler's SIGINT/SIGHUP, the keeper's SIGCHLD). poll, not select:
a descriptor numbered past 1023 (a waiter's channel among hundreds) is beyond select's reach."""

from __future__ import annotations

import os
import select
import signal


class Wakeup:
    """A self-pipe registered with `signal.set_wakeup_fd`; `wait` returns the readable descriptors."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)

    def wait(self, fds: list[int], timeout: float) -> list[int]:
        poller = select.poll()
        for fd in (self.read_fd, *fds):
            poller.register(fd, select.POLLIN)
        try:
            ready = [fd for fd, _ in poller.poll(max(0.0, timeout) * 1000)]
        except InterruptedError:
            return []
        if self.read_fd in ready:
            try:
                while os.read(self.read_fd, 4096):
                    pass
            except BlockingIOError:
                pass
        return [fd for fd in ready if fd != self.read_fd]

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        os.close(self.read_fd)
        os.close(self.write_fd)
