"""The coverage-checked merge of shard outputs, checked against their done-manifests. It refuses to write a
merged file that would silently lose or duplicate rows: any problem leaves the previous merged file alone.

Coverage is a property of each shard alone (its ids inside its range, every expected id of the range there),
because ranges do not overlap. So it is checked as each shard finishes (check_shard, into its done-manifest),
and the merge copies the bytes of shards whose manifests vouch for them, unchanged since, at the speed of
the disk; a shard without such a manifest is read and checked here.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime as _dt
import io
import json
import os
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from gputui.files.atomic import atomic_write_json, fsync_dir
from gputui.jobs.tabular import _lift_csv_field_limit, _open_csv, _parquet, detect_format
from gputui.results.idcheck import EXAMPLES, IdCheck, ShardOutput, examples, expected_in, sorted_unique
from gputui.results.idscan import Irregular, parse_ints, scan
from gputui.rundir.manifests import _manifest_mismatch, manifest_path, read_manifest

# -- merge ------------------------------------------------------------------------------------------------


def merge_shards(
    shards: list[ShardOutput],
    merged: Path,
    summary_path: Path,
    *,
    id_column: str | None = None,
    key: Callable[[Any], Any] | None = None,
    expected_ids: Iterable[Any] | None = None,
) -> dict:
    """Concatenate shard outputs in range order into `merged`, only if coverage checks find no problem.

    `key` maps a raw id as read from an output (a string for CSV) to the units of the shard ranges;
    the default, int(), suits integer ids. The summary is written whatever happens, so a failed merge
    still explains itself on disk.
    """
    if expected_ids is not None and id_column is None:
        raise ValueError("expected_ids needs id_column: without it no row can be matched to an id")
    t0 = time.monotonic()
    merged, summary_path = Path(merged), Path(summary_path)
    ordered = sorted(shards, key=lambda s: (s.low, s.high, s.task_id))
    entries = [
        {"task_id": s.task_id, "range": [s.low, s.high], "path": str(s.path), "rows": None} for s in ordered
    ]
    problems: list[str] = []

    fmt = None
    try:
        fmt = detect_format(merged)
    except ValueError as e:
        problems.append(f"merged file: {e}")
    if not ordered:
        problems.append("no shard outputs to merge")
    for prev, cur in pairwise(ordered):
        if cur.low < prev.high:
            problems.append(
                f"{cur.task_id} range [{cur.low}, {cur.high}) overlaps "
                f"{prev.task_id} range [{prev.low}, {prev.high})"
            )

    readable: list[tuple[ShardOutput, dict]] = []
    vouching: list[dict | None] = []  # each readable shard's coverage, as its manifest records it
    for shard, entry in zip(ordered, entries, strict=True):
        path = Path(shard.path)
        if not path.is_file():
            problems.append(f"{shard.task_id}: output missing: {path}")
            continue
        manifest = None
        if manifest_path(path).exists():
            manifest = read_manifest(path)
            if manifest is None:
                why = "its manifest is unreadable"
            else:
                why = _manifest_mismatch(path, manifest, shard.low, shard.high)
            if why:
                problems.append(f"{shard.task_id}: output changed since it was marked done ({why}): {path}")
        try:
            shard_fmt = detect_format(path)
        except ValueError as e:
            problems.append(f"{shard.task_id}: {e}")
            continue
        if fmt is not None and shard_fmt != fmt:
            problems.append(f"{shard.task_id}: output is {shard_fmt} but the merged file is {fmt}: {path}")
            continue
        readable.append((shard, entry))
        vouching.append(manifest.get("ids") if isinstance(manifest, dict) else None)

    ids = IdCheck(id_column, key or int) if id_column else None
    vouched = None
    if ids is not None and fmt in ("csv", "jsonl") and not problems:
        vouched = _vouched(readable, vouching, ids, expected_ids)
    written = None
    tmp: Path | None = None
    try:
        if fmt is not None and readable:
            try:
                if not problems:  # otherwise only check: the merged file won't be written anyway
                    # Not mkstemp: its 0600 mode would stick to the merged file.
                    merged.parent.mkdir(parents=True, exist_ok=True)
                    tmp = merged.with_name(f".{merged.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
                if vouched is not None:
                    _copy_vouched(fmt, readable, tmp, problems)
                else:
                    _MERGERS[fmt](readable, tmp, ids, problems)
            except ImportError as e:  # Parquet without pyarrow
                problems.append(str(e))
            except OSError as e:
                problems.append(f"could not write the merged file: {e}")
        if vouched is not None:
            problems.extend(vouched)
        elif ids is not None:
            problems.extend(ids.problems(expected_ids))
        if tmp is not None and not problems:
            os.replace(tmp, merged)
            tmp = None
            fsync_dir(merged.parent)
            written = str(merged)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)

    summary = {
        "ok": not problems,
        "merged": written,
        "format": fmt,
        "id_column": id_column,
        "ids_checked": ids is not None and (vouched is not None or ids.checked_any),
        "coverage": None if ids is None else "as each shard finished" if vouched is not None else "here",
        "shards": entries,
        "total_rows": sum(e["rows"] or 0 for e in entries),
        "problems": problems,
        "seconds": round(time.monotonic() - t0, 3),
        "created_at": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    atomic_write_json(summary_path, summary)
    return summary


def check_shard(
    shard: ShardOutput, *, id_column: str, key: Callable[[Any], Any] | None, expected_ids: Iterable[Any] | None
) -> tuple[dict | None, list[str]]:
    """The merge's coverage check on one shard output, as it finishes: what its done-manifest records
    ({column, expected, rows, verbatim}) when its ids are all inside its range and cover every expected id
    of the range, else the problems found."""
    path = Path(shard.path)
    try:
        fmt = detect_format(path)
    except ValueError as e:
        return None, [f"{shard.task_id}: {e}"]
    ids = IdCheck(id_column, key or int)
    entry: dict = {"rows": None}
    problems: list[str] = []
    try:
        _MERGERS[fmt]([(shard, entry)], None, ids, problems)
    except ImportError as e:  # Parquet without pyarrow
        return None, [str(e)]
    expected = None if expected_ids is None else expected_in(expected_ids, ids, shard.low, shard.high)
    problems += ids.problems(expected)
    if problems:
        return None, problems
    found = {"column": id_column, "expected": None if expected is None else len(expected), "rows": entry["rows"]}
    return found | {"verbatim": bool(entry.get("verbatim"))}, []


def _vouched(
    readable: list[tuple[ShardOutput, dict]], vouching: list[dict | None], ids: IdCheck, expected_ids
) -> list[str] | None:
    """When every shard's manifest vouches for its coverage (checked with this id column against as many
    expected ids as its range holds now) and its bytes can be copied as they are: the problems left, which
    are expected ids outside every range. None: read and check the shards here."""
    if not all(isinstance(f, dict) and f.get("column") == ids.column and f.get("verbatim") for f in vouching):
        return None
    for (_shard, entry), found in zip(readable, vouching, strict=True):
        entry["rows"] = found.get("rows")  # the slow path, if it comes to that, counts them again
    if expected_ids is None:
        return [] if all(f.get("expected") is None for f in vouching) else None
    seq = expected_ids if isinstance(expected_ids, (list, tuple, np.ndarray)) else list(expected_ids)
    keys = ids.expected_ints(seq)
    if keys is None:
        return None  # ids that need the key one by one: as cheap to check them here
    keys = sorted_unique(keys)
    lows = np.array([s.low for s, _ in readable], np.int64)
    highs = np.array([s.high for s, _ in readable], np.int64)
    inside = np.searchsorted(keys, highs) - np.searchsorted(keys, lows)
    if [f.get("expected") for f in vouching] != inside.tolist():
        return None  # the input changed since: count again
    if inside.sum() == len(keys):
        return []
    covered = np.zeros(len(keys), bool)
    for lo, hi in zip(lows, highs, strict=True):
        covered[np.searchsorted(keys, lo) : np.searchsorted(keys, hi)] = True
    missing = keys[~covered]
    return [f"{len(missing)} expected id(s) have no output row, e.g. {examples(missing[:EXAMPLES].tolist())}"]


def _copy_vouched(
    fmt: str, readable: list[tuple[ShardOutput, dict]], tmp: Path | None, problems: list[str]
) -> None:
    """Vouched shards byte for byte, in the kernel (copy_file_range): a CSV's header once, checked to be the
    same in every shard."""
    if tmp is None:
        return
    header: tuple[bytes, str] | None = None
    with open(tmp, "wb") as out:
        for shard, _entry in readable:
            with open(shard.path, "rb") as f:
                skip = 0
                if fmt == "csv":
                    line = f.readline()
                    skip = len(line)
                    if header is None:
                        header = line, shard.task_id
                        out.write(line)
                    elif line.rstrip(b"\r\n") != header[0].rstrip(b"\r\n"):
                        this, first = (_header_fields(x) for x in (line, header[0]))
                        problems.append(
                            f"{shard.task_id}: CSV header {this} differs from {first} of {header[1]}: {shard.path}"
                        )
                        continue
                out.flush()
                _copy_range(f.fileno(), out.fileno(), skip, os.fstat(f.fileno()).st_size - skip)
        _sync(out)


def _header_fields(line: bytes) -> list[str]:
    return line.decode("utf-8", "replace").rstrip("\r\n").split(",")


def _copy_range(src: int, dst: int, offset: int, count: int) -> None:
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


# Each merger reads every shard once, streaming rows into `tmp` (None: only check, a problem is already
# known) while feeding ids to the checker, and records per-shard row counts in the entries.


BLOCK = 16 << 20  # bytes read at a time: memory stays bounded whatever the size of a shard


@dataclass
class _CsvHeader:
    fields: list[str] | None = None
    task: str = ""


def _merge_csv(
    readable: list[tuple[ShardOutput, dict]], tmp: Path | None, ids: IdCheck | None, problems: list[str]
) -> None:
    """The merged file is the first header, then each shard's records byte for byte, read in blocks while a
    vectorised scan reads the id column. A file the scan can't read exactly like the csv module does
    (a stray quote, a bare carriage return) is read again with the csv module, its rows rewritten so that
    the merged file reads back as the shards' rows."""
    _lift_csv_field_limit()
    header = _CsvHeader()
    with open(tmp or os.devnull, "wb") as out:
        for shard, entry in readable:
            start, before, n_problems = out.tell(), _CsvHeader(header.fields, header.task), len(problems)
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
        _sync(out)


