"""LogTail follows logs of untrusted workers: a line without end (a gigabyte of `x`) must not grow the
scheduler's memory, and the lines after it must still be seen (the [health] rules read them)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from gputui.files.tail import MAX_LINE, LogTail

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
    from gputui.jobs.health_spec import HealthSpec

    log = tmp_path / "worker.log"
    log.write_bytes(b"step 1 loss=0.5\n" + b"x" * (4 * MAX_LINE))
    watch = AttemptWatch(HealthSpec(), tmp_path / "events.jsonl", log, started_at=0.0)
    assert watch.poll(1.0).broken is None and watch.log.held <= MAX_LINE
    with open(log, "ab") as f:
        f.write(b"x" * MAX_LINE + b"\nstep 2 loss=nan\n")
    broken = watch.poll(2.0).broken
    assert broken is not None and broken.rule == "nan" and broken.step == 2


PROGRESS = textwrap.dedent(
    """
    import sys, time
    updates = int(sys.argv[2])
    with open(sys.argv[1], "ab", buffering=0) as f:
        for step in range(1, updates + 1):  # tqdm's way: a carriage return, the bar redrawn, no newline
            loss = "nan" if step == updates else f"{1 / step:.4f}"
            bar = f"{step * 100 // updates:3d}%|{'#' * (step * 40 // updates):40s}|"
            f.write(f"\\r{bar} step {step} loss={loss}".encode())
            if step % 500 == 0:
                time.sleep(0.001)
        f.write(b"\\n")
    """
)


def test_a_progress_bar_redrawn_past_the_cap_ends_as_its_latest_state(tmp_path):
    log = tmp_path / "worker.log"
    log.touch()
    updates = 4000  # about 300 KiB on one line, far past MAX_LINE
    writer = subprocess.Popen([sys.executable, "-c", PROGRESS, str(log), str(updates)])
    tail, lines, held = LogTail(log, max_read=1 << 14), [], []
    while writer.poll() is None:
        lines += tail.read_lines()
        held.append(tail.held)
    while (new := tail.read_lines()) or tail.offset < log.stat().st_size:
        lines += new
    assert writer.returncode == 0 and log.stat().st_size > 4 * MAX_LINE
    assert max(held) < 200  # only the bar's current state is held
    assert lines == [f"100%|{'#' * 40}| step {updates} loss=nan"]
    # Read at once, the same line gives the same last state.
    assert LogTail(log).read_lines() == lines


def test_the_health_rules_read_the_loss_a_long_progress_line_ends_with(tmp_path):
    from gputui.engine.watching import AttemptWatch
    from gputui.jobs.health_spec import HealthSpec

    log = tmp_path / "worker.log"
    log.touch()
    watch = AttemptWatch(HealthSpec(), tmp_path / "events.jsonl", log, started_at=0.0)
    writer = subprocess.Popen([sys.executable, "-c", PROGRESS, str(log), "4000"])
    broken = None
    while writer.poll() is None:
        broken = broken or watch.poll(1.0).broken
    broken = broken or watch.poll(1.0).broken
    assert log.stat().st_size > 4 * MAX_LINE
    assert broken is not None and broken.rule == "nan" and broken.step == 4000


def test_a_carriage_return_at_the_end_of_a_read_waits_for_what_follows(tmp_path):
    log = tmp_path / "worker.log"
    log.write_bytes(b"abc\r" + b"def\r" + b"\r\n" + b"ghi\r" + b"\n" + b"x\r\n" + b"\r" * 3 + b"jk")
    for size in (1, 2, 3, 4, 5, 1 << 20):
        tail = LogTail(log, max_read=size)
        lines = [line for _ in range(40) for line in tail.read_lines()]
        assert lines + tail.read_lines(flush=True) == ["def", "ghi", "x", "jk"], size
    tail = LogTail(log, max_line=2)
    assert tail.read_lines(flush=True) == ["de … [cut: 1 bytes]", "gh … [cut: 1 bytes]", "x", "jk"]


def test_the_health_rules_read_a_line_as_its_log_pane_shows_it():
    from gputui.engine.rules.health import parse_log_values

    # 8-bit CSI colours and an OSC title, which the old CSI-only stripper left in front of the name.
    assert parse_log_values("step 3 \x9b1mloss\x9b0m=0.5") == {"step": 3.0, "loss": 0.5}
    assert parse_log_values("\x1b]0;train\x07iter 7 loss: 2.5\x1b[K\r\n") == {"step": 7.0, "loss": 2.5}


def test_a_log_truncated_or_replaced_is_read_again_from_its_start(tmp_path):
    log = tmp_path / "worker.log"
    log.write_bytes(b"step 1 loss=0.5\nstep 2 loss=0.4\nstep 3 lo")
    tail = LogTail(log)
    assert tail.read_lines() == ["step 1 loss=0.5", "step 2 loss=0.4"] and tail.held
    log.write_bytes(b"restarted\n")  # truncated in place (a worker reopening its log with "w")
    assert tail.read_lines() == ["restarted"]  # the held "step 3 lo" is dropped with the old text
    fresh = tmp_path / "fresh.log"
    fresh.write_bytes(b"rotated 1\nrotated 2\nrotated 3 is longer than what was read\n")
    fresh.replace(log)  # another file under the same name, longer than what was read
    assert tail.read_lines() == ["rotated 1", "rotated 2", "rotated 3 is longer than what was read"]
