"""Small streaming readers for the three input/output formats gputui shards: CSV, JSONL and Parquet.

Only the stdlib is needed for CSV/JSONL, so the scheduler runs on machines without pandas or pyarrow;
pyarrow is imported only when a Parquet file is actually touched.
"""

from __future__ import annotations

import csv
import json
import numbers
import os
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

FORMATS = ("csv", "jsonl", "parquet")
PARQUET_HINT = "reading Parquet needs pyarrow: pip install 'gputui[parquet]'"

_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
_INT_RE = re.compile(r"\s*[+-]?[0-9]+\s*")
KEEP_BAD_BYTES = "surrogateescape"  # `errors=` for readers that go on past a byte that is not UTF-8
_SURROGATE = re.compile("[\ud800-\udfff]")


class ColumnMissingError(KeyError):
    """A column the job names is not in the file; the message lists what is there so typos are obvious."""

    def __str__(self) -> str:  # KeyError would repr() the message, quotes and all
        return str(self.args[0]) if self.args else ""


class MissingDependencyError(ImportError):
    """An optional extra (pyarrow) is needed for this file; the message says what to install."""


def detect_format(path: str | os.PathLike[str]) -> str:
    suffix = Path(path).suffix.lower()
    try:
        return _SUFFIXES[suffix]
    except KeyError:
        known = ", ".join(sorted(_SUFFIXES))
        got = suffix or "(no extension)"
        raise ValueError(f"{path}: unknown file type {got!r}; expected one of {known}") from None


def read_columns(path: str | os.PathLike[str], fmt: str | None = None, *, errors: str = "strict") -> list[str]:
    path = Path(path)
    fmt = _fmt(path, fmt)
    if fmt == "csv":
        with open_csv(path, errors) as f:
            return next(csv.reader(f), [])
    if fmt == "jsonl":
        for _, obj in _iter_jsonl(path, errors):
            return list(obj)
        return []
    return list(import_parquet().read_schema(path).names)


def read_column(
    path: str | os.PathLike[str], column: str, fmt: str | None = None, *, errors: str = "strict"
) -> list[Any]:
    """All values of one column, in file order. CSV values are strings; cells a short row lacks are None.

    JSONL rows are free-form, so the column must be in the first row; later rows without it give None.
    `errors=KEEP_BAD_BYTES`: a byte that is not UTF-8 becomes a lone surrogate instead of failing the read.
    """
    path = Path(path)
    fmt = _fmt(path, fmt)
    if fmt == "csv":
        with open_csv(path, errors) as f:
            reader = csv.reader(f)
            header = next(reader, [])
            if column not in header:
                raise _missing(path, column, header)
            i = header.index(column)
            return [row[i] if i < len(row) else None for row in reader if row]
    if fmt == "jsonl":
        values: list[Any] = []
        for _, obj in _iter_jsonl(path, errors):
            if not values and column not in obj:
                raise _missing(path, column, list(obj))
            values.append(obj.get(column))
        if not values:
            raise _missing(path, column, [])
        return values
    pq = import_parquet()
    names = pq.read_schema(path).names
    if column not in names:
        raise _missing(path, column, names)
    return pq.read_table(path, columns=[column]).column(column).to_pylist()


def normalize_ids(values: Iterable[Any]) -> tuple[list[Any], bool]:
    """Sorted unique ids and whether they are integers.

    CSV gives every id as a string, so "007" and 7 must both count as the integer 7; otherwise shard
    ranges could not be given in id units. One non-integer value (including a blank cell or a bool)
    switches the whole set to string mode, where ranges are positions in the sorted list.
    """
    values = values if isinstance(values, list | tuple) else list(values)
    if all(type(v) is str and v.isascii() and v.isdigit() for v in values):  # a CSV's plain ids, at C speed
        return sorted(set(map(int, values))), True
    ints: set[int] = set()
    for v in values:
        if isinstance(v, bool):
            break
        if isinstance(v, numbers.Integral) or (isinstance(v, str) and _INT_RE.fullmatch(v)):
            ints.add(int(v))
        else:
            break
    else:
        return sorted(ints), True
    return sorted({str(v) for v in values}), False


def first_undecodable(values: Iterable[Any]) -> int | None:
    """The position of the first value that is not valid text (a lone surrogate: a byte read with
    KEEP_BAD_BYTES, or a JSON escape), or None."""
    for i, v in enumerate(values):
        if isinstance(v, str) and not v.isascii() and _SURROGATE.search(v):
            return i
    return None


def count_rows(path: str | os.PathLike[str], fmt: str | None = None) -> int:
    """Data rows as a reader sees them: a quoted newline stays inside its CSV row; blank lines don't count."""
    path = Path(path)
    fmt = _fmt(path, fmt)
    if fmt == "csv":
        with open_csv(path) as f:
            reader = csv.reader(f)
            if next(reader, None) is None:
                return 0
            return sum(1 for row in reader if row)
    if fmt == "jsonl":
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    return import_parquet().ParquetFile(path).metadata.num_rows


def iter_rows(
    path: str | os.PathLike[str], fmt: str | None = None, *, errors: str = "strict"
) -> Iterator[dict[str, Any]]:
    path = Path(path)
    fmt = _fmt(path, fmt)
    if fmt == "csv":
        with open_csv(path, errors) as f:
            yield from csv.DictReader(f)
    elif fmt == "jsonl":
        for _, obj in _iter_jsonl(path, errors):
            yield obj
    else:
        for batch in import_parquet().ParquetFile(path).iter_batches():
            yield from batch.to_pylist()


# -- helpers shared with merge.py ------------------------------------------------------------------------


def _fmt(path: Path, fmt: str | None) -> str:
    if fmt is None:
        return detect_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return fmt


def open_csv(path: Path, errors: str = "strict"):
    """Open for the csv module: newline="" keeps quoted newlines intact, utf-8-sig drops an Excel BOM."""
    lift_csv_field_limit()
    return open(path, newline="", encoding="utf-8-sig", errors=errors)


_field_limit_lifted = False


def lift_csv_field_limit() -> None:
    """Model outputs easily exceed csv's 128 KiB default field limit, which would abort a whole read."""
    global _field_limit_lifted
    if _field_limit_lifted:
        return
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            break
        except OverflowError:  # C long is 32-bit on some platforms
            limit //= 2
    _field_limit_lifted = True


def _iter_jsonl(path: Path, errors: str = "strict") -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) for each non-blank line; errors name the file and line."""
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line if errors == "strict" else line.decode("utf-8-sig", errors))
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON: {e}") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def _missing(path: Path, column: str, available: list[str]) -> ColumnMissingError:
    shown = ", ".join(repr(c) for c in available) if available else "(none)"
    return ColumnMissingError(f"{path}: no column {column!r}; available columns: {shown}")


def import_parquet():
    """pyarrow.parquet, or an error that says how to install it."""
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise MissingDependencyError(PARQUET_HINT) from e
    return pq