def _csv_blocks(shard, entry, out, ids: IdCheck | None, header: _CsvHeader, problems: list[str]) -> None:
    with open(shard.path, "rb") as f:
        buf = f.read(BLOCK)
        bom = buf.startswith(codecs.BOM_UTF8)
        if bom:
            buf = buf[len(codecs.BOM_UTF8) :]
        while b"\n" not in buf:
            more = f.read(BLOCK)
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
            problems.append(
                f"{shard.task_id}: CSV header {this} differs from {header.fields} of {header.task}: {shard.path}"
            )
            write = False
        term = b"\r\n" if line.endswith(b"\r\n") else b"\n"
        col = None
        if ids is not None:
            ids.begin(shard)
            if ids.column in this:
                col = this.index(ids.column)
            else:
                ids.no_column()
        rows = 0
        carry = buf[end:]
        eof = False
        while not eof:
            chunk = f.read(BLOCK)
            if chunk.endswith(b"\r"):  # keep a CRLF in one block
                chunk += f.read(1)
            eof = not chunk
            buf = carry + chunk if carry else chunk
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


def _see_block(ids: IdCheck, buf: bytes, blk, row0: int) -> None:
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


def _csv_rows(shard, entry, out, ids: IdCheck | None, header: _CsvHeader, problems: list[str]) -> None:
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

        with _open_csv(Path(shard.path)) as f:
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
                problems.append(
                    f"{shard.task_id}: CSV header {this} differs from {header.fields} of {header.task}: "
                    f"{shard.path}"
                )
                write = False
            col = None
            if ids is not None:
                ids.begin(shard)
                if ids.column in this:
                    col = this.index(ids.column)
                else:
                    ids.no_column()
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


