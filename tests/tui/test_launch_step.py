"""What `l` does, decided from the run as last read (pure: plain values in, one step out)."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

from gputui.api import Start
from gputui.tui.verbs import AskHowToStart, Say, StartRun, launch_step


def _view(task_id: str, status: str):
    return SimpleNamespace(task=SimpleNamespace(id=task_id, status=status))


def _run(*statuses: str, live: bool = False):
    views = [_view(f"shard-{i}", s) for i, s in enumerate(statuses)]

    def first_ids(shown, limit):
        return [v.task.id for v in views if v.task.status in shown][:limit]

    return SimpleNamespace(scheduler_live=live, tasks=views, counts=Counter(statuses), first_ids=first_ids)


def test_a_live_run_starts_the_selected_waiting_task_now():
    run = _run("running", "pending", live=True)
    assert launch_step(run, run.tasks[1], job_known=True, no_fit=None) == Start(("shard-1",))
    assert isinstance(launch_step(run, run.tasks[0], job_known=True, no_fit=None), Say)


def test_before_launch_the_job_starts_unless_its_model_fits_nowhere():
    assert launch_step(None, None, job_known=True, no_fit=None) == StartRun(only_pending=False)
    refused = launch_step(None, None, job_known=True, no_fit="auto: needs 40 GB")
    assert refused.severity == "error" and "needs 40 GB" in refused.text
    assert launch_step(None, None, job_known=False, no_fit=None).severity == "warning"


def test_a_finished_run_offers_to_start_over_and_a_run_with_waiting_tasks_starts_again():
    over = launch_step(_run("done", "done"), None, job_known=True, no_fit=None)
    assert isinstance(over, AskHowToStart) and [c[:2] for c in over.choices] == [("a", "over")]
    assert "Every task is done (2)" in over.body and "over" in over.title
    assert "1 killed task(s)" in launch_step(_run("done", "killed"), None, job_known=True, no_fit=None).text
    assert launch_step(_run("done", "pending"), None, job_known=True, no_fit=None) == StartRun(only_pending=True)


def test_failed_tasks_ask_whether_to_run_them_again_or_only_the_pending():
    ask = launch_step(_run("failed", "pending"), None, job_known=True, no_fit=None)
    assert isinstance(ask, AskHowToStart) and [c[1] for c in ask.choices] == ["failed", "only"]
    only_failed = launch_step(_run("failed", "done"), None, job_known=True, no_fit=None)
    assert [c[:2] for c in only_failed.choices] == [("f", "failed"), ("a", "over")]
    assert "run the failed tasks again" in only_failed.choices[0][2]
