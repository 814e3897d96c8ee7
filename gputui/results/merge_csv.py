"""The merge's CSV reader: each shard's records copied byte for byte while a vectorised scan reads its id
column (results.idscan), or, for what that scan can't read exactly as the csv module does, read and
rewritten by the csv module. Without an id column, blocks free of quotes and blank lines are counted with
bytes methods alone: no numpy."""

from __future__ import annotations

import codecs
import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from gputui.jobs.tabular import lift_csv_field_limit, open_csv
from gputui.results import merge_io
from gputui.results.merge_io import Irregular, Readable
from gputui.results.shards import ShardOutput

if TYPE_CHECKING:
    from gputui.results.idcheck import IdCheck


@dataclass
class CsvHeader:
    """The merged file's header: the first shard's, which every other shard's must equal."""

    fields: list[str] | None = None
    task: str = ""  # the shard it came from


def header_problem(shard: ShardOutput, this: list[str], first: CsvHeader) -> str:
    """A shard whose header is not the first shard's: its rows are left out of the merged file."""
    return f"{shard.task_id}: CSV header {this} differs from {first.fields} of {first.task}: {shard.path}"


def merge_csv(readable: Readable, tmp: Path | None, ids: IdCheck | None, problems: list[str]) -> None:
    """The merged file is the first header, then each shard's records byte for byte, read in blocks while a
    vectorised scan reads the id column. A file the scan can't read exactly like the csv module does
    (a stray quote, a bare carriage return) is read again with the csv module, its rows rewritten so that
    the merged file reads back as the shards' rows."""
    lift_csv_field_limit()
    header = CsvHeader()
    with open(tmp or os.devnull, "wb") as out:
        for shard, entry in readable:
            start, before, n_problems = out.tell(), CsvHeader(header.fields, header.task), len(problems)
            try:
                try:
                    _csv_blocks(shard, entry, out, ids, header, problems)
                except Irregular:
                    entry["verbatim"] = False  # its rows are rewritten by the csv module
                    del problems[n_problems:]  # found again by the second reading
                    if tmp is not None:
                        out.seek(start)
                        out.truncate()
                    if ids is not None:
                        ids.abandon()
                    header.fields, header.task = before.fields, before.task
                    _csv_rows(shard, entry, out, ids, header, problems)
            except (OSError, ValueError, csv.Error) as e:  # UnicodeDecodeError is a ValueError
                problems.append(f"{shard.task_id}: could not merge {shard.path}: {e}")
        merge_io.sync(out)


def _csv_blocks(shard, entry, out, ids: IdCheck | None, header: CsvHeader, problems: list[str]) -> None:
    with open(shard.path, "rb") as f:
        buf = f.read(merge_io.BLOCK)
        bom = buf.startswith(codecs.BOM_UTF8)
        if bom:
            buf = buf[len(codecs.BOM_UTF8) :]
        while b"\n" not in buf:
            more = f.read(merge_io.BLOCK)
            if not more:
                break
            buf += more
        if not buf:  # an empty file: no header, no rows
            entry["rows"] = 0
            return
        end = buf.find(b"\n") + 1 or len(buf)
        line = buf[:end]
        entry["verbatim"] = not bom and line.endswith(b"\n")  # until a last record without its newline
        text = line.decode("utf-8")
        if text.endswith("\n"):  # exactly one line ending: "id\r\r\n" is a header, then a blank record
            text = text[:-2] if text.endswith("\r\n") else text[:-1]
        if not text or '"' in text or "\r" in text or text.startswith("\ufeff"):
            # A header starting with U+FEFF would open the merged file with what reads as a BOM.
            raise Irregular("a blank or quoted header, or one with a carriage return or a second BOM")
        this = text.split(",")
        write = True
        if header.fields is None:
            header.fields, header.task = this, shard.task_id
            out.write(line if line.endswith(b"\n") else line + b"\n")
        elif this != header.fields:
            problems.append(header_problem(shard, this, header))
            write = False
        term = b"\r\n" if line.endswith(b"\r\n") else b"\n"
        col = None if ids is None else ids.begin_columns(shard, this)
        rows = 0
        carry = buf[end:]
        eof = False
        while not eof:
            chunk = f.read(merge_io.BLOCK)
            if chunk.endswith(b"\r"):  # keep a CRLF in one block
                chunk += f.read(1)
            eof = not chunk
            buf = carry + chunk if carry else chunk
            blk = _plain(buf, eof) if col is None else None
            if blk is None:
                from gputui.results.idscan import scan

                blk = scan(buf, col, final=eof)
            if blk.cut:
                view = memoryview(buf)[: blk.cut]
                if not buf.isascii():
                    str(view, "utf-8")  # the csv module would refuse it too
                if eof and buf and not buf.endswith(b"\n"):
                    entry["verbatim"] = False
                if write:
                    out.write(view)
                    if eof and not buf.endswith(b"\n"):
                        out.write(term)
                if col is not None:
                    _see_block(ids, buf, blk, rows)
                rows += blk.n_rows
            carry = buf[blk.cut :]
        entry["rows"] = rows
        if ids is not None:
            ids.end()