def _merge_jsonl(
    readable: list[tuple[ShardOutput, dict]], tmp: Path | None, ids: IdCheck | None, problems: list[str]
) -> None:
    with open(tmp or os.devnull, "wb") as out:
        for shard, entry in readable:
            try:
                with open(shard.path, "rb") as f:
                    if ids is not None:
                        ids.begin(shard)
                    has_col: bool | None = None  # decided by the first row
                    bad_lines: list[int] = []
                    batch: list[Any] = []
                    rows = 0
                    entry["verbatim"] = True  # until a BOM, a blank line, a CR, a last line without its newline
                    for lineno, line in enumerate(f, 1):
                        if lineno == 1 and line.startswith(codecs.BOM_UTF8):  # mid-file, no JSON reader takes it
                            line = line[len(codecs.BOM_UTF8) :]
                            entry["verbatim"] = False
                        if not line.strip():
                            entry["verbatim"] = False
                            continue
                        if not line.endswith(b"\n") or line.endswith(b"\r\n"):
                            entry["verbatim"] = False
                        rows += 1
                        out.write(line.rstrip(b"\r\n") + b"\n")
                        if ids is None or has_col is False:
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
                    if ids is not None:
                        ids.see_values(batch)
                        ids.end()
            except OSError as e:
                problems.append(f"{shard.task_id}: could not merge {shard.path}: {e}")
        _sync(out)


