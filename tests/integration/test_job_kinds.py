"""Sweeps and pipelines through `gputui run`: real workers, real signals, real files.

The fake worker (tests/workers/kind_worker.py) reports `--score` plus its parent's metric, so every trial's
value, rank and parent are known in advance, and it records each start and finish in a shared file.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import psutil
import pytest

from tests.conftest import gputui, gputui_bg, wait_for

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "workers" / "kind_worker.py"
COLUMNS = [
    "stage",
    "stage_index",
    "trial_id",
    "score",
    "parent_id",
    "val_acc",
    "status",
    "rank",
    "promoted",
    "output_dir",
    "duration_s",
    "note",
    "metric_mode",
]
# The sweep most tests run: 3 trials, then 2 on top of each of the best 2, then 1 on top of each of those.
STAGES = [("a", [0.1, 0.3, 0.2]), ("b", [0.01, 0.02]), ("c", [0.001])]
EXPECTED = {  # trial -> (parent, val_acc, rank in its stage, promoted)
    "a-0": (None, 0.1, 3, False),
    "a-1": (None, 0.3, 1, True),
    "a-2": (None, 0.2, 2, True),
    "b-0": ("a-1", 0.31, 2, True),
    "b-1": ("a-1", 0.32, 1, True),
    "b-2": ("a-2", 0.21, 4, False),
    "b-3": ("a-2", 0.22, 3, False),
    "c-0": ("b-1", 0.321, 1, False),  # the last stage seeds nothing: its ranking is the result
    "c-1": ("b-0", 0.311, 2, False),
}


# --------------------------------------------------------------------------------------------------
# Building job files and reading what a run left


def _toml(value) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


class Kinds:
    """Job files for one test, all recording into one file; each run dir is named explicitly."""

    def __init__(self, root: Path):
        self.root = root
        self.record = root / "record.jsonl"
        self.gates = root / "gates"
        self.gates.mkdir()

    def sweep(
        self,
        stages=STAGES,
        *,
        top_k: int = 2,
        max_parallel: int = 4,
        metric_regex: str | None = None,
        name: str = "sw",
        mode: str = "hooks",
        metric_mode: str | None = None,
    ) -> Path:
        """`stages`: (name, [score or {score, mode} per parameter set]) per stage."""
        command = (
            f"{sys.executable} {WORKER} --score {{score}} --init {{parent_output}} --out {{output_dir}} "
            f"--record {self.record} --mode {{mode}} --gate {self.gates}/{{stage}}"
        )
        lines = [
            "[job]",
            f'name = "{name}"',
            'kind = "sweep"',
            f"command = {_toml(command)}",
            "stop_grace_s = 2",
            "[params]",
            f'mode = "{mode}"',  # [params] may change between runs: a trial's params may not
            "[sweep]",
            'metric = "val_acc"',
            'goal = "max"',
            f"top_k = {top_k}",
            'initial = "init"',
        ]
        if metric_regex is not None:
            lines.append(f"metric_regex = '{metric_regex}'")
        if metric_mode is not None:
            lines.append(f'metric_mode = "{metric_mode}"')
        for stage, sets in stages:
            params = [s if isinstance(s, dict) else {"score": s} for s in sets]
            lines += ["[[sweep.stage]]", f'name = "{stage}"', f"params = {_toml(params)}"]
        lines += ["[resources]", "gpus_per_worker = 0", f"max_parallel = {max_parallel}"]
        lines += ["[retry]", "max_attempts = 1", "backoff_s = 0.05"]
        job = self.root / f"{name}.toml"
        job.write_text("\n".join(lines) + "\n")
        return job

    def pipeline(self, steps: list[dict], *, name: str = "pl") -> Path:
        """`steps`: {name, after?, mode?, needs?, gate?} each; a step needing another reads its metric.txt, a
        gated step waits for `gate(name)` to be removed."""
        lines = ["[job]", f'name = "{name}"', 'kind = "pipeline"', "stop_grace_s = 2"]
        for step in steps:
            command = (
                f"{sys.executable} {WORKER} --score 1 --out {{output_dir}} --record {self.record} "
                f"--mode {step.get('mode', 'hooks')}"
            )
            if step.get("gate"):
                command += f" --gate {self.gates}/{step['name']}"
            for need in step.get("needs", ()):
                command += f" --needs {{run_dir}}/steps/{need}/metric.txt"
            lines += ["[[pipeline.step]]", f'name = "{step["name"]}"', f"command = {_toml(command)}"]
            if "after" in step:
                lines.append(f"after = {_toml(step['after'])}")
        lines += ["[resources]", "gpus_per_worker = 0", "max_parallel = 4", "[retry]", "max_attempts = 1"]
        job = self.root / f"{name}.toml"
        job.write_text("\n".join(lines) + "\n")
        return job

    def gate(self, stage: str) -> Path:
        """Hold the trials of `stage` before they finish, until the returned file is removed."""
        path = self.gates / stage
        path.write_text("")
        return path

    def events(self, run_dir: Path | None = None) -> list[dict]:
        """The workers' start/finish records, of one run dir's workers when given."""
        if not self.record.exists():
            return []
        events = [json.loads(line) for line in self.record.read_text().splitlines() if line.strip()]
        if run_dir is not None:
            events = [e for e in events if e.get("run_dir") == str(run_dir.resolve())]
        return events

    def starts(self, run_dir: Path) -> Counter:
        return Counter(e["task"] for e in self.events(run_dir) if e["event"] == "start")

    def finishes(self, run_dir: Path) -> Counter:
        return Counter(e["task"] for e in self.events(run_dir) if e["event"] in ("finish", "fail"))


@pytest.fixture
def kinds(tmp_path) -> Kinds:
    (tmp_path / "init").mkdir()
    return Kinds(tmp_path)


def query(run_dir: Path, sql: str, *args) -> list[tuple]:
    con = sqlite3.connect(f"file:{run_dir / 'state.db'}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def ranked_events(run_dir: Path) -> list[str]:
    return [m for (m,) in query(run_dir, "SELECT message FROM events WHERE kind = 'ranked' ORDER BY id")]


def attempts_per_task(run_dir: Path) -> Counter:
    """Attempts whose worker was started, per task (an attempt recorded but never started ran nothing)."""
    sql = "SELECT task_id, count(*) FROM attempts WHERE worker_pid IS NOT NULL GROUP BY task_id"
    return Counter(dict(query(run_dir, sql)))


def results(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "results" / "results.csv")


def ranking(run_dir: Path) -> list[tuple]:
    """What a user compares between two runs of the same sweep: each trial's parent, value, rank, promotion."""
    df = results(run_dir).sort_values("trial_id")
    return [
        (r.trial_id, None if pd.isna(r.parent_id) else r.parent_id, round(r.val_acc, 9), r.rank, bool(r.promoted))
        for r in df.itertuples()
    ]


