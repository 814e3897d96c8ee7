"""A scheduler driving hundreds of waiters (512 Slurm stand-ins) holds descriptors numbered past 1023,
which select() cannot watch: its sleep and its check that a waiter's channel ended must still work."""

from __future__ import annotations

import os
import resource
import socket

import pytest

from gputui.executors.local import _ended
from gputui.files.wakeup import Wakeup

HIGH = 1500


@pytest.fixture
def room_for_high_descriptors():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= HIGH + 10:
        pytest.skip(f"the hard limit on open files ({hard}) leaves no room for descriptor {HIGH}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (HIGH + 10, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_scheduler_wakes_for_a_descriptor_past_1023(room_for_high_descriptors):
    r, w = os.pipe()
    high = os.dup2(r, HIGH)
    wakeup = Wakeup()
    try:
        assert wakeup.wait([high], 0) == []
        os.write(w, b"x")
        assert wakeup.wait([high], 5) == [high]
    finally:
        wakeup.close()
        for fd in (r, w, high):
            os.close(fd)


def test_a_waiters_channel_past_1023_is_live_until_its_far_end_closes(room_for_high_descriptors):
    ours, theirs = socket.socketpair()
    high = socket.socket(fileno=os.dup2(ours.fileno(), HIGH))
    ours.close()
    try:
        assert not _ended(high)  # a live waiter is not taken for lost
        theirs.close()
        assert _ended(high)
    finally:
        high.close()