def _merge_parquet(
    readable: list[tuple[ShardOutput, dict]], tmp: Path | None, ids: IdCheck | None, problems: list[str]
) -> None:
    """Batch by batch, so only one row group is in memory at a time."""
    pq = _parquet()
    schema = None
    first_task = ""
    writer = None
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(tmp, "wb")) if tmp is not None else None
        for shard, entry in readable:
            try:
                pf = pq.ParquetFile(shard.path)
                this = pf.schema_arrow
                write = True
                if schema is None:
                    schema, first_task = this, shard.task_id
                    if out is not None:
                        writer = pq.ParquetWriter(out, schema)
                elif not this.equals(schema, check_metadata=False):
                    problems.append(
                        f"{shard.task_id}: Parquet schema {_schema_text(this)} differs from "
                        f"{_schema_text(schema)} of {first_task}: {shard.path}"
                    )
                    write = False
                col = None
                if ids is not None:
                    ids.begin(shard)
                    if ids.column in this.names:
                        col = ids.column
                    else:
                        ids.no_column()
                for batch in pf.iter_batches():
                    if write and writer is not None:
                        writer.write_batch(batch)
                    if col is not None:
                        ids.see_values(batch.column(col).to_pylist())
                entry["rows"] = pf.metadata.num_rows
                if ids is not None:
                    ids.end()
            except (OSError, ValueError) as e:  # ArrowInvalid is a ValueError, ArrowIOError an OSError
                problems.append(f"{shard.task_id}: could not merge {shard.path}: {e}")
        if writer is not None:
            writer.close()
        if out is not None:
            _sync(out)


def _schema_text(schema) -> str:
    return "(" + ", ".join(f"{n}: {t}" for n, t in zip(schema.names, schema.types, strict=True)) + ")"


def _sync(f) -> None:
    f.flush()
    if f.name != os.devnull:
        os.fsync(f.fileno())


_MERGERS = {"csv": _merge_csv, "jsonl": _merge_jsonl, "parquet": _merge_parquet}