def best_chain(run_dir: Path) -> list[str]:
    line = next(ln for ln in (run_dir / "report.md").read_text().splitlines() if ln.startswith("**Best chain**"))
    return re.findall(r"\*\*([^*\s]+)\*\* \(", line)


def kill_scheduler(sched) -> None:
    sched.send_signal(signal.SIGKILL)
    sched.wait(5)


# --------------------------------------------------------------------------------------------------
# 1. Promotion through the stages


def test_sweep_promotes_the_best_trials_through_three_stages(kinds, tmp_path):
    job = kinds.sweep()
    run_dir = tmp_path / "run"
    r = gputui("run", "--jobs", job, "--run-dir", run_dir)
    assert r.returncode == 0, r.stdout + r.stderr

    df = results(run_dir)
    assert list(df.columns) == COLUMNS
    assert sorted(df.trial_id) == sorted(EXPECTED) and df.trial_id.is_unique
    assert set(df.status) == {"done"} and set(df.metric_mode) == {"best"}  # the default
    for row in df.itertuples():
        parent, value, rank, promoted = EXPECTED[row.trial_id]
        assert (None if pd.isna(row.parent_id) else row.parent_id) == parent, row.trial_id
        assert row.val_acc == pytest.approx(value), row.trial_id
        assert (row.rank, bool(row.promoted)) == (rank, promoted), row.trial_id
        assert row.output_dir == str(run_dir / "trials" / row.trial_id)
    notes = dict(zip(df.trial_id, df.note.fillna(""), strict=True))
    assert notes["a-1"] == notes["a-2"] == "promoted to b" and notes["a-0"] == ""
    assert notes["b-1"] == notes["b-0"] == "promoted to c"
    assert notes["c-0"] == "best of the sweep"
    # results.jsonl holds the same trials, params as one object.
    rows = [json.loads(line) for line in (run_dir / "results" / "results.jsonl").read_text().splitlines()]
    assert {r["trial_id"]: r["params"] for r in rows}["b-3"] == {"score": 0.02}

    # Each trial started from its parent's output; stage 1 from [sweep].initial (relative to the job file).
    started = {e["task"]: e["init"] for e in kinds.events(run_dir) if e["event"] == "start"}
    output_dir = dict(zip(df.trial_id, df.output_dir, strict=True))
    for trial, (parent, *_) in EXPECTED.items():
        assert started[trial] == (output_dir[parent] if parent else str(tmp_path / "init")), trial

    assert best_chain(run_dir) == ["c-0", "b-1", "a-1"]
    report = (run_dir / "report.md").read_text()
    assert "## Sweep" in report and "### Stage b" in report and "9/9 trials done" in report

    ranked = ranked_events(run_dir)
    assert [m.split(":")[0] for m in ranked] == ["stage a", "stage b", "stage c"]
    assert "promoted a-1 (0.3), a-2 (0.2)" in ranked[0] and "the sweep is complete" in ranked[2]
    assert ranked[0] in r.stdout  # the user is told as it happens

    # Per-task products: the curve the worker reported, and its final value.
    curve = pd.read_csv(run_dir / "tasks" / "c-0" / "metrics.csv")
    assert list(curve.step) == [1, 2] and curve.val_acc.iloc[-1] == pytest.approx(0.321)
    summary = json.loads((run_dir / "tasks" / "c-0" / "summary.json").read_text())
    assert summary["status"] == "done" and summary["params"] == {"score": 0.001}
    assert summary["final_metrics"]["val_acc"] == pytest.approx(0.321)

    # The same command again: the sweep is complete, nothing runs or is ranked again.
    again = gputui("run", "--jobs", job, "--run-dir", run_dir)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "launch" not in again.stdout and ranked_events(run_dir) == ranked
    assert best_chain(run_dir) == ["c-0", "b-1", "a-1"]


