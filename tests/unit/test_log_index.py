"""LineIndex on real files: growth, partial lines, truncation and rotation, search, and a 200 MB log."""

from __future__ import annotations

import os
import sys

from gputui.tui.widgets.log_index import LineIndex


def write(path, data: bytes, mode: str = "ab") -> None:
    with open(path, mode) as f:
        f.write(data)


def lines_of(index: LineIndex) -> list[str]:
    return [index.read_line(i) for i in range(index.total_lines)]


def test_indexes_every_line_and_reads_any_of_them(tmp_path):
    path = tmp_path / "job.log"
    write(path, b"".join(b"line %d\n" % i for i in range(1000)), "wb")
    index = LineIndex(path)
    assert index.scan() == 1000
    assert index.line_count == 1000 and not index.has_partial
    assert index.read_line(0) == "line 0"
    assert index.read_line(537) == "line 537"
    assert index.read_line(999) == "line 999"
    assert index.read_line(1000) == ""  # out of range reads nothing rather than failing


def test_growth_reads_only_new_bytes(tmp_path):
    path = tmp_path / "job.log"
    write(path, b"a\nb\n", "wb")
    index = LineIndex(path)
    assert index.scan() == 2
    write(path, b"c\nd\n")
    # Bytes already indexed are never read again: scanning is bounded by the growth, not the file.
    assert index.scan(max_bytes=4) == 4
    assert index.indexed_bytes == 8 and index.behind == 0
    assert lines_of(index) == ["a", "b", "c", "d"]
    assert index.scan() == 4  # nothing new: nothing changes


def test_scan_budget_spreads_a_big_backlog_over_calls(tmp_path):
    path = tmp_path / "job.log"
    write(path, b"x" * 99 + b"\n", "wb")
    write(path, (b"y" * 99 + b"\n") * 99)
    index = LineIndex(path, chunk_size=64)
    assert index.scan(max_bytes=1000) == 10
    assert index.behind == 9000
    calls = 1
    while index.behind:
        index.scan(max_bytes=1000)
        calls += 1
    assert calls == 10 and index.line_count == 100
    assert index.read_line(0) == "x" * 99 and index.read_line(99) == "y" * 99


def test_partial_last_line_is_shown_apart_then_completed(tmp_path):
    path = tmp_path / "job.log"
    write(path, b"done\r\nepoch 1: 10%", "wb")
    index = LineIndex(path)
    assert index.scan() == 1  # only complete lines are counted ...
    assert index.has_partial and index.total_lines == 2  # ... the one being written is shown apart
    assert index.read_line(0) == "done"  # \r\n line endings are stripped
    assert index.read_line(1) == "epoch 1: 10%"
    write(path, b" 100%\nnext\n")
    assert index.scan() == 3 and not index.has_partial
    assert lines_of(index) == ["done", "epoch 1: 10% 100%", "next"]


def test_file_that_does_not_exist_yet(tmp_path):
    path = tmp_path / "later.log"
    index = LineIndex(path)
    assert index.scan() == 0 and index.total_lines == 0 and not index.exists
    assert index.read_line(0) == "" and index.find("x") is None
    write(path, b"hello\n", "wb")
    assert index.scan() == 1 and index.read_line(0) == "hello"


def test_truncation_resets_the_index(tmp_path):
    path = tmp_path / "job.log"
    write(path, b"old 1\nold 2\nold 3\n", "wb")
    index = LineIndex(path)
    index.scan()
    generation = index.generation
    write(path, b"new\n", "wb")  # shorter: truncated in place
    assert index.scan() == 1
    assert index.generation != generation
    assert lines_of(index) == ["new"]


def test_truncated_and_regrown_between_scans_is_noticed(tmp_path):
    path = tmp_path / "job.log"
    write(path, b"aaaa\nbbbb\n", "wb")
    index = LineIndex(path)
    index.scan()
    write(path, b"a much longer first line\nsecond\n", "wb")  # same inode, bigger than before
    assert index.scan() == 2
    assert lines_of(index) == ["a much longer first line", "second"]


def test_replaced_file_is_reopened(tmp_path):
    path = tmp_path / "job.log"
    write(path, b"one\ntwo\n", "wb")
    index = LineIndex(path)
    index.scan()
    fresh = tmp_path / "fresh.log"
    write(fresh, b"rotated 1\nrotated 2\nrotated 3\n", "wb")
    os.replace(fresh, path)  # log rotation: a new inode under the same name
    assert index.scan() == 3
    assert lines_of(index) == ["rotated 1", "rotated 2", "rotated 3"]
    index.close()
    assert not index.exists


def test_deleted_file_stays_readable(tmp_path):
    path = tmp_path / "job.log"
    write(path, b"kept\n", "wb")
    index = LineIndex(path)
    index.scan()
    path.unlink()
    assert index.scan() == 1 and index.read_line(0) == "kept"


def test_find_forward_backward_wrap_and_case(tmp_path):
    path = tmp_path / "job.log"
    rows = ["start", "ERROR one", "info", "error two", "info", "Error three", "end"]
    write(path, ("\n".join(rows) + "\n").encode(), "wb")
    index = LineIndex(path, chunk_size=16)  # tiny chunks: matches are found across chunk edges
    index.scan()
    assert index.find("error") == 1
    assert index.find("error", 2) == 3
    assert index.find("ERROR", 4) == 5
    assert index.find("error", 6) == 1  # wraps around once
    assert index.find("error", 6, backwards=True) == 5
    assert index.find("error", 4, backwards=True) == 3
    assert index.find("error", 0, backwards=True) == 5  # wraps to the end
    assert index.find("error", 3) == 3  # start is inclusive
    assert index.find("nowhere") is None
    assert index.find("") is None


def test_find_covers_the_partial_line(tmp_path):
    path = tmp_path / "job.log"
    write(path, b"a\nb\nprogress 42%", "wb")
    index = LineIndex(path)
    index.scan()
    assert index.find("42%") == 2


def test_200_mb_log_costs_offsets_only(tmp_path):
    path = tmp_path / "huge.log"
    lines = 2_000_000
    tail = b" " + b"y" * 90 + b"\n"
    write(path, tail.join(b"%07d" % i for i in range(lines)) + tail, "wb")
    assert path.stat().st_size > 190_000_000

    index = LineIndex(path)
    calls = 0
    while True:
        index.scan()  # 16 MiB per call: a UI can repaint between calls
        calls += 1
        if not index.behind:
            break
    assert calls >= 12
    assert index.line_count == lines
    # 8 bytes a line (plus array slack), not the 200 MB of text.
    assert len(index._offsets) * 8 <= 8 * (lines + 1)
    assert index._offsets.itemsize == 8
    assert sys.getsizeof(index._offsets) < 9 * lines
    assert index.read_line(1_999_999) == "1999999 " + "y" * 90
    assert index.read_line(1_234_567).startswith("1234567 ")
    assert index.find("1999998 ") == 1_999_998
