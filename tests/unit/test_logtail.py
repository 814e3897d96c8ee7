"""LogTail follows logs of untrusted workers: a line without end (a gigabyte of `x`) must not grow the
scheduler's memory, and the lines after it must still be seen (the [health] rules read them)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from gputui.engine.logtail import MAX_LINE, LogTail

GROWER = textwrap.dedent(
    """
    import sys
    with open(sys.argv[1], "ab", buffering=0) as f:
        f.write(b"step 1 loss=0.5\\n")
        for _ in range(int(sys.argv[2])):
            f.write(b"x" * 65536)  # one line, never ended
        f.write(b"\\xff\\xfe not utf-8\\nstep 2 loss=nan\\n")
    """
)


def test_a_line_without_end_is_held_to_its_head_and_the_next_line_is_seen(tmp_path):
    log = tmp_path / "worker.log"
    log.touch()
    chunks = 160  # 10 MiB in one line, written by a real process while we follow it
    grower = subprocess.Popen([sys.executable, "-c", GROWER, str(log), str(chunks)])
    tail, lines, held = LogTail(log, max_read=1 << 18), [], []
    while grower.poll() is None:
        lines += tail.read_lines()
        held.append(tail.held)
    while (new := tail.read_lines()) or tail.offset < log.stat().st_size:
        lines += new
        held.append(tail.held)
    assert grower.returncode == 0
    assert max(held) <= MAX_LINE  # bounded, however long the line
    assert lines[0] == "step 1 loss=0.5"
    cut = chunks * 65536 + len(b"\xff\xfe not utf-8") - MAX_LINE
    assert lines[1] == "x" * MAX_LINE + f" … [cut: {cut} bytes]"
    assert lines[2:] == ["step 2 loss=nan"]


def test_a_long_line_within_one_read_is_cut_too_and_bad_bytes_are_replaced(tmp_path):
    log = tmp_path / "worker.log"
    log.write_bytes(b"a" * 100 + b"\n" + b"\xff ok\r\n" + b"b" * 10 + b"\n")
    assert LogTail(log, max_line=64).read_lines() == ["a" * 64 + " … [cut: 36 bytes]", "\ufffd ok", "b" * 10]


def test_flush_returns_a_cut_last_line(tmp_path):
    log = tmp_path / "worker.log"
    log.write_bytes(b"c" * 100)
    tail = LogTail(log, max_line=10)
    assert tail.read_lines() == [] and tail.held == 10
    assert tail.read_lines(flush=True) == ["c" * 10 + " … [cut: 90 bytes]"]
    assert tail.held == 0


def test_the_health_rules_see_the_line_after_a_cut_one(tmp_path):
    from gputui.engine.watching import AttemptWatch
    from gputui.jobs.health import HealthSpec

    log = tmp_path / "worker.log"
    log.write_bytes(b"step 1 loss=0.5\n" + b"x" * (4 * MAX_LINE))
    watch = AttemptWatch(HealthSpec(), tmp_path / "events.jsonl", log, started_at=0.0)
    assert watch.poll(1.0).broken is None and watch.log.held <= MAX_LINE
    with open(log, "ab") as f:
        f.write(b"x" * MAX_LINE + b"\nstep 2 loss=nan\n")
    broken = watch.poll(2.0).broken
    assert broken is not None and broken.rule == "nan" and broken.step == 2
