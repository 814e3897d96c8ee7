"""The coverage-checked merge of shard outputs, checked against their done-manifests. It refuses to write a
merged file that would silently lose or duplicate rows: any problem leaves the previous merged file alone.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime as _dt
import io
import json
import numbers
import os
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from gputui.atomic import _fsync_dir, atomic_write_json
from gputui.engine.manifests import _manifest_mismatch, manifest_path, read_manifest
from gputui.jobs.tabular import _lift_csv_field_limit, _open_csv, _parquet, detect_format
from gputui.results.idscan import Irregular, parse_ints, scan

EXAMPLES = 5  # ids quoted per problem; enough to look one up, short enough to read


# -- merge ------------------------------------------------------------------------------------------------


@dataclass
class ShardOutput:
    task_id: str
    low: int
    high: int
    path: Path


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
    for shard, entry in zip(ordered, entries, strict=True):
        path = Path(shard.path)
        if not path.is_file():
            problems.append(f"{shard.task_id}: output missing: {path}")
            continue
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

    ids = _IdCheck(id_column, key or int) if id_column else None
    written = None
    tmp: Path | None = None
    try:
        if fmt is not None and readable:
            try:
                if not problems:  # otherwise only check: the merged file won't be written anyway
                    # Not mkstemp: its 0600 mode would stick to the merged file.
                    merged.parent.mkdir(parents=True, exist_ok=True)
                    tmp = merged.with_name(f".{merged.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
                _MERGERS[fmt](readable, tmp, ids, problems)
            except ImportError as e:  # Parquet without pyarrow
                problems.append(str(e))
            except OSError as e:
                problems.append(f"could not write the merged file: {e}")
        if ids is not None:
            problems.extend(ids.problems(expected_ids))
        if tmp is not None and not problems:
            os.replace(tmp, merged)
            tmp = None
            _fsync_dir(merged.parent)
            written = str(merged)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)

    summary = {
        "ok": not problems,
        "merged": written,
        "format": fmt,
        "id_column": id_column,
        "ids_checked": ids is not None and ids.checked_any,
        "shards": entries,
        "total_rows": sum(e["rows"] or 0 for e in entries),
        "problems": problems,
        "seconds": round(time.monotonic() - t0, 3),
        "created_at": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    atomic_write_json(summary_path, summary)
    return summary


_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


def int_key(raw: Any) -> int:
    """The key for integer ids. Passing it (or int) lets canonically written ids skip a call per row."""
    return int(str(raw).strip())


def _is_int_key(key: Callable[[Any], Any]) -> bool:
    """int and int_key map a canonical decimal id ("-12", not "012" or " 12") to the integer it spells: those
    ids need no call per row."""
    return key is int or key is int_key


def _as_int(k: Any) -> Any:
    """Keys equal to an integer become that int, as a dict would treat them as one."""
    if type(k) is int:
        return k
    if isinstance(k, numbers.Integral):
        return int(k)
    if isinstance(k, float) and k.is_integer():
        return int(k)
    return k


class _IdCheck:
    """Tracks which shard each id came from; ids are compared in range units, so "7" and 7 are one id.

    Integer keys (all of them in practice) live in numpy arrays: per shard until end(), then as one sorted
    array of every key seen with the shard that had it first. Keys of other types use a dict. Nothing is
    global until end(), so a shard begun and abandoned leaves no trace.
    """

    def __init__(self, column: str, key: Callable[[Any], Any]) -> None:
        self.column = column
        self.key = key
        self.vector = _is_int_key(key)  # see_ints() may be fed canonical decimal ids
        self.names: list[str] = []
        self.lacking: list[str] = []  # shards whose output has no id column
        self.checked_any = False
        self.dups: dict[Any, tuple[Any, set[int]]] = {}  # id -> (a raw id, shards it appeared in)
        self._seen = np.zeros(0, np.int64)  # sorted int keys of the finished shards
        self._owner = np.zeros(0, np.int32)  # for each, the index of the first shard that had it
        self._xowner: dict[Any, int] = {}  # the same for keys that aren't int64s
        self._problems: list[str] = []
        self._open = False

    def begin(self, shard: ShardOutput) -> None:
        self.cur = len(self.names)
        self.names.append(shard.task_id)
        self.shard = shard
        self._open, self._lacked = True, False
        self._keys: list[np.ndarray] = []  # canonical ids, parsed without the key, and their rows
        self._rows: list[np.ndarray] = []
        self._pyk: list[int] = []  # int keys from calls to the key, their rows and raw ids
        self._pyr: list[int] = []
        self._pyraw: list[Any] = []
        self._extra: list[tuple[int, Any, Any]] = []  # (row, key, raw) for other keys
        self.outside: list[tuple[int, Any]] = []  # (row, raw), the first few found through the key
        self.n_outside = 0
        self.unmappable: list[str] = []
        self.n_unmappable = 0
        self.n_no_id = 0
        self._row = 0

    def abandon(self) -> None:
        """Forget the shard begun last, as if begin() had not been called: it is being read again."""
        if self._open:
            self.names.pop()
            if self._lacked:
                self.lacking.pop()
            self._open = False

    def no_column(self) -> None:
        self.lacking.append(self.shard.task_id)
        self._lacked = True

    def see(self, raw: Any) -> None:
        self.see_values([raw])

    def see_ints(self, keys: np.ndarray, rows: np.ndarray) -> None:
        """Canonical decimal ids, already parsed: only when self.vector."""
        if len(keys):
            self.checked_any = True
            self._keys.append(keys.astype(np.int64, copy=False))
            self._rows.append(rows.astype(np.int64, copy=False))

    def see_values(self, raws: list[Any], rows: Iterable[int] | None = None) -> None:
        """Raw ids (None: the row has none) of the given rows, by default the rows after the last ones."""
        if not raws:
            return
        self.checked_any = True
        if rows is None:
            rows = range(self._row, self._row + len(raws))
            self._row += len(raws)
        key, low, high = self.key, self.shard.low, self.shard.high
        pyk, pyr, pyraw = self._pyk, self._pyr, self._pyraw
        for raw, row in zip(raws, rows, strict=True):
            if raw is None:
                self.n_no_id += 1
                continue
            try:
                k = key(raw)
                inside = low <= k < high
            except Exception as e:  # a user-supplied key; any failure means this id can't be placed
                self.n_unmappable += 1
                if len(self.unmappable) < EXAMPLES:
                    self.unmappable.append(f"{raw!r} ({type(e).__name__}: {e})")
                continue
            if not inside:
                self.n_outside += 1
                if len(self.outside) < EXAMPLES:
                    self.outside.append((row, raw))
            if type(k) is not int:
                k = _as_int(k)
            if type(k) is int and _I64_MIN <= k <= _I64_MAX:
                pyk.append(k)
                pyr.append(row)
                pyraw.append(raw)
            else:
                self._extra.append((row, k, raw))

    def end(self) -> None:
        s = self.shard
        self._open = False
        kv = np.concatenate(self._keys) if self._keys else np.zeros(0, np.int64)
        rv = np.concatenate(self._rows) if self._rows else np.zeros(0, np.int64)
        low, high = int(s.low), int(s.high)
        out = np.zeros(len(kv), bool)
        if low > _I64_MAX or high <= _I64_MIN:
            out[:] = True
        else:
            if low > _I64_MIN:
                out |= kv < low
            if high <= _I64_MAX:
                out |= kv >= high
        hits = np.flatnonzero(out)
        self.n_outside += len(hits)
        outside = self.outside + [(int(rv[i]), str(kv[i])) for i in hits[:EXAMPLES]]
        outside.sort(key=lambda t: t[0])

        where = f"{s.task_id} [{s.low}, {s.high})"
        if self.n_outside:
            shown = [raw for _, raw in outside[:EXAMPLES]]
            self._problems.append(
                f"{where}: {self.n_outside} row(s) with ids outside its range, e.g. {_examples(shown)}"
            )
        if self.n_unmappable:
            self._problems.append(
                f"{where}: {self.n_unmappable} row(s) with ids that can't be placed in a range, "
                f"e.g. {', '.join(self.unmappable)}"
            )
        if self.n_no_id:
            self._problems.append(f"{where}: {self.n_no_id} row(s) with no {self.column!r} value")
        self._record(kv, rv)
        self._keys, self._rows, self._pyk, self._pyr, self._pyraw = [], [], [], [], []
        for _, k, raw in sorted(self._extra, key=lambda t: t[0]):
            first = self._xowner.setdefault(k, self.cur)
            if first != self.cur:
                self.dups.setdefault(k, (raw, {first}))[1].add(self.cur)
        self._extra = []

    def _record(self, kv: np.ndarray, rv: np.ndarray) -> None:
        """Add this shard's int keys to those seen, noting the ones an earlier shard had."""
        n_vec = len(kv)
        if self._pyk:
            kv = np.concatenate([kv, np.array(self._pyk, np.int64)])
            rv = np.concatenate([rv, np.array(self._pyr, np.int64)])
            order = np.argsort(rv, kind="stable")  # row order, so np.unique's first index is the first row
            kv, rv, src = kv[order], rv[order], order
        else:
            src = None
        if not len(kv):
            return
        uniq, first = np.unique(kv, return_index=True)
        pos = np.searchsorted(self._seen, uniq)
        found = pos < len(self._seen)
        found[found] = self._seen[pos[found]] == uniq[found]
        hit = np.flatnonzero(found)
        for i in hit[np.argsort(rv[first[hit]], kind="stable")]:
            k = int(uniq[i])
            j = int(first[i]) if src is None else int(src[first[i]])
            raw = str(k) if j < n_vec else self._pyraw[j - n_vec]
            owner = int(self._owner[pos[i]])
            self.dups.setdefault(k, (raw, {owner}))[1].add(self.cur)
        new = uniq[~found]
        if len(new):
            seen = np.concatenate([self._seen, new])
            owner = np.concatenate([self._owner, np.full(len(new), self.cur, np.int32)])
            order = np.argsort(seen, kind="stable")  # two sorted runs: a linear merge
            self._seen, self._owner = seen[order], owner[order]

    def problems(self, expected_ids: Iterable[Any] | None) -> list[str]:
        out = list(self._problems)
        if self.dups:
            shown = [
                f"{raw!r} ({', '.join(self.names[i] for i in sorted(where))})"
                for raw, where in list(self.dups.values())[:EXAMPLES]
            ]
            out.append(f"{len(self.dups)} id(s) appear in more than one shard, e.g. {'; '.join(shown)}")
        if expected_ids is None:
            return out
        if self.lacking:
            out.append(
                f"can't check that every id has output: no {self.column!r} column in {', '.join(self.lacking)}"
            )
            return out
        seq = expected_ids if isinstance(expected_ids, (list, tuple, np.ndarray)) else list(expected_ids)
        ints = self._expected_ints(seq)
        bad: list[Any] = []
        xmissing: dict[Any, int] = {}  # missing non-int64 key -> its first position
        if ints is None:
            ks: list[int] = []
            ps: list[int] = []
            for p, raw in enumerate(seq):
                try:
                    k = _as_int(self.key(raw))
                except Exception:  # reported below with the others
                    bad.append(raw)
                    continue
                if type(k) is int and _I64_MIN <= k <= _I64_MAX:
                    ks.append(k)
                    ps.append(p)
                elif k not in self._xowner and k not in xmissing:
                    xmissing[k] = p
            keys, positions = np.array(ks, np.int64), np.array(ps, np.int64)
        else:
            keys, positions = ints, np.arange(len(ints))
        pos = np.searchsorted(self._seen, keys)
        present = pos < len(self._seen)
        present[present] = self._seen[pos[present]] == keys[present]
        absent = ~present
        mk, first = np.unique(keys[absent], return_index=True)
        firsts = sorted(np.sort(positions[absent][first])[:EXAMPLES].tolist() + list(xmissing.values()))
        n_missing = len(mk) + len(xmissing)
        if n_missing:
            shown_missing = [seq[p] for p in firsts[:EXAMPLES]]
            out.append(f"{n_missing} expected id(s) have no output row, e.g. {_examples(shown_missing)}")
        if bad:
            out.append(f"{len(bad)} expected id(s) can't be placed in a range, e.g. {_examples(bad)}")
        return out

    def _expected_ints(self, seq: Any) -> np.ndarray | None:
        """The expected ids as int64 keys without a call per id, where the key is int() on integers."""
        if not self.vector or not len(seq):
            return None
        if isinstance(seq, np.ndarray):
            if seq.dtype.kind == "i" or (seq.dtype.kind == "u" and (not seq.size or seq.max() <= _I64_MAX)):
                return seq.astype(np.int64).ravel() if seq.ndim == 1 else None
            return None
        if set(map(type, seq)) != {int}:
            return None
        try:
            return np.fromiter(seq, np.int64, len(seq))
        except OverflowError:
            return None


