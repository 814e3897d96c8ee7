"""The coverage-checked merge of shard outputs, checked against their done-manifests. It refuses to write a
merged file that would silently lose or duplicate rows: any problem leaves the previous merged file alone.

Coverage is a property of each shard alone (its ids inside its range, every expected id of the range there),
because ranges do not overlap. So it is checked as each shard finishes (check_shard, into its done-manifest),
and the merge copies the bytes of shards whose manifests vouch for them, unchanged since, at the speed of
the disk; a shard without such a manifest is read and checked here. The input's ids are read only when some
manifest cannot vouch that its range's share of them is as it counted; numpy only when ids are read.
"""

from __future__ import annotations

import datetime as _dt
import os
import secrets
import time
from collections.abc import Callable, Iterable
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gputui.files.atomic import atomic_write_json, fsync_dir
from gputui.jobs.tabular import detect_format
from gputui.results.merge_csv import CsvHeader, header_problem, merge_csv
from gputui.results.merge_io import Readable, copy_range, sync
from gputui.results.merge_jsonl import merge_jsonl
from gputui.results.merge_parquet import merge_parquet
from gputui.results.shards import InputIds, ShardOutput
from gputui.rundir.manifests import manifest_mismatch, manifest_path, read_manifest

if TYPE_CHECKING:
    from gputui.results.idcheck import IdCheck

# Each reader reads every shard once, streaming rows into `tmp` (None: only check, a problem is already
# known) while feeding ids to the checker, and records per-shard row counts in the entries.
MERGERS: dict[str, Callable[[Readable, Path | None, IdCheck | None, list[str]], None]] = {
    "csv": merge_csv,
    "jsonl": merge_jsonl,
    "parquet": merge_parquet,
}


def merge_shards(
    shards: list[ShardOutput],
    merged: Path,
    summary_path: Path,
    *,
    id_column: str | None = None,
    key: Callable[[Any], Any] | None = None,
    expected_ids: Iterable[Any] | None = None,
    input_ids: InputIds | None = None,
    verify: bool = False,
) -> dict:
    """Concatenate shard outputs in range order into `merged`, only if coverage checks find no problem.

    `key` maps a raw id as read from an output (a string for CSV) to the units of the shard ranges;
    the default, int(), suits integer ids. `input_ids`, instead of `key` and `expected_ids`: both, read
    only if some shard's manifest can't vouch for its share of them. `verify`: every output with a manifest
    is hashed again, not trusted by its stat. The summary is written whatever happens, so a failed merge
    still explains itself on disk.
    """
    if input_ids is None:
        if expected_ids is not None and id_column is None:
            raise ValueError("expected_ids needs id_column: without it no row can be matched to an id")
        input_ids = InputIds.given(key, expected_ids)
    t0 = time.monotonic()
    merged, summary_path = Path(merged), Path(summary_path)
    ordered = sorted(shards, key=lambda s: (s.low, s.high, s.task_id))
    entries = [
        {
            "task_id": s.task_id,
            "range": [s.low, s.high],
            "path": str(s.path),
            "rows": None,
            "error_rows": s.error_rows,
        }
        for s in ordered
    ]
    reported = [s.error_rows for s in ordered if s.error_rows is not None]
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

    readable: Readable = []
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
                why = manifest_mismatch(path, manifest, shard.low, shard.high, verify=verify)
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

    vouched = None
    if id_column and fmt in ("csv", "jsonl") and not problems:
        vouched = _vouched(readable, vouching, id_column, input_ids)
    ids: IdCheck | None = None
    expected: Iterable[Any] | None = None
    if id_column and vouched is None:
        from gputui.results.idcheck import IdCheck

        key, expected = input_ids.get()
        ids = IdCheck(id_column, key or int)
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
                    MERGERS[fmt](readable, tmp, ids, problems)
            except ImportError as e:  # Parquet without pyarrow
                problems.append(str(e))
            except OSError as e:
                problems.append(f"could not write the merged file: {e}")
        if vouched is not None:
            problems.extend(vouched)
        elif ids is not None:
            problems.extend(ids.problems(expected))
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
        "ids_checked": vouched is not None or (ids is not None and ids.checked_any),
        "coverage": None if not id_column else "as each shard finished" if vouched is not None else "here",
        "shards": entries,
        "total_rows": sum(e["rows"] or 0 for e in entries),
        "error_rows": sum(reported) if reported else None,  # as the shards' workers reported them
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
    from gputui.results.idcheck import IdCheck, expected_in

    path = Path(shard.path)
    try:
        fmt = detect_format(path)
    except ValueError as e:
        return None, [f"{shard.task_id}: {e}"]
    ids = IdCheck(id_column, key or int)
    entry: dict = {"rows": None}
    problems: list[str] = []
    try:
        MERGERS[fmt]([(shard, entry)], None, ids, problems)
    except ImportError as e:  # Parquet without pyarrow
        return None, [str(e)]
    expected = None if expected_ids is None else expected_in(expected_ids, ids, shard.low, shard.high)
    problems += ids.problems(expected)
    if problems:
        return None, problems
    found = {"column": id_column, "expected": None if expected is None else len(expected), "rows": entry["rows"]}
    return found | {"verbatim": bool(entry.get("verbatim"))}, []


