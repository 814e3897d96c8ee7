"""files.tail, the one reader of growing files: new bytes by offset, whole lines, a partial last line held,
a file truncated, replaced or cut and regrown read again from its start, reads bounded."""

from __future__ import annotations

import os

from gputui.files.tail import GrowingFile, LineTail


def append(path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def test_only_new_bytes_are_read_at_most_max_read_at_a_time(tmp_path):
    path = tmp_path / "f"
    grow = GrowingFile(path, max_read=4)
    assert grow.read() == b""  # no file yet: nothing new
    append(path, b"0123456789")
    assert [grow.read() for _ in range(4)] == [b"0123", b"4567", b"89", b""]
    append(path, b"ab")
    assert grow.read() == b"ab" and grow.offset == 12 and not grow.restarted


def test_a_partial_last_line_is_held_until_its_newline(tmp_path):
    path = tmp_path / "f"
    tail = LineTail(path)
    append(path, b"one\r\ntw")
    assert tail.read() == [b"one"] and tail.held == 2
    append(path, b"o\n\nthree")
    assert tail.read() == [b"two", b""]
    assert tail.read(flush=True) == [b"three"] and tail.held == 0


def test_a_truncated_file_is_read_from_its_start_and_the_held_line_dropped(tmp_path):
    path = tmp_path / "f"
    tail = LineTail(path)
    append(path, b"old 1\nold 2\nold 3 no end")
    assert tail.read() == [b"old 1", b"old 2"]
    path.write_bytes(b"new\n")  # shorter: truncated in place
    assert tail.read() == [b"new"] and tail.file.restarted


def test_a_replaced_file_is_read_from_its_start_even_when_longer(tmp_path):
    path = tmp_path / "f"
    tail = LineTail(path)
    append(path, b"a\nb\npart")
    assert tail.read() == [b"a", b"b"]
    fresh = tmp_path / "fresh"
    fresh.write_bytes(b"rotated 1\nrotated 2\nrotated 3\n")
    os.replace(fresh, path)  # a new inode under the same name, longer than what was read
    assert tail.read() == [b"rotated 1", b"rotated 2", b"rotated 3"]


def test_a_file_cut_and_regrown_past_the_offset_between_two_reads_is_noticed(tmp_path):
    path = tmp_path / "f"
    tail = LineTail(path)
    path.write_bytes(b"aaaa\nbbbb\n")
    assert tail.read() == [b"aaaa", b"bbbb"]
    path.write_bytes(b"a much longer first line\nsecond\n")  # same inode, bigger than before
    assert tail.read() == [b"a much longer first line", b"second"]


def test_a_deleted_file_is_nothing_new_until_another_appears(tmp_path):
    path = tmp_path / "f"
    tail = LineTail(path)
    append(path, b"x\n")
    assert tail.read() == [b"x"]
    path.unlink()
    assert tail.read() == []
    append(path, b"y\n")
    assert tail.read() == [b"y"]


def test_from_end_skips_what_is_there(tmp_path):
    path = tmp_path / "f"
    append(path, b"old\n")
    tail = LineTail(path, from_end=True)
    assert tail.read() == []
    append(path, b"new\n")
    assert tail.read() == [b"new"]


def test_a_line_past_max_line_is_held_to_its_head_and_left_out(tmp_path):
    path = tmp_path / "f"
    tail = LineTail(path, max_read=8, max_line=10)
    append(path, b"ok\n" + b"x" * 100)
    assert tail.read() == [b"ok"] and tail.held == 10
    append(path, b"\nafter\n" + b"y" * 20 + b"\n")
    assert tail.read() == [b"after"] and tail.cut_lines == 2
    append(path, b"z" * 30)
    assert tail.read_cut(flush=True) == [(b"z" * 10, 20)]


def test_to_end_reads_until_caught_up_else_one_bounded_read(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(100)))
    assert len(LineTail(path, max_read=16).read()) == 100
    tail = LineTail(path, max_read=16)
    assert tail.read(to_end=False) == [b"line 0", b"line 1"] and tail.offset == 16
