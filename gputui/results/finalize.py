"""End-of-run products, built from the store alone: the merged output and the run summary.

The merge and its checks (numpy, a fifth of a second to import) are loaded only by a run that merges:
every run writes a summary, and a run of short tasks would wait for numpy at its end for nothing. A merge
reads the input's ids (and imports numpy) only when some shard's done-manifest can't vouch for its share."""

from __future__ import annotations

from pathlib import Path

from gputui.jobs import tabular
from gputui.jobs.tasks import Status
from gputui.results.report import SpooledRows, SummaryTally, summary_tail, write_reports
from gputui.rundir.manifests import file_identity, settled_identity
from gputui.rundir.meta import read_meta
from gputui.rundir.paths import RunPaths
from gputui.rundir.store import Store


def merge_run(store: Store, paths: RunPaths, verify: bool = False) -> str:
    """Merge every shard output into the configured file; returns one line saying what happened.
    `verify`: hash every output again instead of trusting an unchanged size, modification time and inode."""
    from gputui.results.merge import merge_shards
    from gputui.results.shards import InputIds, ShardOutput

    job = read_meta(store).job
    merged = job.merged
    if not merged:
        return "merge failed: this job declares no [outputs].merged file"
    not_done, shards = [], []  # the shards as a merge needs them: a run's task records are never all held
    for task_id, low, high, status, attempts, output in store.shard_rows():
        if status != Status.DONE:
            not_done.append(task_id)
        error_rows = reported_error_rows(paths, task_id, attempts)
        shards.append(ShardOutput(task_id, low, high, Path(output or ""), error_rows))
    input_path = job.kind_facts.get("input")
    summary = merge_shards(
        shards,
        Path(merged),
        paths.merge_summary,
        id_column=job.kind_facts.get("id_column"),
        input_ids=InputIds(lambda: _id_key(store), file_identity(input_path) if input_path else None),
        verify=verify,
    )
    if not summary["ok"]:
        pending = f" ({len(not_done)} task(s) not done: {', '.join(not_done[:5])})" if not_done else ""
        problems = "; ".join(summary["problems"][:3])
        return f"merge failed{pending}: {problems} — see {paths.merge_summary}"
    n = summary["error_rows"]
    errors = f'{n} error row{"" if n == 1 else "s"} with finish_reason "error: ..."; ' if n else ""
    return (
        f"merged {summary['total_rows']} rows from {len(shards)} shard(s) into {merged} "
        f"({errors}coverage checked; {paths.merge_summary})"
    )


def reported_error_rows(paths: RunPaths, task_id: str, attempts: int) -> int | None:
    """The error rows a shard's worker reported when it finished (`mark_done(error_rows=N)`, as the
    continuation worker does) in its last attempt (`attempts`); None when it reported no such count."""
    if attempts == 0:
        return None
    from gputui.hooks.reader import read_all

    done = [e for e in read_all(paths.events(task_id, attempts)) if e.kind == "done"]
    value = done[-1].values.get("error_rows") if done else None
    return int(value) if value is not None and value == value and value >= 0 else None


class OutputCheck:
    """The merge's coverage check on each shard output as its shard finishes, for its done-manifest (so the
    merge need not read it again). The input's ids are read once, on first use; the input's identity then
    (size, modification time, inode) goes into each manifest, so that a merge finding it the same need not
    read them again."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._ids = None
        self._input: dict = {}

    def __call__(self, task, output: Path) -> tuple[dict | None, str | None]:
        job = read_meta(self.store).job
        column = job.kind_facts.get("id_column")
        if not column or not job.merged:
            return None, None
        from gputui.results.merge import check_shard
        from gputui.results.shards import ShardOutput

        if self._ids is None:
            path = job.kind_facts.get("input")
            before = settled_identity(path) if path else None
            self._ids = _id_key(self.store)
            expected = self._ids[1]
            if before is not None and expected is not None and file_identity(path) == before:
                self._input = {"input": before, "input_ids": len(expected)}
        key, expected = self._ids
        shard = ShardOutput(task.id, task.low, task.high, output)
        found, problems = check_shard(shard, id_column=column, key=key, expected_ids=expected)
        return (None if found is None else found | self._input), "; ".join(problems[:2]) or None


def _id_key(store: Store):
    """How to map an output's raw id to range units, and the ids every merge must cover."""
    import numpy as np

    from gputui.results.shards import int_key

    try:
        facts = read_meta(store).job.kind_facts  # what a shard job's plan recorded of its input
        values = tabular.read_column(facts.get("input"), facts.get("id_column"), errors=tabular.KEEP_BAD_BYTES)
    except (OSError, KeyError, ValueError):
        return None, None
    ids, integer_ids = tabular.normalize_ids(values)
    if integer_ids:
        try:  # as an array: the coverage checks take it without a look at each id
            return int_key, np.fromiter(ids, np.int64, len(ids))
        except OverflowError:
            return int_key, ids
    position = {v: i for i, v in enumerate(ids)}
    return (lambda raw: position.get(str(raw), -1)), ids


def write_summary(store: Store, paths: RunPaths) -> tuple[Path, Path]:
    """summary.json and report.md, the run's tasks read a page at a time (with their attempts) and their rows
    kept in a temporary file: what is held of a run of 100,000 tasks is a page, whatever its size."""
    from gputui import clock

    merge = None
    if paths.merge_summary.exists():
        import json

        try:
            merge = json.loads(paths.merge_summary.read_text())
        except ValueError:
            merge = None
    meta = read_meta(store)
    sweep = meta.job.kind_facts.get("sweep")  # a sweep's ranking terms, as its plan recorded them
    tally = SummaryTally(clock.now())
    with SpooledRows(paths.root) as rows:
        for page in store.pages():
            attempts = store.attempts_of([t.id for t in page])
            for t in page:
                rows.add(tally.add(t, attempts.get(t.id, [])))
        head = tally.head(job_name=meta.job.name, run_dir=str(paths.root), scheduler_id=meta.identity.scheduler_id)
        tail = summary_tail(
            merge=merge, sweep=sweep if isinstance(sweep, dict) else None, run_failed=meta.run_failed
        )
        return write_reports(paths.root, {**head, "tasks": rows, **tail})