def _vouched(readable: Readable, vouching: list[dict | None], column: str, source: InputIds) -> list[str] | None:
    """When every shard's manifest vouches for its coverage (checked with this id column against as many
    expected ids as its range holds now) and its bytes can be copied as they are: the problems left, which
    are expected ids outside every range. None: read and check the shards here."""
    if not all(isinstance(f, dict) and f.get("column") == column and f.get("verbatim") for f in vouching):
        return None
    for (_shard, entry), found in zip(readable, vouching, strict=True):
        entry["rows"] = found.get("rows")  # the slow path, if it comes to that, counts them again
    counted = [f.get("expected") for f in vouching]
    if source.stamp is not None and all(f.get("input") == source.stamp for f in vouching):
        # The very input each shard's share was counted in: the shares stand; all of its ids are in some range
        # when they add up to its count (ranges don't overlap). Else read it, for examples of what is missing.
        totals = {f.get("input_ids") for f in vouching}
        if len(totals) == 1 and all(isinstance(n, int) for n in counted) and sum(counted) == totals.pop():
            return []
    key, expected_ids = source.get()
    if expected_ids is None:
        return [] if all(n is None for n in counted) else None
    import numpy as np

    from gputui.results.idcheck import EXAMPLES, IdCheck, examples, sorted_unique

    seq = expected_ids if isinstance(expected_ids, (list, tuple, np.ndarray)) else list(expected_ids)
    keys = IdCheck(column, key or int).expected_ints(seq)
    if keys is None:
        return None  # ids that need the key one by one: as cheap to check them here
    keys = sorted_unique(keys)
    lows = np.array([s.low for s, _ in readable], np.int64)
    highs = np.array([s.high for s, _ in readable], np.int64)
    inside = np.searchsorted(keys, highs) - np.searchsorted(keys, lows)
    if counted != inside.tolist():
        return None  # the input changed since: count again
    if inside.sum() == len(keys):
        return []
    covered = np.zeros(len(keys), bool)
    for lo, hi in zip(lows, highs, strict=True):
        covered[np.searchsorted(keys, lo) : np.searchsorted(keys, hi)] = True
    missing = keys[~covered]
    return [f"{len(missing)} expected id(s) have no output row, e.g. {examples(missing[:EXAMPLES].tolist())}"]


def _copy_vouched(fmt: str, readable: Readable, tmp: Path | None, problems: list[str]) -> None:
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
                        first = CsvHeader(_header_fields(header[0]), header[1])
                        problems.append(header_problem(shard, _header_fields(line), first))
                        continue
                out.flush()
                copy_range(f.fileno(), out.fileno(), skip, os.fstat(f.fileno()).st_size - skip)
        sync(out)


def _header_fields(line: bytes) -> list[str]:
    return line.decode("utf-8", "replace").rstrip("\r\n").split(",")
