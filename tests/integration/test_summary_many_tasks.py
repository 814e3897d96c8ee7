"""A run's summary.json and report.md when it has more tasks than report.md lists: summary.json keeps every task
and the right counts; each table or list of report.md shows its first tasks and says how many more there are
(a sweep's stage table its best trials, in rank order)."""

from __future__ import annotations

import json

import pytest

from gputui.api import open_run
from gputui.results import report
from tests.conftest import gputui


def _shard_job(tmp_path, n: int):
    (tmp_path / "ids.csv").write_text("data_id\n" + "".join(f"{i}\n" for i in range(n)))
    job = tmp_path / "job.toml"
    job.write_text(
        '[job]\nname = "many"\ncommand = "sh -c \'exit $(( {low} % 4 == 1 ))\'"\n'  # every 4th shard fails
        '[shards]\ninput = "ids.csv"\nshard_size = 1\n'
        "[resources]\ngpus_per_worker = 0\nmax_parallel = 8\n[retry]\nmax_attempts = 1\n"
    )
    return job


def test_summary_of_many_tasks_counts_every_one_and_report_says_how_many_more(tmp_path, monkeypatch):
    job = _shard_job(tmp_path, 40)
    run_dir = tmp_path / "run"
    r = gputui("run", "--jobs", job, "--run-dir", run_dir, "--quiet", timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr  # 10 shards failed
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["total_tasks"] == 40
    assert summary["counts"]["done"] == 30 and summary["counts"]["failed"] == 10
    assert [t["id"] for t in summary["tasks"]] == [f"shard-{i}" for i in range(40)]
    assert all(t["attempts"] == 1 and len(t["attempt_details"]) == 1 for t in summary["tasks"])
    md = (run_dir / "report.md").read_text()
    assert "30/40 shards done" in md and "10 failed" in md
    assert "more tasks" not in md and "more failed tasks" not in md  # short lists are whole

    monkeypatch.setattr(report, "LIST_CAP", 7)
    run = open_run(run_dir)
    try:
        json_path, md_path = run.summary()
    finally:
        run.close()
    again = json.loads(json_path.read_text())
    assert again["counts"] == summary["counts"] and len(again["tasks"]) == 40  # summary.json keeps them all
    assert again["tasks"] == summary["tasks"]
    md = md_path.read_text()
    table = [line for line in md.splitlines() if line.startswith("| shard-")]
    assert [line.split(" | ")[0] for line in table] == [f"| shard-{i}" for i in range(7)]
    assert "… and 33 more tasks (summary.json lists every task)." in md
    failures = [line for line in md.splitlines() if line.startswith("- **shard-")]
    assert [line.split("**")[1] for line in failures] == [f"shard-{i}" for i in range(1, 28, 4)]
    assert "… and 3 more failed tasks (summary.json lists every task)." in md
    assert not list(run_dir.glob(".summary-rows.*"))  # its temporary file is gone


@pytest.mark.parametrize("cap", [3, 100])
def test_a_sweeps_stage_table_cut_short_keeps_its_best_trials_in_rank_order(tmp_path, monkeypatch, cap):
    scores = [0.1, 0.9, 0.5, 0.7, 0.3, 0.8]
    params = ", ".join(f"{{score = {s}}}" for s in scores)
    job = tmp_path / "sweep.toml"
    job.write_text(
        '[job]\nname = "sw"\nkind = "sweep"\ncommand = "echo val_acc={score}"\n'
        '[sweep]\nmetric = "val_acc"\ngoal = "max"\ntop_k = 2\nmetric_regex = \'val_acc=([0-9.]+)\'\n'
        f'[[sweep.stage]]\nname = "s1"\nparams = [{params}]\n'
        "[resources]\ngpus_per_worker = 0\nmax_parallel = 3\n[retry]\nmax_attempts = 1\n"
    )
    run_dir = tmp_path / "run"
    r = gputui("run", "--jobs", job, "--run-dir", run_dir, "--quiet", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    monkeypatch.setattr(report, "LIST_CAP", cap)
    run = open_run(run_dir)
    try:
        _, md_path = run.summary()
    finally:
        run.close()
    md = md_path.read_text()
    section = md[md.index("### Stage s1") :]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "s1-" in line]
    ranked = sorted(range(len(scores)), key=lambda i: -scores[i])  # best first
    assert [row.split(" | ")[1] for row in rows] == [f"s1-{i}" for i in ranked[: min(cap, len(scores))]]
    assert [row.split(" | ")[0] for row in rows] == [f"| {k}" for k in range(1, len(rows) + 1)]  # ranks 1, 2, ...
    if cap < len(scores):
        assert f"… and {len(scores) - cap} more trials of stage s1 (summary.json lists every task)." in md
    else:
        assert "more trials" not in md
    assert "**Best chain** (last stage first): **s1-1**" in md
