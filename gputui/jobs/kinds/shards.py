"""The "shards" job kind: one command over contiguous, non-overlapping ranges of an input's ids.

    [shards]
    input = "data/prompts.csv"      # .csv, .jsonl or .parquet (or set format)
    id_column = "data_id"
    num_workers = 4                 # or shard_size = 250

Every shard is planned at the start (sizes differ by at most one); each worker gets its range as {low} and
{high} (values of integer ids, else positions in the sorted ids) and writes its own {output} file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gputui.jobs import tabular
from gputui.jobs.checks import Checks, got, resolve_path
from gputui.jobs.kinds.base import Columns, JobKind, NewTask, Plan, Recorded, TaskValues
from gputui.jobs.spec import PLACEHOLDERS, JobSpec, JobSpecError
from gputui.jobs.tasks import SHARD, TaskRecord
from gputui.jobs.templates import output_path

SHARDS_KEYS = ("input", "format", "id_column", "num_workers", "shard_size")
_SUFFIX_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
_FORMAT_NAMES = {"csv": "csv", "jsonl": "jsonl", "ndjson": "jsonl", "parquet": "parquet"}


@dataclass(frozen=True)
class ShardSpec:
    input: Path  # absolute
    id_column: str
    num_workers: int | None  # exactly one of num_workers / shard_size is set
    shard_size: int | None
    format: str  # "csv" | "jsonl" | "parquet"


@dataclass(frozen=True)
class Shard:
    index: int
    low: int  # inclusive
    high: int  # exclusive
    count: int  # unique ids inside

    @property
    def task_id(self) -> str:
        return f"shard-{self.index}"


# --------------------------------------------------------------------------------------------------
# Parsing


def parse_shards(checks: Checks, table: Mapping[str, Any]) -> ShardSpec:
    """[shards] as a ShardSpec: the input must exist now (its ids are read to plan)."""
    checks.check_table(table, "shards")
    raw = checks.value(table, "shards", "input", "str", missing="the path of a .csv, .jsonl or .parquet file")
    if "format" in table:
        fmt = table["format"]
        if not isinstance(fmt, str) or fmt.lower() not in _FORMAT_NAMES:
            raise checks.error("[shards].format", f"expected 'csv', 'jsonl' or 'parquet', {got(fmt)}")
        fmt = _FORMAT_NAMES[fmt.lower()]
    else:
        fmt = _SUFFIX_FORMATS.get(Path(raw).suffix.lower())
        if fmt is None:
            raise checks.error(
                "[shards].input",
                f"cannot tell the format of {raw!r}; expected .csv, .jsonl or .parquet (or set [shards].format)",
            )
    path = resolve_path(raw, checks.base)
    if path.is_dir():
        raise checks.error("[shards].input", f"expected a file, found a directory: {path}")
    if not path.is_file():
        raise checks.error("[shards].input", f"file not found: {path}")
    if not os.access(path, os.R_OK):
        raise checks.error("[shards].input", f"cannot read {path}: permission denied")
    id_column = checks.value(table, "shards", "id_column", "str", default="data_id")
    if ("num_workers" in table) == ("shard_size" in table):
        which = "both are set" if "num_workers" in table else "neither is set"
        raise checks.error("[shards]", f"set exactly one of num_workers or shard_size ({which})")
    num_workers = checks.value(table, "shards", "num_workers", "int>=1", default=None)
    shard_size = checks.value(table, "shards", "shard_size", "int>=1", default=None)
    return ShardSpec(input=path, id_column=id_column, num_workers=num_workers, shard_size=shard_size, format=fmt)


# --------------------------------------------------------------------------------------------------
# The plan (pure: split sorted unique ids into contiguous, non-overlapping shards covering them all)


def plan_shards(
    ids: Sequence, *, integer_ids: bool, num_workers: int | None = None, shard_size: int | None = None
) -> list[Shard]:
    """Shards over `ids` (sorted, unique).

    Integer ids give value ranges (a worker keeps rows with low <= id < high, as the seed's
    workers do); other ids give positional ranges over the sorted list. Sizes differ by at most
    one; never more shards than ids, and no empty shard.
    """
    bounds = shard_bounds(ids, integer_ids=integer_ids, num_workers=num_workers, shard_size=shard_size)
    return [Shard(i, low, high, count) for i, (low, high, count) in enumerate(zip(*bounds, strict=True))]


def shard_bounds(
    ids: Sequence, *, integer_ids: bool, num_workers: int | None = None, shard_size: int | None = None
) -> tuple[list[int], list[int], list[int]]:
    """`plan_shards` as three lists (lows, highs, counts), made by slicing: a million shards in a blink, held as
    numbers rather than records."""
    if (num_workers is None) == (shard_size is None):
        raise ValueError("set exactly one of num_workers or shard_size")
    n = len(ids)
    if num_workers is not None and num_workers < 1:
        raise ValueError("num_workers must be >= 1")
    if shard_size is not None and shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    if n == 0:
        return [], [], []
    if num_workers is not None:
        k = min(num_workers, n)
        base, extra = divmod(n, k)
        starts = [i * base + min(i, extra) for i in range(k)]
    else:
        starts = list(range(0, n, shard_size))
    ends = [*starts[1:], n]
    counts = [end - start for start, end in zip(starts, ends, strict=True)]
    if not integer_ids:
        return starts, ends, counts
    if shard_size is not None:
        lows = list(ids[::shard_size])
        highs = [*ids[shard_size::shard_size], ids[-1] + 1]
    else:
        lows = [ids[i] for i in starts]
        highs = [*(ids[i] for i in ends[:-1]), ids[-1] + 1]
    return [int(v) for v in lows], [int(v) for v in highs], counts


def plan_fingerprint(shards: Sequence[Shard], *, integer_ids: bool) -> str:
    """Identifies a plan, so a run directory is never driven by a different one."""
    return bounds_fingerprint([s.low for s in shards], [s.high for s in shards], integer_ids=integer_ids)


def bounds_fingerprint(lows: Sequence[int], highs: Sequence[int], *, integer_ids: bool) -> str:
    """The hash of the JSON text `[integer_ids, [[low, high], ...]]` (as every gputui wrote it: a run directory
    started by an earlier one is still recognised), hashed a piece at a time."""
    digest = hashlib.sha256(f"[{json.dumps(integer_ids)}, [".encode())
    for start in range(0, len(lows), 10_000):
        pairs = zip(lows[start : start + 10_000], highs[start : start + 10_000], strict=True)
        digest.update(((", " if start else "") + ", ".join(f"[{low}, {high}]" for low, high in pairs)).encode())
    digest.update(b"]]")
    return digest.hexdigest()[:16]


def describe_plan(shards: Sequence) -> str:
    if not shards:
        return "no shards"
    head = ", ".join(f"[{s.low}, {s.high})" for s in shards[:4])
    more = f", ... ({len(shards)} in all)" if len(shards) > 4 else ""
    return f"{len(shards)} shard{'s' if len(shards) != 1 else ''}: {head}{more}"


class ShardTasks(Sequence[NewTask]):
    """A shard plan's tasks, each made as it is read: a plan of a million shards holds three lists of numbers,
    not a million records. Every task's output name was checked when the plan was made (`check_outputs`)."""

    def __init__(self, job: JobSpec, lows: list[int], highs: list[int], counts: list[int]):
        self.job, self.lows, self.highs, self.counts = job, lows, highs, counts
        self.named = job.outputs is not None and job.outputs.pattern is not None

    def __len__(self) -> int:
        return len(self.lows)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        low, high = self.lows[i], self.highs[i]
        output = shard_output(self.job, Shard(i, low, high, self.counts[i])) if self.named else None
        return NewTask(f"shard-{i}", i, SHARD, low, high, self.counts[i], output)

    def __iter__(self) -> Iterator[NewTask]:
        return (self[i] for i in range(len(self)))

    def index_of(self, task_id: str) -> int | None:
        """The position of the task with this id (None: none), without making any task."""
        _, _, n = task_id.rpartition("-")
        i = int(n) if n.isdigit() else -1
        return i if 0 <= i < len(self) and task_id == f"shard-{i}" else None

    def check_outputs(self) -> None:
        """Each task's own output name, refused (JobSpecError) where its pattern makes a bad one."""
        if self.named:
            for i, (low, high) in enumerate(zip(self.lows, self.highs, strict=True)):
                shard_output(self.job, Shard(i, low, high, self.counts[i]))