# --------------------------------------------------------------------------------------------------
# 2. The scheduler SIGKILLed mid-stage and between stages


def _assert_ran_once_and_ranked_once(kinds: Kinds, run_dir: Path, reference: Path) -> None:
    starts = kinds.starts(run_dir)
    assert sorted(starts) == sorted(EXPECTED) and set(starts.values()) == {1}, f"trials run twice: {starts}"
    assert set(attempts_per_task(run_dir).values()) == {1}
    assert len(query(run_dir, "SELECT id FROM tasks")) == len(EXPECTED)
    ranked = ranked_events(run_dir)
    assert sorted(m.split(":")[0] for m in ranked) == ["stage a", "stage b", "stage c"], ranked
    assert results(run_dir).trial_id.is_unique
    assert ranking(run_dir) == ranking(reference)
    assert best_chain(run_dir) == best_chain(reference) == ["c-0", "b-1", "a-1"]


def _reference(kinds: Kinds, job: Path, tmp_path: Path) -> Path:
    reference = tmp_path / "reference"
    r = gputui("run", "--jobs", job, "--run-dir", reference)
    assert r.returncode == 0, r.stdout + r.stderr
    return reference


def test_scheduler_sigkilled_mid_stage_adopts_its_trials_and_ranks_once(kinds, reaper, tmp_path):
    job = kinds.sweep(max_parallel=2)
    reference = _reference(kinds, job, tmp_path)
    run_dir = tmp_path / "run"
    gate = kinds.gate("a")
    sched = gputui_bg("run", "--jobs", job, "--run-dir", run_dir, log=tmp_path / "first.log")
    reaper.append(sched)
    wait_for(lambda: sum(kinds.starts(run_dir).values()) == 2, what="two stage-a trials running")
    kill_scheduler(sched)
    running = [e["pid"] for e in kinds.events(run_dir) if e["event"] == "start"]
    assert all(psutil.pid_exists(p) for p in running), "trials must outlive their scheduler"

    log = tmp_path / "second.log"
    second = gputui_bg("run", "--jobs", job, "--run-dir", run_dir, log=log)
    reaper.append(second)
    wait_for(lambda: log.read_text().count("re-adopted") == 2, what="both running trials re-adopted")
    gate.unlink()
    assert second.wait(60) == 0, log.read_text()
    _assert_ran_once_and_ranked_once(kinds, run_dir, reference)