class _Counted(NamedTuple):
    cut: int  # buf[:cut] holds whole records
    n_rows: int  # non-blank records in buf[:cut]


def _plain(buf: bytes, final: bool) -> _Counted | None:
    """The records of a block with no quote and no blank record, counted as the scan would count them; None
    for any other block (the scan reads it)."""
    cr = b"\r" in buf
    if b'"' in buf or buf.startswith((b"\n", b"\r\n")) or b"\n\n" in buf or (cr and b"\n\r\n" in buf):
        return None
    if cr and buf.count(b"\r") != buf.count(b"\r\n"):
        raise Irregular("a carriage return outside a CRLF line ending")
    cut = buf.rfind(b"\n") + 1
    rows = buf.count(b"\n", 0, cut)
    if final and cut < len(buf):  # a last record without its newline
        return _Counted(len(buf), rows + 1)
    return _Counted(cut, rows)


def _see_block(ids: IdCheck, buf: bytes, blk, row0: int) -> None:
    import numpy as np

    from gputui.results.idscan import parse_ints

    rows = np.arange(row0, row0 + blk.n_rows, dtype=np.int64)
    fs, fe = blk.starts, blk.ends
    slow = blk.short | blk.quoted
    if ids.vector:
        values, ok = parse_ints(buf, fs, fe)
        ok &= ~slow
        ids.see_ints(values[ok], rows[ok])
        rest = np.flatnonzero(~ok)
    else:
        rest = np.arange(blk.n_rows)
    if not len(rest):
        return
    short, quoted = blk.short, blk.quoted
    raws: list[Any] = []
    for i, s, e in zip(rest.tolist(), fs[rest].tolist(), fe[rest].tolist(), strict=True):
        if short[i]:
            raws.append(None)
        elif quoted[i]:
            raws.append(next(csv.reader(io.StringIO(buf[s:e].decode("utf-8"), newline="")), [""])[0])
        else:
            raws.append(buf[s:e].decode("utf-8"))
    ids.see_values(raws, rows[rest].tolist())


def _csv_rows(shard, entry, out, ids: IdCheck | None, header: CsvHeader, problems: list[str]) -> None:
    """The csv module's reading of one file, its rows rewritten so that they read back the same: for what
    the byte scan won't read. Blank records stay, as the byte copy keeps them; they aren't counted."""
    text_out = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    try:
        # The writer quotes a field holding its delimiter, quote or line terminator ("\n"), not one holding
        # a bare "\r", which the reader takes for a line end: a row with one is written all quoted.
        plain = csv.writer(text_out, lineterminator="\n")
        quoted = csv.writer(text_out, lineterminator="\n", quoting=csv.QUOTE_ALL)

        def put(row: list[str]) -> None:
            (quoted if any("\r" in v for v in row) else plain).writerow(row)

        with open_csv(Path(shard.path)) as f:
            reader = csv.reader(f)
            this = next(reader, None)
            if this is None:  # an empty file: no header, no rows
                entry["rows"] = 0
                return
            write = True
            if header.fields is None:
                header.fields, header.task = this, shard.task_id
                if this and this[0].startswith("\ufeff"):  # quoted, or it would read as the file's BOM
                    quoted.writerow(this)
                else:
                    put(this)
            elif this != header.fields:
                problems.append(header_problem(shard, this, header))
                write = False
            col = None if ids is None else ids.begin_columns(shard, this)
            rows = 0
            batch: list[Any] = []
            for row in reader:
                if not row:
                    if write:
                        plain.writerow(row)
                    continue
                rows += 1
                if write:
                    put(row)
                if col is not None:
                    batch.append(row[col] if col < len(row) else None)
                    if len(batch) >= 65536:
                        ids.see_values(batch)
                        batch = []
            entry["rows"] = rows
            if ids is not None:
                ids.see_values(batch)
                ids.end()
    finally:
        text_out.flush()
        text_out.detach()