def load_ids(job: JobSpec) -> tuple[list, bool]:
    """Sorted unique ids of the job's input, and whether they are integers (value ranges).

    A byte that is not UTF-8 elsewhere in a row does not stop the plan (the continuation worker makes that
    row an error row); in an id it does, since no output could name that id."""
    spec: ShardSpec = job.kind_spec
    try:
        values = tabular.read_column(spec.input, spec.id_column, spec.format, errors=tabular.KEEP_BAD_BYTES)
    except tabular.ColumnMissingError as e:
        raise JobSpecError(f"{job.path}: [shards].id_column: {e.args[0] if e.args else e}") from None
    bad = tabular.first_undecodable(values)
    if bad is not None:
        raise JobSpecError(
            f"{job.path}: [shards].input: {spec.input}, row {bad + 1}: the id {values[bad]!r} is not valid UTF-8"
        )
    return tabular.normalize_ids(values)


def shard_output(job: JobSpec, shard: Shard) -> str | None:
    if job.outputs is None or job.outputs.pattern is None:
        return None
    values = {
        "low": shard.low,
        "high": shard.high,
        "task_id": shard.task_id,
        "input": job.kind_spec.input,
        "output_dir": job.outputs.dir,
        "run_dir": job.run_dir,
    }
    return output_path(job, shard.task_id, values)  # each task's own name checked (templates.py)


