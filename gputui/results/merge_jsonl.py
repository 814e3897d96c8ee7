"""The merge's JSONL reader: each shard's lines copied (a BOM, a CR or a blank line dropped, a last newline
added), the id read from each object."""

from __future__ import annotations

import codecs
import json
import os
from pathlib import Path
from typing import Any

from gputui.results.idcheck import IdCheck
from gputui.results.merge_io import Readable, sync


def merge_jsonl(readable: Readable, tmp: Path | None, ids: IdCheck | None, problems: list[str]) -> None:
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
        sync(out)
