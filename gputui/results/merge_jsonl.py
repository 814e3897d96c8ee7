"""The merge's JSONL reader: each shard's lines copied (a BOM, a CR or a blank line dropped, a last newline
added), the id read from each object. Without ids to read, blocks that need no mending are copied whole."""

from __future__ import annotations

import codecs
import io
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from gputui.results import merge_io
from gputui.results.merge_io import Readable, sync

if TYPE_CHECKING:
    from gputui.results.idcheck import IdCheck


def merge_jsonl(readable: Readable, tmp: Path | None, ids: IdCheck | None, problems: list[str]) -> None:
    with open(tmp or os.devnull, "wb") as out:
        for shard, entry in readable:
            try:
                with open(shard.path, "rb") as f:
                    entry["verbatim"] = True  # until a BOM, a blank line, a CR, a last line without its newline
                    if ids is None:
                        entry["rows"] = _copy_blocks(f, out, entry)
                        continue
                    ids.begin(shard)
                    has_col: bool | None = None  # decided by the first row
                    bad_lines: list[int] = []
                    batch: list[Any] = []
                    rows = 0
                    for lineno, line in enumerate(f, 1):
                        if lineno == 1:
                            line = _without_bom(line, entry)
                        mended = _mended(line, entry)
                        if mended is None:
                            continue
                        rows += 1
                        out.write(mended)
                        if has_col is False:
                            continue
                        try:
                            obj = json.loads(line)
                        except ValueError:
                            obj = None
                        if not isinstance(obj, dict):
                            bad_lines.append(lineno)
                            continue
                        if has_col is None:
                            has_col = ids.column in obj
                            if not has_col:
                                ids.no_column()
                                continue
                        batch.append(obj.get(ids.column))
                        if len(batch) >= 65536:
                            ids.see_values(batch)
                            batch = []
                    entry["rows"] = rows
                    if bad_lines:
                        problems.append(
                            f"{shard.task_id}: {len(bad_lines)} line(s) are not JSON objects, "
                            f"first at line {bad_lines[0]}: {shard.path}"
                        )
                    ids.see_values(batch)
                    ids.end()
            except OSError as e:
                problems.append(f"{shard.task_id}: could not merge {shard.path}: {e}")
        sync(out)


def _without_bom(line: bytes, entry: dict) -> bytes:
    """The first line without a BOM: mid-file, no JSON reader takes it."""
    if line.startswith(codecs.BOM_UTF8):
        entry["verbatim"] = False
        return line[len(codecs.BOM_UTF8) :]
    return line


def _mended(line: bytes, entry: dict) -> bytes | None:
    """The line as the merged file holds it (its CR dropped, a last newline added); None for a blank line."""
    if not line.strip():
        entry["verbatim"] = False
        return None
    if not line.endswith(b"\n") or line.endswith(b"\r\n"):
        entry["verbatim"] = False
    return line.rstrip(b"\r\n") + b"\n"


def _copy_lines(lines: Iterable[bytes], out: IO[bytes], entry: dict) -> int:
    rows = 0
    for line in lines:
        mended = _mended(line, entry)
        if mended is not None:
            rows += 1
            out.write(mended)
    return rows


def _copy_blocks(f: IO[bytes], out: IO[bytes], entry: dict) -> int:
    """The rows of one shard, copied: whole blocks where every line begins with "{" and none holds a CR
    (nothing to mend; counted with bytes methods), any other block line by line."""
    rows = 0
    buf = _without_bom(f.read(max(merge_io.BLOCK, len(codecs.BOM_UTF8))), entry)
    while True:
        more = f.read(merge_io.BLOCK)
        if not buf and not more:
            return rows
        cut = buf.rfind(b"\n") + 1 if more else len(buf)  # at the end, a last line may lack its newline
        part = buf[:cut]
        n = part.count(b"\n")
        if part.endswith(b"\n") and part.startswith(b"{") and b"\r" not in part and part.count(b"\n{") == n - 1:
            out.write(part)
            rows += n
        else:
            rows += _copy_lines(io.BytesIO(part), out, entry)
        buf = buf[cut:] + more
