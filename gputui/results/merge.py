"""The coverage-checked merge of shard outputs, checked against their done-manifests. It refuses to write a
merged file that would silently lose or duplicate rows: any problem leaves the previous merged file alone.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import json
import os
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from gputui.atomic import _fsync_dir, atomic_write_json
from gputui.engine.manifests import _manifest_mismatch, manifest_path, read_manifest
from gputui.jobs.tabular import _lift_csv_field_limit, _open_csv, _parquet, detect_format

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


class _IdCheck:
    """Tracks which shard each id came from; ids are compared in range units, so "7" and 7 are one id."""

    def __init__(self, column: str, key: Callable[[Any], Any]) -> None:
        self.column = column
        self.key = key
        self.owner: dict[Any, int] = {}  # id in range units -> index of the first shard that had it
        self.dups: dict[Any, tuple[Any, set[int]]] = {}  # id -> (a raw id, shards it appeared in)
        self.names: list[str] = []
        self.lacking: list[str] = []  # shards whose output has no id column
        self.checked_any = False
        self._problems: list[str] = []

    def begin(self, shard: ShardOutput) -> None:
        self.cur = len(self.names)
        self.names.append(shard.task_id)
        self.shard = shard
        self.outside: list[Any] = []
        self.n_outside = 0
        self.unmappable: list[str] = []
        self.n_unmappable = 0
        self.n_no_id = 0

    def no_column(self) -> None:
        self.lacking.append(self.shard.task_id)

    def see(self, raw: Any) -> None:
        self.checked_any = True
        if raw is None:
            self.n_no_id += 1
            return
        try:
            k = self.key(raw)
            inside = self.shard.low <= k < self.shard.high
        except Exception as e:  # a user-supplied key; any failure means this id can't be placed
            self.n_unmappable += 1
            if len(self.unmappable) < EXAMPLES:
                self.unmappable.append(f"{raw!r} ({type(e).__name__}: {e})")
            return
        if not inside:
            self.n_outside += 1
            if len(self.outside) < EXAMPLES:
                self.outside.append(raw)
        first = self.owner.setdefault(k, self.cur)
        if first != self.cur:
            self.dups.setdefault(k, (raw, {first}))[1].add(self.cur)

    def end(self) -> None:
        s = self.shard
        where = f"{s.task_id} [{s.low}, {s.high})"
        if self.n_outside:
            self._problems.append(
                f"{where}: {self.n_outside} row(s) with ids outside its range, e.g. {_examples(self.outside)}"
            )
        if self.n_unmappable:
            self._problems.append(
                f"{where}: {self.n_unmappable} row(s) with ids that can't be placed in a range, "
                f"e.g. {', '.join(self.unmappable)}"
            )
        if self.n_no_id:
            self._problems.append(f"{where}: {self.n_no_id} row(s) with no {self.column!r} value")

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
        missing: set[Any] = set()
        shown_missing: list[Any] = []
        bad: list[Any] = []
        for raw in expected_ids:
            try:
                k = self.key(raw)
            except Exception:  # reported below with the others
                bad.append(raw)
                continue
            if k not in self.owner and k not in missing:
                missing.add(k)
                if len(shown_missing) < EXAMPLES:
                    shown_missing.append(raw)
        if missing:
            out.append(f"{len(missing)} expected id(s) have no output row, e.g. {_examples(shown_missing)}")
        if bad:
            out.append(f"{len(bad)} expected id(s) can't be placed in a range, e.g. {_examples(bad)}")
        return out


def _examples(values: list[Any]) -> str:
    return ", ".join(repr(v) for v in values[:EXAMPLES])


# Each merger reads every shard once, streaming rows into `tmp` (None: only check, a problem is already
# known) while feeding ids to the checker, and records per-shard row counts in the entries.


def _merge_csv(
    readable: list[tuple[ShardOutput, dict]], tmp: Path | None, ids: _IdCheck | None, problems: list[str]
) -> None:
    _lift_csv_field_limit()
    header: list[str] | None = None
    first_task = ""
    with open(tmp or os.devnull, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        for shard, entry in readable:
            try:
                with _open_csv(Path(shard.path)) as f:
                    reader = csv.reader(f)
                    this = next(reader, None)
                    if this is None:  # an empty file: no header, no rows
                        entry["rows"] = 0
                        continue
                    write = True
                    if header is None:
                        header, first_task = this, shard.task_id
                        writer.writerow(header)
                    elif this != header:
                        problems.append(
                            f"{shard.task_id}: CSV header {this} differs from {header} of {first_task}: "
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
                    for row in reader:
                        if not row:
                            continue
                        rows += 1
                        if write:
                            writer.writerow(row)
                        if col is not None:
                            ids.see(row[col] if col < len(row) else None)
                    entry["rows"] = rows
                    if ids is not None:
                        ids.end()
            except (OSError, ValueError, csv.Error) as e:  # UnicodeDecodeError is a ValueError
                problems.append(f"{shard.task_id}: could not merge {shard.path}: {e}")
        _sync(out)


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
                        ids.see(obj.get(ids.column))
                    entry["rows"] = rows
                    if bad_lines:
                        problems.append(
                            f"{shard.task_id}: {len(bad_lines)} line(s) are not JSON objects, "
                            f"first at line {bad_lines[0]}: {shard.path}"
                        )
                    if ids is not None:
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
                        for raw in batch.column(col).to_pylist():
                            ids.see(raw)
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