def test_scheduler_sigkilled_right_after_a_stage_is_ranked(kinds, reaper, tmp_path):
    job = kinds.sweep()
    reference = _reference(kinds, job, tmp_path)
    run_dir = tmp_path / "run"
    gate = kinds.gate("b")  # stage b's trials wait: the kill lands while stage b is being launched or runs
    sched = gputui_bg("run", "--jobs", job, "--run-dir", run_dir, log=tmp_path / "first.log")
    reaper.append(sched)
    wait_for(lambda: (run_dir / "state.db").exists(), what="the run's state")
    # Polled without pause, so the kill usually lands between the commit that ranks stage a (and records
    # stage b's first attempts) and the launch of those attempts.
    con = sqlite3.connect(f"file:{run_dir / 'state.db'}?mode=ro", uri=True, timeout=5)
    try:

        def ranked():
            try:
                return con.execute("SELECT 1 FROM events WHERE kind = 'ranked'").fetchone()
            except sqlite3.OperationalError:  # the file exists before its tables do
                return None

        wait_for(ranked, interval=0, what="stage a ranked")
        kill_scheduler(sched)
    finally:
        con.close()
    assert [m.split(":")[0] for m in ranked_events(run_dir)] == ["stage a"]

    gate.unlink()
    r = gputui("run", "--jobs", job, "--run-dir", run_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "stage a:" not in r.stdout  # ranked once, by the first scheduler
    _assert_ran_once_and_ranked_once(kinds, run_dir, reference)


def test_stage_that_ends_while_no_scheduler_runs_is_ranked_once_on_restart(kinds, reaper, tmp_path):
    job = kinds.sweep()
    reference = _reference(kinds, job, tmp_path)
    run_dir = tmp_path / "run"
    gate = kinds.gate("a")
    sched = gputui_bg("run", "--jobs", job, "--run-dir", run_dir, log=tmp_path / "first.log")
    reaper.append(sched)
    wait_for(lambda: sum(kinds.starts(run_dir).values()) == 3, what="all of stage a running")
    kill_scheduler(sched)
    gate.unlink()  # every trial of stage a ends while no scheduler watches
    wait_for(lambda: sum(kinds.finishes(run_dir).values()) == 3, what="stage a to finish")
    journal = run_dir / "attempts.journal"
    wait_for(lambda: journal.read_text().count("exit ") == 3, what="their exits in the journal")
    assert ranked_events(run_dir) == []

    r = gputui("run", "--jobs", job, "--run-dir", run_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "launch a-" not in r.stdout  # settled from the journal, not run again
    _assert_ran_once_and_ranked_once(kinds, run_dir, reference)


# --------------------------------------------------------------------------------------------------
# 3. Fewer than top_k ranked; none ranked


def test_fewer_ranked_than_top_k_promotes_what_there_is_and_says_why(kinds, tmp_path):
    stages = [
        ("a", [{"score": 0.5}, {"score": 0.9, "mode": "fail"}, {"score": 0.7, "mode": "silent"}]),
        ("b", [0.01]),
    ]
    job = kinds.sweep(stages, top_k=2)
    run_dir = tmp_path / "run"
    r = gputui("run", "--jobs", job, "--run-dir", run_dir)
    assert r.returncode == 1, r.stdout + r.stderr  # a trial failed for good: the run is not all done

    df = results(run_dir).set_index("trial_id")
    assert list(df.index) == ["a-0", "a-1", "a-2", "b-0"]
    assert (df.loc["a-0", "rank"], bool(df.loc["a-0", "promoted"])) == (1, True)
    assert df.loc["a-1", "status"] == "failed" and df.loc["a-1", "note"] == "not ranked: failed"
    assert df.loc["a-2", "status"] == "done" and df.loc["a-2", "note"] == "not ranked: reported no val_acc"
    assert pd.isna(df.loc["a-1", "rank"]) and pd.isna(df.loc["a-2", "rank"])
    assert not df.loc["a-1", "promoted"] and not df.loc["a-2", "promoted"]
    # The next stage runs on the one trial there is.
    assert df.loc["b-0", "parent_id"] == "a-0" and df.loc["b-0", "val_acc"] == pytest.approx(0.51)
    (message,) = [m for m in ranked_events(run_dir) if m.startswith("stage a:")]
    assert "only 1 of top_k=2 ranked: promoted what there is" in message
    assert "a-1 (failed)" in message and "a-2 (reported no val_acc)" in message
    report = (run_dir / "report.md").read_text()
    assert "not ranked: reported no val_acc" in report and best_chain(run_dir) == ["b-0", "a-0"]


def test_stage_with_no_ranked_trial_fails_the_run_and_plans_nothing_after_it(kinds, tmp_path):
    stages = [("a", [{"score": 0.9, "mode": "fail"}, {"score": 0.7, "mode": "silent"}]), ("b", [0.01])]
    job = kinds.sweep(stages, top_k=1)
    run_dir = tmp_path / "run"
    r = gputui("run", "--jobs", job, "--run-dir", run_dir)
    assert r.returncode == 1, r.stdout + r.stderr
    why = "stage a: no trial was ranked (1 failed, 1 reported no val_acc); the sweep cannot go on"
    assert f"the run failed: {why}" in r.stdout
    assert json.loads((run_dir / "summary.json").read_text())["run_failed"] == why
    assert f"The run failed: {why}" in (run_dir / "report.md").read_text()
    assert [t for (t,) in query(run_dir, "SELECT id FROM tasks ORDER BY id")] == ["a-0", "a-1"]
    assert list(results(run_dir).trial_id) == ["a-0", "a-1"]
    assert set(kinds.starts(run_dir)) == {"a-0", "a-1"}
    assert ranked_events(run_dir) == []
    assert "Best chain" not in (run_dir / "report.md").read_text()


def test_stage_that_ranked_nothing_is_ranked_once_its_fixed_trials_run_again(kinds, tmp_path):
    # Every trial of stage a fails (a bug in the command); the user fixes it and runs the same command again.
    job = kinds.sweep([("a", [0.1, 0.3]), ("b", [0.01])], top_k=1, mode="fail")
    run_dir = tmp_path / "run"
    first = gputui("run", "--jobs", job, "--run-dir", run_dir)
    assert "the run failed: stage a: no trial was ranked (2 failed)" in first.stdout

    kinds.sweep([("a", [0.1, 0.3]), ("b", [0.01])], top_k=1, mode="hooks")  # [params] may change
    r = gputui("run", "--jobs", job, "--run-dir", run_dir)
    df = results(run_dir).set_index("trial_id")
    assert list(df.loc[["a-0", "a-1"], "status"]) == ["done", "done"]  # the failed trials ran again and passed
    assert "b-0" in df.index, f"stage a was never ranked again; notes: {df.note.to_dict()}; {r.stdout[-500:]}"
    assert df.loc["a-1", "rank"] == 1 and df.loc["b-0", "parent_id"] == "a-1"
    assert json.loads((run_dir / "summary.json").read_text())["run_failed"] is None
    assert r.returncode == 0, r.stdout + r.stderr


# --------------------------------------------------------------------------------------------------
# 4. metric_regex: a worker that only prints its metric


def test_metric_read_from_the_log_with_metric_regex_when_the_worker_has_no_hooks(kinds, tmp_path):
    stages = [
        ("a", [{"score": 0.2, "mode": "print"}, {"score": 0.4, "mode": "print"}, {"score": 0.3, "mode": "both"}]),
        ("b", [{"score": 0.05, "mode": "print"}]),
    ]
    job = kinds.sweep(stages, top_k=1, metric_regex=r"val_acc=([0-9.eE+-]+)")
    run_dir = tmp_path / "run"
    r = gputui("run", "--jobs", job, "--run-dir", run_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    df = results(run_dir).set_index("trial_id")
    # The last value printed counts (each worker prints half its value first).
    assert df.loc["a-0", "val_acc"] == pytest.approx(0.2) and df.loc["a-1", "val_acc"] == pytest.approx(0.4)
    # What a worker reports through the hooks wins over what its log says.
    assert df.loc["a-2", "val_acc"] == pytest.approx(0.3)
    assert list(df.loc[["a-1", "a-2", "a-0"], "rank"]) == [1, 2, 3]
    assert df.loc["b-0", "parent_id"] == "a-1" and df.loc["b-0", "val_acc"] == pytest.approx(0.45)
    assert best_chain(run_dir) == ["b-0", "a-1"]


@pytest.mark.parametrize(("metric_mode", "first"), [(None, "a-0"), ("last", "a-1")])
def test_metric_mode_picks_the_best_value_by_default_or_the_last(kinds, tmp_path, metric_mode, first):
    """a-0 peaks at 0.4 and ends at 0.2; a-1 ends at its best, 0.3."""
    stages = [("a", [{"score": 0.2, "mode": "peak"}, 0.3])]
    job = kinds.sweep(stages, top_k=1, metric_mode=metric_mode)
    run_dir = tmp_path / "run"
    r = gputui("run", "--jobs", job, "--run-dir", run_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    df = results(run_dir).set_index("trial_id")
    assert df.loc["a-0", "val_acc"] == pytest.approx(0.4 if metric_mode is None else 0.2)
    assert df.loc[first, "rank"] == 1 and set(df.metric_mode) == {metric_mode or "best"}
    report = (run_dir / "report.md").read_text()
    assert f"Ranked by each trial's {metric_mode or 'best'} value of `val_acc`" in report


def test_printed_metric_without_metric_regex_is_not_ranked_and_the_run_fails(kinds, tmp_path):
    # Every trial exits 0, but none reports the metric in a way gputui can read: nothing can be promoted.
    job = kinds.sweep([("a", [{"score": 0.2, "mode": "print"}, {"score": 0.3, "mode": "print"}]), ("b", [0.01])])
    run_dir = tmp_path / "run"
    r = gputui("run", "--jobs", job, "--run-dir", run_dir)
    why = "stage a: no trial was ranked (2 reported no val_acc); the sweep cannot go on"
    assert f"the run failed: {why}" in r.stdout
    assert json.loads((run_dir / "summary.json").read_text())["run_failed"] == why
    assert set(kinds.starts(run_dir)) == {"a-0", "a-1"}
    assert r.returncode == 1, f"the run failed ({why}) but `gputui run` exited {r.returncode}"


# --------------------------------------------------------------------------------------------------
# 5. Pipelines


def test_pipeline_failure_skips_its_dependents_and_an_independent_branch_still_runs(kinds, tmp_path):
    job = kinds.pipeline(
        [
            {"name": "prep"},
            {"name": "train", "after": ["prep"], "mode": "fail"},
            {"name": "eval", "after": ["train"], "needs": ["train"]},
            {"name": "summary", "after": ["eval"], "needs": ["eval"]},
            {"name": "side", "after": ["prep"], "needs": ["prep"]},
        ]
    )
    run_dir = tmp_path / "run"
    r = gputui("run", "--jobs", job, "--run-dir", run_dir)
    assert r.returncode == 1, r.stdout + r.stderr
    status = dict(query(run_dir, "SELECT id, status FROM tasks"))
    assert status == {"prep": "done", "train": "failed", "eval": "skipped", "summary": "skipped", "side": "done"}
    reasons = dict(query(run_dir, "SELECT id, reason FROM tasks WHERE status = 'skipped'"))
    assert reasons == {"eval": "skipped: step train failed", "summary": "skipped: step train failed"}
    assert set(kinds.starts(run_dir)) == {"prep", "train", "side"}  # skipped steps never started
    report = (run_dir / "report.md").read_text()
    assert "## Steps" in report
    assert re.search(r"\| eval \| train \| skipped \| .* \| skipped: step train failed \|", report)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["counts"]["skipped"] == 2 and summary["counts"]["failed"] == 1
    assert "eval step eval skipped: skipped: step train failed" in r.stdout  # the run's last lines say why


def test_pipeline_step_killed_by_the_user_skips_its_dependents(kinds, reaper, tmp_path):
    job = kinds.pipeline(
        [
            {"name": "train", "gate": True},
            {"name": "eval", "after": ["train"]},
            {"name": "other"},
        ]
    )
    run_dir = tmp_path / "run"
    kinds.gate("train")
    sched = gputui_bg("run", "--jobs", job, "--run-dir", run_dir, log=tmp_path / "run.log")
    reaper.append(sched)
    wait_for(lambda: "train" in kinds.starts(run_dir), what="train running")
    k = gputui("kill", "--run-dir", run_dir, "train")
    assert k.returncode == 0, k.stdout + k.stderr
    assert sched.wait(60) == 1, (tmp_path / "run.log").read_text()
    status = dict(query(run_dir, "SELECT id, status || ': ' || coalesce(reason, '') FROM tasks"))
    assert status["train"].startswith("killed") and status["other"].startswith("done")
    assert status["eval"] == "skipped: skipped: step train was killed"
    assert "eval" not in kinds.starts(run_dir)


def test_pipeline_fixed_and_run_again_runs_the_steps_its_failure_skipped(kinds, tmp_path):
    steps = [{"name": "train", "mode": "fail"}, {"name": "eval", "after": ["train"], "needs": ["train"]}]
    job = kinds.pipeline(steps)
    run_dir = tmp_path / "run"
    assert gputui("run", "--jobs", job, "--run-dir", run_dir).returncode == 1
    assert dict(query(run_dir, "SELECT id, status FROM tasks")) == {"train": "failed", "eval": "skipped"}

    steps[0]["mode"] = "hooks"  # the user fixes the failing step's command (a safe change) and runs again
    kinds.pipeline(steps)
    r = gputui("run", "--jobs", job, "--run-dir", run_dir)
    status = dict(query(run_dir, "SELECT id, status || ': ' || coalesce(reason, '') FROM tasks"))
    assert status["train"].startswith("done")
    assert status["eval"].startswith("done"), f"eval stays {status['eval']!r} though train is done now"
    assert kinds.starts(run_dir) == {"train": 2, "eval": 1}
    assert r.returncode == 0, r.stdout + r.stderr


def test_pipeline_runs_each_step_only_after_the_steps_it_waits_for(kinds, tmp_path):
    # File order is not dependency order: summary waits for eval and side, which wait for train.
    job = kinds.pipeline(
        [
            {"name": "summary", "after": ["eval", "side"], "needs": ["eval", "side"]},
            {"name": "eval", "after": ["train"], "needs": ["train"]},
            {"name": "train"},
            {"name": "side", "after": ["train"], "needs": ["train"]},
        ]
    )
    run_dir = tmp_path / "run"
    r = gputui("run", "--jobs", job, "--run-dir", run_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(dict(query(run_dir, "SELECT id, status FROM tasks")).values()) == {"done"}
    events = kinds.events(run_dir)  # appended as they happened
    position = {(e["task"], e["event"]): i for i, e in enumerate(events)}
    waits = {"summary": ["eval", "side"], "eval": ["train"], "side": ["train"], "train": []}
    for step, deps in waits.items():
        for dep in deps:
            assert position[(dep, "finish")] < position[(step, "start")], f"{step} started before {dep} ended"
    assert [e["task"] for e in events if e["event"] == "start"][0] == "train"
    assert (run_dir / "steps" / "summary" / "metric.txt").exists()


# --------------------------------------------------------------------------------------------------
# 6. A changed plan is refused on resume


def test_changed_sweep_plan_is_refused_and_nothing_launched(kinds, reaper, tmp_path):
    job = kinds.sweep()
    run_dir = tmp_path / "run"
    gate = kinds.gate("a")
    sched = gputui_bg("run", "--jobs", job, "--run-dir", run_dir, log=tmp_path / "first.log")
    reaper.append(sched)
    wait_for(lambda: sum(kinds.starts(run_dir).values()) == 3, what="stage a running")
    kill_scheduler(sched)
    gate.unlink()
    original = job.read_text()
    before = (kinds.starts(run_dir), attempts_per_task(run_dir))

    job.write_text(original.replace("top_k = 2", "top_k = 1"))
    r = gputui("run", "--jobs", job, "--run-dir", run_dir)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{job}: [sweep] changed since {run_dir} started (top_k: was 2, now 1)" in r.stderr
    assert "launch" not in r.stdout

    job.write_text(original.replace("{ score = 0.3 }", "{ score = 0.5 }"))
    r = gputui("run", "--jobs", job, "--run-dir", run_dir)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "stages.a.params[1].score: was 0.3, now 0.5" in r.stderr and "launch" not in r.stdout

    kinds.sweep(stages=[STAGES[0], STAGES[2], STAGES[1]])  # b and c swapped: the same stages, another order
    r = gputui("run", "--jobs", job, "--run-dir", run_dir)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "[[sweep.stage]] order changed" in r.stderr and "(was a, b, c; now a, c, b)" in r.stderr
    assert "launch" not in r.stdout
    wait_for(lambda: sum(kinds.finishes(run_dir).values()) == 3, what="stage a's adopted trials to end")
    assert (kinds.starts(run_dir), attempts_per_task(run_dir)) == before  # no worker started by the refusals

    job.write_text(original)  # restored: the run goes on where it was
    r = gputui("run", "--jobs", job, "--run-dir", run_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    assert best_chain(run_dir) == ["c-0", "b-1", "a-1"] and set(kinds.starts(run_dir).values()) == {1}


def test_changed_pipeline_after_is_refused_and_nothing_launched(kinds, tmp_path):
    steps = [
        {"name": "prep"},
        {"name": "train", "after": ["prep"], "mode": "fail"},
        {"name": "eval", "after": ["train"]},
    ]
    job = kinds.pipeline(steps)
    run_dir = tmp_path / "run"
    assert gputui("run", "--jobs", job, "--run-dir", run_dir).returncode == 1  # train failed: work is left
    starts = kinds.starts(run_dir)

    steps[2]["after"] = ["prep"]
    job = kinds.pipeline(steps)
    r = gputui("run", "--jobs", job, "--run-dir", run_dir)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{job}: [[pipeline.step]] changed since {run_dir} started" in r.stderr
    change = re.search(r"started \((.*?)\); the steps already run", r.stderr)[1]
    assert "after" in change and 'was "train", now "prep"' in change, change
    assert "launch" not in r.stdout and kinds.starts(run_dir) == starts
    assert dict(query(run_dir, "SELECT id, status FROM tasks"))["eval"] == "skipped"


def test_added_pipeline_step_is_refused_naming_the_step(kinds, tmp_path):
    steps = [
        {"name": "prep"},
        {"name": "train", "after": ["prep"], "mode": "fail"},
        {"name": "eval", "after": ["train"]},
    ]
    job = kinds.pipeline(steps)
    run_dir = tmp_path / "run"
    assert gputui("run", "--jobs", job, "--run-dir", run_dir).returncode == 1
    starts = kinds.starts(run_dir)

    job = kinds.pipeline([*steps, {"name": "export", "after": ["eval"]}])
    r = gputui("run", "--jobs", job, "--run-dir", run_dir)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "launch" not in r.stdout and kinds.starts(run_dir) == starts
    assert f"{job}: [[pipeline.step]] changed since {run_dir} started" in r.stderr
    change = re.search(r"started \((.*?)\); the steps already run", r.stderr)[1]
    assert "export" in change, f"the message does not say which step was added: {change}"


# --------------------------------------------------------------------------------------------------
# 7. The samples, end to end (a real tiny PyTorch trainer on the CPU)


def _sample_env() -> dict[str, str]:
    """The samples run `python`: this interpreter's (the one with torch)."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def test_sample_sweep_end_to_end(tmp_path):
    run_dir = tmp_path / "sweep"
    r = gputui("run", "--jobs", ROOT / "sample_jobs" / "sweep.toml", "--run-dir", run_dir, env=_sample_env())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    df = results(run_dir)
    assert len(df) == 13 and set(df.status) == {"done"} and df.trial_id.is_unique
    assert Counter(df.stage) == {"task1": 3, "task2": 6, "task3": 4}
    assert df.val_acc.notna().all() and df["rank"].notna().all()
    chain = best_chain(run_dir)
    assert [c.split("-")[0] for c in chain] == ["task3", "task2", "task1"]
    parents = dict(zip(df.trial_id, df.parent_id, strict=True))
    assert parents[chain[0]] == chain[1] and parents[chain[1]] == chain[2]
    assert "13/13 trials done" in (run_dir / "report.md").read_text()
    for trial in df.trial_id:
        assert (run_dir / "trials" / trial / "model.pt").exists()
        assert "val_acc" in pd.read_csv(run_dir / "tasks" / trial / "metrics.csv").columns


def test_sample_pipeline_end_to_end(tmp_path):
    run_dir = tmp_path / "pipeline"
    r = gputui("run", "--jobs", ROOT / "sample_jobs" / "pipeline.toml", "--run-dir", run_dir, env=_sample_env())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert dict(query(run_dir, "SELECT id, status FROM tasks")) == {
        "train": "done",
        "eval": "done",
        "summary": "done",
    }
    final = json.loads((run_dir / "steps" / "summary" / "summary.json").read_text())
    assert 0.0 <= final["val_acc"] <= 1.0
    assert "3/3 steps done" in (run_dir / "report.md").read_text()


# --------------------------------------------------------------------------------------------------
# 8. Job-file errors of the kinds, through the CLI


@pytest.mark.parametrize(
    "body, expected",
    [
        (
            '[job]\nname = "x"\nkind = "swep"\ncommand = "true"\n',
            "[job].kind: unknown kind 'swep'; did you mean 'sweep'?",
        ),
        (
            '[job]\nname = "x"\nkind = "sweep"\ncommand = "true {lr}"\n',
            "[sweep]: missing table; a sweep job needs it",
        ),
        (
            '[job]\nname = "x"\nkind = "pipeline"\n'
            '[[pipeline.step]]\nname = "a"\ncommand = "true"\nafter = ["b"]\n'
            '[[pipeline.step]]\nname = "b"\ncommand = "true"\nafter = ["a"]\n',
            "[[pipeline.step]]: steps wait for each other in a cycle: a -> b -> a",
        ),
    ],
    ids=["unknown-kind", "sweep-without-table", "pipeline-cycle"],
)
def test_job_file_errors_of_kinds_name_the_file_and_key(tmp_path, body, expected):
    job = tmp_path / "job.toml"
    job.write_text(body)
    r = gputui("run", "--jobs", job)
    assert r.returncode == 2
    assert f"{job}: {expected}" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()  # nothing was started