def _examples(values: list[Any]) -> str:
    return ", ".join(repr(v) for v in values[:EXAMPLES])


# Each merger reads every shard once, streaming rows into `tmp` (None: only check, a problem is already
# known) while feeding ids to the checker, and records per-shard row counts in the entries.


BLOCK = 16 << 20  # bytes read at a time: memory stays bounded whatever the size of a shard


@dataclass
class _CsvHeader:
    fields: list[str] | None = None
    task: str = ""


def _merge_csv(
    readable: list[tuple[ShardOutput, dict]], tmp: Path | None, ids: _IdCheck | None, problems: list[str]
) -> None:
    """The merged file is the first header, then each shard's records byte for byte, read in blocks while a
    vectorised scan reads the id column. A file the scan can't read exactly like the csv module does
    (a stray quote, a bare carriage return) is read again, and its rows rewritten, with the csv module."""
    _lift_csv_field_limit()
    header = _CsvHeader()
    with open(tmp or os.devnull, "wb") as out:
        for shard, entry in readable:
            start, before = out.tell(), _CsvHeader(header.fields, header.task)
            try:
                try:
                    _csv_blocks(shard, entry, out, ids, header, problems)
                except Irregular:
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


def _csv_blocks(shard, entry, out, ids: _IdCheck | None, header: _CsvHeader, problems: list[str]) -> None:
    with open(shard.path, "rb") as f:
        buf = f.read(BLOCK)
        if buf.startswith(codecs.BOM_UTF8):
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
        text = line.decode("utf-8").rstrip("\r\n")
        if not text or '"' in text or "\r" in text:
            raise Irregular("a blank or quoted header")
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


def _see_block(ids: _IdCheck, buf: bytes, blk, row0: int) -> None:
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


def _csv_rows(shard, entry, out, ids: _IdCheck | None, header: _CsvHeader, problems: list[str]) -> None:
    """The csv module's reading of one file, its rows rewritten: for what the byte scan won't read."""
    text_out = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    try:
        writer = csv.writer(text_out, lineterminator="\n")
        with _open_csv(Path(shard.path)) as f:
            reader = csv.reader(f)
            this = next(reader, None)
            if this is None:  # an empty file: no header, no rows
                entry["rows"] = 0
                return
            write = True
            if header.fields is None:
                header.fields, header.task = this, shard.task_id
                writer.writerow(this)
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
                    continue
                rows += 1
                if write:
                    writer.writerow(row)
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
    readable: list[tuple[ShardOutput, dict]], tmp: Path | None, ids: _IdCheck | None, problems: list[str]
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
                    for lineno, line in enumerate(f, 1):
                        if not line.strip():
                            continue
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
    readable: list[tuple[ShardOutput, dict]], tmp: Path | None, ids: _IdCheck | None, problems: list[str]
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
