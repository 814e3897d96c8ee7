"""A worker's output copied into its log on a disk that fills up: lines are dropped and counted, never
raised to anyone, and the log says how many once there is room again. A real tmpfs, really full."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys

from gputui.executors.log_writer import LogPipe, LogWriter

NOTICE = re.compile(r"gputui: (\d+) lines? dropped: disk full")


def _line(i: int) -> bytes:
    return f"line {i:06d} ".encode() + b"." * 97 + b"\n"  # 110 bytes


def _check(text: str, fed: int) -> list[int]:
    """Every line of the log is a line fed, whole, or a notice (a line cut by the disk may precede one);
    the lines fed are all there or counted by a notice. Returns the notices' counts."""
    lines, kept, counts = text.split("\n"), 0, []
    assert lines.pop() == ""
    for i, line in enumerate(lines):
        if m := NOTICE.fullmatch(line):
            counts.append(int(m.group(1)))
        elif (line + "\n").encode() == _line(int(line.split()[1])):
            kept += 1
        else:  # the head of a line cut by the full disk: counted as dropped
            assert NOTICE.fullmatch(lines[i + 1]) and _line(int(line.split()[1])).startswith(line.encode())
    assert kept + sum(counts) == fed
    return counts


def test_a_full_disk_drops_and_counts_lines_and_the_log_says_so_when_there_is_room(small_disk):
    disk = small_disk(1)
    filler = disk / "filler"
    filler.write_bytes(b"\0" * (768 << 10))
    fd = os.open(disk / "worker.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    writer = LogWriter(fd)
    n = 0
    for _ in range(40):  # 40 chunks of 100 lines: 440 KB into ~256 KB of room
        writer.write(b"".join(_line(n + i) for i in range(100)))
        n += 100
    assert writer.owed and writer.dropped > 0
    filler.unlink()
    for _ in range(3):
        writer.write(b"".join(_line(n + i) for i in range(100)))
        n += 100
    assert writer.finish() and not writer.owed
    os.close(fd)
    text = (disk / "worker.log").read_text()
    counts = _check(text, n)
    assert len(counts) == 1 and counts[0] > 1000
    assert text.endswith(_line(n - 1).decode())  # it goes on after the notice


def test_output_that_ends_while_the_disk_is_full_is_said_later(small_disk):
    disk = small_disk(1)
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    fd = os.open(disk / "worker.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    out, into = os.pipe()
    pipe = LogPipe(out, fd)
    os.write(into, _line(0) + _line(1) + b"no end")
    os.close(into)
    pipe.drain()
    assert not pipe.close()  # nothing could be said yet
    filler.unlink()
    assert pipe.writer.finish()
    os.close(fd)
    assert (disk / "worker.log").read_text() == "gputui: 3 lines dropped: disk full\n"


def test_a_write_error_other_than_a_full_disk_drops_and_counts_lines_and_is_not_waited_out(tmp_path):
    """EFBIG (a file size limit; EIO would do the same): the lines are dropped and counted as on a full
    disk, but the notice, which cannot be written either, is given up at the end: a waiter that waited for
    it would try it every second and never serve another attempt. In a process of its own (the limit)."""
    log = tmp_path / "worker.log"
    code = f"""if True:
        import json, os, resource, signal
        from gputui.executors.log_writer import LogWriter
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (1100, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        fd = os.open({str(log)!r}, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        writer = LogWriter(fd)
        writer.write(b"".join(b"line %06d " % i + b"." * 97 + b"\\n" for i in range(20)))  # as _line
        writer.write(b"one more\\n")
        print(json.dumps({{"finished": writer.finish(), "dropped": writer.dropped, "why": writer.why}}))
    """
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    said = json.loads(r.stdout)
    assert said == {"finished": True, "dropped": 11, "why": os.strerror(errno.EFBIG)}
    assert log.read_bytes() == b"".join(_line(i) for i in range(10))  # 1100 bytes: the first ten, whole
