"""The merge's file plumbing, shared by its per-format readers: the shards it reads, the block they are read
in, the kernel copy of bytes that need no reading, and the sync before the merged file replaces the old."""

from __future__ import annotations

import os
from typing import IO

from gputui.results.shards import ShardOutput

BLOCK = 16 << 20  # bytes read at a time: memory stays bounded whatever the size of a shard

Readable = list[tuple[ShardOutput, dict]]
"""The shards a merge reads, in range order, each with its entry in the summary (where its row count goes)."""


class Irregular(Exception):
    """CSV the byte scan can't read exactly like the csv module: a stray quote, a bare carriage return."""


def copy_range(src: int, dst: int, offset: int, count: int) -> None:
    """`count` bytes of `src` from `offset`, appended to `dst`: in the kernel where it can, else by reads."""
    while count > 0:
        try:
            n = os.copy_file_range(src, dst, min(count, 1 << 30), offset)
        except OSError:  # another file system, an old kernel: plain reads and writes
            n = 0
        if n == 0:
            os.lseek(src, offset, os.SEEK_SET)
            while count > 0:
                chunk = os.read(src, min(count, BLOCK))
                if not chunk:
                    raise OSError(f"file shrank while being copied ({count} bytes short)")
                os.write(dst, chunk)
                count -= len(chunk)
            return
        offset += n
        count -= n


def sync(f: IO[bytes]) -> None:
    """Flush and fsync the merged file being written (a check writes to os.devnull: nothing to sync)."""
    f.flush()
    if f.name != os.devnull:
        os.fsync(f.fileno())
