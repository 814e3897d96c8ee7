"""The merge's Parquet reader: each shard's batches written on, one row group in memory at a time."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from gputui.jobs.tabular import import_parquet
from gputui.results.merge_io import Readable, sync

if TYPE_CHECKING:
    from gputui.results.idcheck import IdCheck


def merge_parquet(readable: Readable, tmp: Path | None, ids: IdCheck | None, problems: list[str]) -> None:
    """Batch by batch, so only one row group is in memory at a time."""
    pq = import_parquet()
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
                has_col = ids is not None and ids.begin_columns(shard, this.names) is not None
                for batch in pf.iter_batches():
                    if write and writer is not None:
                        writer.write_batch(batch)
                    if has_col:
                        ids.see_values(batch.column(ids.column).to_pylist())
                entry["rows"] = pf.metadata.num_rows
                if ids is not None:
                    ids.end()
            except (OSError, ValueError) as e:  # ArrowInvalid is a ValueError, ArrowIOError an OSError
                problems.append(f"{shard.task_id}: could not merge {shard.path}: {e}")
        if writer is not None:
            writer.close()
        if out is not None:
            sync(out)


def _schema_text(schema) -> str:
    return "(" + ", ".join(f"{n}: {t}" for n, t in zip(schema.names, schema.types, strict=True)) + ")"
