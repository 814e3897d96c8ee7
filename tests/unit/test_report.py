import json

import pytest

from gputui.jobs.tasks import Status, TaskRecord
from gputui.results.report import build_summary, render_report, write_reports
from gputui.rundir.records import AttemptRecord

T0 = 1_700_000_000.0


def task(i, status, *, attempts=1, budget=3, reason=None, exit_code=0, start=0.0, end=10.0):
    return TaskRecord(
        id=f"shard-{i}",
        index=i,
        low=i * 10,
        high=(i + 1) * 10,
        count=10,
        status=status,
        attempts=attempts,
        budget=budget,
        gpus=(2 * i, 2 * i + 1),
        reason=reason,
        exit_code=exit_code,
        started_at=T0 + start,
        ended_at=None if end is None else T0 + end,
        next_try_at=None,
    )


def attempt(i, number, status, *, start, end, exit_code=0, reason=None):
    return AttemptRecord(
        task_id=f"shard-{i}",
        number=number,
        status=status,
        gpus=(2 * i,),
        command=("python", "w.py"),
        log_path=f"/runs/r1/logs/shard-{i}.{number}.log",
        started_at=T0 + start,
        ended_at=None if end is None else T0 + end,
        exit_code=exit_code,
        reason=reason,
        waiter=None,
        worker=None,
        cgroup=None,
        cleared_at=None if end is None else T0 + end,
    )


@pytest.fixture
def run():
    """shard-0 done first try; shard-1 done after one retry; shard-2 failed for good; shard-3 killed."""
    tasks = [
        task(
            2,
            Status.FAILED,
            attempts=2,
            budget=2,
            reason="CUDA out of memory | tried to allocate 2 GiB",
            exit_code=1,
            start=0.0,
            end=7.0,
        ),
        task(0, Status.DONE, start=0.0, end=10.0),
        task(1, Status.DONE, attempts=2, start=0.0, end=12.3),
        task(3, Status.KILLED, reason="killed by user", exit_code=-9, start=1.0, end=5.0),
    ]
    attempts = [
        attempt(0, 1, "done", start=0.0, end=10.0),
        attempt(1, 2, "done", start=5.0, end=12.3),
        attempt(1, 1, "failed", start=0.0, end=4.0, exit_code=1, reason="NCCL timeout"),
        attempt(2, 1, "failed", start=0.0, end=3.0, exit_code=1, reason="CUDA out of memory"),
        attempt(2, 2, "failed", start=4.0, end=7.0, exit_code=1, reason="CUDA out of memory"),
        attempt(3, 1, "killed", start=1.0, end=5.0, exit_code=-9, reason="killed by user"),
    ]
    return tasks, attempts


def summarize(run, **kw):
    tasks, attempts = run
    return build_summary(
        job_name="embed",
        run_dir="/runs/r1",
        scheduler_id="sched-1",
        tasks=tasks,
        attempts=attempts,
        now=T0 + 100,
        **kw,
    )


def test_summary_counts_times_and_per_task_attempts(run):
    s = summarize(run)
    assert s["counts"][Status.DONE] == 2
    assert s["counts"][Status.FAILED] == 1 and s["counts"][Status.KILLED] == 1
    assert s["total_tasks"] == 4 and s["retries"] == 2
    assert s["wall_seconds"] == pytest.approx(12.3)  # first start to last end, not `now`
    assert s["running"] is False
    assert [t["id"] for t in s["tasks"]] == ["shard-0", "shard-1", "shard-2", "shard-3"]
    t1 = s["tasks"][1]
    assert t1["range"] == [10, 20] and t1["gpus"] == [2, 3] and t1["budget"] == 3
    assert [a["number"] for a in t1["attempt_details"]] == [1, 2]
    assert t1["attempt_durations"] == pytest.approx([4.0, 7.3])
    assert t1["duration"] == pytest.approx(11.3)
    assert t1["attempt_details"][0]["reason"] == "NCCL timeout"
    assert t1["attempt_details"][0]["started"].startswith("2023-11-")
    assert s["tasks"][2]["last_log"] == "/runs/r1/logs/shard-2.2.log"
    json.dumps(s)  # plain data only


def test_running_attempt_counts_up_to_now(run):
    tasks, attempts = run
    tasks = [*tasks, task(4, Status.RUNNING, start=50.0, end=None)]
    attempts = [*attempts, attempt(4, 1, "running", start=50.0, end=None, exit_code=None)]
    s = build_summary(
        job_name="embed", run_dir="/r", scheduler_id="s", tasks=tasks, attempts=attempts, now=T0 + 100
    )
    assert s["running"] is True and s["ended_at"] is None
    assert s["wall_seconds"] == pytest.approx(100.0)
    assert s["tasks"][4]["duration"] == pytest.approx(50.0)
    assert "1 running" in render_report(s)


def test_report_outcome_table_and_failures(run):
    md = render_report(summarize(run))
    assert md.startswith("# embed")
    assert "2/4 shards done in 12.3 s; 1 failed, 1 killed; 2 retries." in md
    assert "| shard-1 | [10, 20) | done | 2/3 | 11.3 s | 0 |  |" in md
    assert "CUDA out of memory \\| tried" in md  # a pipe in a reason doesn't break the table
    failures = md.split("## Failures", 1)[1]
    assert "**shard-2**" in failures and "failed after 2/2 attempt(s), exit 1: CUDA out of memory" in failures
    assert "/runs/r1/logs/shard-2.2.log" in failures
    assert "**shard-3**" in failures and "-9 (SIGKILL)" in failures and "killed by user" in failures
    assert "shard-0" not in failures


def test_report_all_done_has_no_failures_section():
    tasks = [task(i, Status.DONE, start=0.0, end=12.3) for i in range(4)]
    attempts = [attempt(i, 1, "done", start=0.0, end=12.3) for i in range(4)]
    s = build_summary(job_name="j", run_dir="/r", scheduler_id="s", tasks=tasks, attempts=attempts)
    md = render_report(s)
    assert "**Outcome:** 4/4 shards done in 12.3 s." in md
    assert "Failures" not in md


def test_report_shows_merge_result(run):
    ok = {"ok": True, "merged": "/out/all.csv", "total_rows": 1234, "problems": [], "shards": [{}] * 4}
    md = render_report(summarize(run, merge=ok))
    assert "Merged 1,234 rows into `/out/all.csv`" in md

    bad = {
        "ok": False,
        "merged": None,
        "total_rows": 9,
        "shards": [],
        "problems": ["shard-2: output missing: /out/s2.csv"],
    }
    md = render_report(summarize(run, merge=bad))
    assert "Merge refused: 1 problem(s)" in md
    assert "- shard-2: output missing: /out/s2.csv" in md.split("## Merge", 1)[1]


def test_write_reports_writes_json_and_markdown(run, tmp_path):
    s = summarize(run)
    json_path, md_path = write_reports(tmp_path / "reports", s)
    assert json_path == tmp_path / "reports" / "summary.json"
    assert json.loads(json_path.read_text()) == s
    assert md_path.read_text() == render_report(s)
