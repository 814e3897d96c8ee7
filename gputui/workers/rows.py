"""Input selection, the resumable partial file and the final output of the continuation worker.

Rows are picked by the planner's own id rules (`tabular.normalize_ids`), so a worker never processes an
id of a neighbouring shard; a byte that is not UTF-8 does not stop the reading, it makes its prompt an
error row (row_errors.text_problem). Finished rows go to `<output>.partial.jsonl`, one JSON line per input
row (all its samples together, or the error that made it an error row), written and fsynced per batch: a
kill loses at most the batch in flight, and a torn last line can only drop that row. The final output is
written atomically at the end.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gputui.files.atomic import atomic_write_text, json_default
from gputui.jobs import tabular
from gputui.workers.row_errors import clean_text, finish_reason

PARTIAL_VERSION = 1
OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclass
class Row:
    key: str  # the id in range units plus its occurrence, e.g. "7#0": unique even when ids repeat
    id: Any  # the id as the input has it
    prompt: str
    columns: dict[str, Any] = field(repr=False, default_factory=dict)


def output_format(path: str | os.PathLike[str]) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise ValueError(f"{path}: output must end in .csv or .jsonl, not {suffix or '(no extension)'!r}")
    return OUTPUT_FORMATS[suffix]


def select_rows(
    path: str | os.PathLike[str],
    id_column: str,
    low: Any,
    high: Any,
    *,
    prompt_column: str | None = None,
    template: str | None = None,
) -> list[Row]:
    """Rows whose id is in [low, high), in file order, each with its prompt built.

    Integer ids are value ranges; any other ids are positions in the sorted unique ids, exactly as the
    planner splits them.
    """
    values = tabular.read_column(path, id_column, errors=tabular.KEEP_BAD_BYTES)
    ids, integer_ids = tabular.normalize_ids(values)
    lo, hi = int(low), int(high)
    if integer_ids:

        def unit(v: Any) -> int:
            return int(str(v).strip()) if isinstance(v, str) else int(v)
    else:
        position = {v: i for i, v in enumerate(ids)}

        def unit(v: Any) -> int:
            return position[str(v)]

    if template is None:
        prompt_column = prompt_column or _default_prompt_column(path)
    seen: dict[str, int] = {}
    rows: list[Row] = []
    for raw, cols in zip(values, tabular.iter_rows(path, errors=tabular.KEEP_BAD_BYTES), strict=True):
        u = unit(raw)
        if not lo <= u < hi:
            continue
        norm = str(u) if integer_ids else str(raw)
        occ = seen.get(norm, 0)
        seen[norm] = occ + 1
        rows.append(Row(f"{norm}#{occ}", raw, _prompt(cols, prompt_column, template, path), cols))
    return rows


def _default_prompt_column(path: str | os.PathLike[str]) -> str:
    columns = tabular.read_columns(path, errors=tabular.KEEP_BAD_BYTES)
    for name in ("prompt", "text"):
        if name in columns:
            return name
    shown = ", ".join(repr(c) for c in columns) or "(none)"
    raise tabular.ColumnMissingError(
        f"{path}: no 'prompt' or 'text' column; pass --prompt-column or --template (columns: {shown})"
    )


def _prompt(cols: dict[str, Any], column: str | None, template: str | None, path: Any) -> str:
    if template is not None:
        try:
            return template.format(**cols)
        except KeyError as e:
            raise tabular.ColumnMissingError(
                f"{path}: --template names column {e.args[0]!r}, not in the row"
            ) from None
    if column not in cols:
        raise tabular.ColumnMissingError(f"{path}: no column {column!r} in a row")
    value = cols[column]
    return "" if value is None else str(value)


# -- the partial file ------------------------------------------------------------------------------------


def partial_path(output: str | os.PathLike[str]) -> Path:
    return Path(f"{os.fspath(output)}.partial.jsonl")


class Partial:
    """Append-only JSON lines: a header with the generation settings, then one line per finished row.

    Opening it keeps the records of a previous attempt when the settings match, cuts a torn last line
    (so the next append starts on a clean line), and sets a file made with other settings aside.
    """

    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        self.path = path
        self.config = config
        self.records: dict[str, dict[str, Any]] = {}
        self.set_aside: Path | None = None
        self.torn = False
        self._load()
        self._f = open(path, "ab")  # noqa: SIM115 - kept open for the whole shard
        if self._f.tell() == 0:
            self._write([{"gputui_continuation": PARTIAL_VERSION, "config": config}])

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        if not data.strip():
            self.path.unlink()  # created but nothing written yet: start clean, header first
            return
        lines = data.split(b"\n")
        good_end = 0
        header_ok = False
        records: dict[str, dict[str, Any]] = {}
        offset = 0
        for i, line in enumerate(lines):
            end = offset + len(line) + 1
            complete = i < len(lines) - 1  # the last piece has no newline after it
            obj = _parse(line) if complete else None
            if obj is None:
                if line.strip():
                    self.torn = True
                break
            if i == 0:
                header_ok = obj.get("gputui_continuation") == PARTIAL_VERSION and obj.get("config") == self.config
                if not header_ok:
                    break
            elif "key" in obj:
                records[obj["key"]] = obj
            good_end = end
            offset = end
        if not header_ok:
            self.set_aside = self.path.with_name(f"{self.path.name}.stale-{int(time.time())}")
            os.replace(self.path, self.set_aside)
            self.torn = False
            return
        self.records = records
        if good_end < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
                f.flush()
                os.fsync(f.fileno())

    def append(self, records: list[dict[str, Any]]) -> None:
        self._write(records)
        for r in records:
            self.records[r["key"]] = r

    def _write(self, objs: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(o, default=json_default, ensure_ascii=False) + "\n" for o in objs)
        self._f.write(data.encode("utf-8", "backslashreplace"))  # a lone surrogate (an id's bad byte): \udcff
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


# -- the final output ------------------------------------------------------------------------------------


def is_error_record(rec: dict[str, Any]) -> bool:
    return rec.get("error") is not None


def output_rows(rows: list[Row], records: dict[str, dict[str, Any]], id_column: str, n: int) -> Iterator[dict]:
    """One output row per input row and sample, in input order; a prompt that could not be continued has one
    row, its error row (sample 0 when n > 1): no continuation, `finish_reason` "error: <why>"."""
    for row in rows:
        rec = records[row.key]
        ident = clean_text(row.id) if isinstance(row.id, str) else row.id
        head = {id_column: ident, "prompt": clean_text(row.prompt)}
        if is_error_record(rec):
            samples = [{"text": None, "finish_reason": finish_reason(rec["error"]), "completion_tokens": 0}]
        else:
            samples = rec["samples"]
        for i, s in enumerate(samples):
            out = dict(head)
            if n > 1:
                out["sample"] = i
            out |= {
                "continuation": s["text"],
                "finish_reason": s["finish_reason"],
                "prompt_tokens": rec["prompt_tokens"],
                "completion_tokens": s["completion_tokens"],
            }
            yield out


def write_output(path: str | os.PathLike[str], out_rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Temp file + fsync + rename: a reader sees no file or the whole shard."""
    if output_format(path) == "jsonl":
        text = "".join(json.dumps(r, default=json_default, ensure_ascii=False) + "\n" for r in out_rows)
    else:
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=columns)
        w.writeheader()
        w.writerows(out_rows)
        text = buf.getvalue()
    atomic_write_text(path, text)
