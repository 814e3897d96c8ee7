"""A worker's output holding a bare carriage return inside a quoted field, merged by a real run and by
`gputui merge`: the merged file reads back as the shards' rows (it once read one such row back as two)."""

from __future__ import annotations

import csv

from tests.conftest import gputui
from tests.unit.test_merge_roundtrip import concatenation, merged_rows, read_csv


def test_a_run_whose_worker_writes_a_bare_carriage_return_merges_it_intact(make_job):
    job = make_job(ids=6, num_workers=2, rows_per_id=1)
    with open(make_job.root / "data.csv", "w", newline="") as f:  # the worker upper-cases each value
        w = csv.writer(f)
        w.writerow(["data_id", "value"])
        w.writerows([i, f"line {i}\rcontinued"] for i in range(6))
    assert gputui("run", "--jobs", job).returncode == 0
    outputs = sorted((make_job.run_dir / "outputs").glob("out_*.csv"), key=lambda p: int(p.stem.split("_")[1]))
    want = concatenation([read_csv(p) for p in outputs])
    assert want[1:] == [[str(i), f"LINE {i}\rCONTINUED"] for i in range(6)]
    merged = make_job.run_dir / "outputs" / "merged.csv"
    assert merged_rows(merged) == want
    merged.unlink()
    r = gputui("merge", "--run-dir", make_job.run_dir)
    assert r.returncode == 0 and "merged 6 rows" in r.stdout, r.stdout + r.stderr
    assert merged_rows(merged) == want