# --------------------------------------------------------------------------------------------------
# The kind


class Shards(JobKind):
    name = "shards"
    table = "shards"
    table_keys = SHARDS_KEYS
    expects = "expected [shards] with input and num_workers or shard_size"
    task_kind = SHARD
    noun = "shard"
    covers = "range"
    names_outputs = True
    alike_tasks = True
    always_products = False  # a shard's only once its worker reported: else three files of noise per shard
    charts = False
    columns = Columns()  # the fixed layouts by width, with the range
    recorded_keys = ("integer_ids", "input", "id_column")  # the merge checks coverage of the input's ids

    def parse(self, checks: Checks, table: Mapping[str, Any], extra: list[str]) -> ShardSpec:
        return parse_shards(checks, table)

    def placeholders(self, spec: ShardSpec) -> tuple[str, ...]:
        return (*PLACEHOLDERS, "output")

    def samples(self, spec: ShardSpec, run_dir: Path) -> dict[str, object]:
        return {"input": str(spec.input)}

    def plan(self, job: JobSpec) -> Plan:
        spec: ShardSpec = job.kind_spec
        ids, integer_ids = load_ids(job)
        if not ids:
            raise JobSpecError(f"{job.path}: [shards].input: {spec.input} has no rows; nothing to do")
        bounds = shard_bounds(
            ids, integer_ids=integer_ids, num_workers=spec.num_workers, shard_size=spec.shard_size
        )
        del ids  # a million of them: not held while the plan is
        tasks = ShardTasks(job, *bounds)
        tasks.check_outputs()
        # What identifies the plan is its fingerprint; each shard's range is in the run's tasks table.
        definition = {"shards": len(tasks), "integer_ids": integer_ids, "ids": sum(tasks.counts)}
        recorded = {"integer_ids": integer_ids, "input": str(spec.input), "id_column": spec.id_column}
        return Plan(
            tasks,
            bounds_fingerprint(*bounds[:2], integer_ids=integer_ids),
            describe_plan(tasks),
            definition,
            recorded,
        )

    def refusal(self, job: JobSpec, plan: Plan, recorded: Recorded, changed: bool) -> str | None:
        if not changed:
            return None
        old = describe_plan([Shard(t.index, t.low, t.high, t.count) for t in recorded.read_tasks()])
        return (
            f"{recorded.run_dir} was started with {old}; the job file {job.path} now plans "
            f"{plan.description}. Mixing two plans could process ids twice or skip some. Restore the "
            f"job file's sharding (num_workers/shard_size and input), or start afresh with another --run-dir."
        )

    def values(self, job: JobSpec, task: TaskRecord, output: str | None) -> TaskValues:
        values = {"low": task.low, "high": task.high, "input": job.kind_spec.input, "output": output or ""}
        return TaskValues(values, env={"GPUTUI_LOW": str(task.low), "GPUTUI_HIGH": str(task.high)})
