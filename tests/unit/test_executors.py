"""The executor is chosen once, by kind, for the scheduler (open_executor) and for whoever has only the run
directory (recorded_executor); each recorded executor says what it always said of an attempt."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from gputui.executors import ownership, ray_client, slurm
from gputui.executors.base import LaunchFailed, LaunchSpec, Placement, RunContext
from gputui.executors.local import LocalExecutor, RecordedLocal
from gputui.executors.ray_executor import RayExecutor, RecordedRay
from gputui.executors.registry import open_executor, recorded_executor, runs_on
from gputui.executors.slurm_executor import RecordedSlurm, SlurmExecutor
from gputui.jobs.spec import ExecutorSpec
from gputui.views.executor_facts import cluster_gpus_of, gpus_label, kill_lines, kill_target


def context(tmp_path: Path) -> RunContext:
    return RunContext(tmp_path, tmp_path / "attempts.journal", tmp_path, "sched-1", "job", max_parallel=3)


@pytest.mark.parametrize(
    ("spec", "kind", "places"),
    [
        (ExecutorSpec(), LocalExecutor, True),
        (ExecutorSpec(kind="ray", address="head:6379", num_gpus=None), RayExecutor, False),
        (ExecutorSpec(kind="slurm", partition="gpu"), SlurmExecutor, False),
    ],
)
def test_the_run_opens_the_executor_of_its_kind_and_records_what_reads_it_back(tmp_path, spec, kind, places):
    executor = open_executor(spec, context(tmp_path))
    try:
        assert type(executor) is kind and executor.kind == spec.kind
        assert executor.places_gpus is places and executor.recorded.places_gpus is places
        meta = executor.recorded.meta()
        assert meta["executor"] == spec.kind
        back = recorded_executor(tmp_path, meta.get)
        assert type(back) is type(executor.recorded) and back.meta() == meta
    finally:
        executor.close()


@pytest.mark.parametrize("name", ["local", "ray", "slurm"])
def test_every_backend_offers_the_whole_protocol(name):
    from gputui.executors.base import Executor, RecordedExecutor
    from gputui.executors.registry import EXECUTORS, RECORDED

    for cls, protocol in ((EXECUTORS[name], Executor), (RECORDED[name], RecordedExecutor)):
        wanted = {n for n in (*protocol.__annotations__, *vars(protocol)) if not n.startswith("_")}
        instance_only = {"recorded", "env"}  # set in __init__
        assert not [n for n in wanted - instance_only if not hasattr(cls, n)], cls


def test_a_run_that_recorded_no_executor_ran_here():
    assert type(recorded_executor(None, {}.get)) is RecordedLocal
    assert type(recorded_executor(None, {"executor": "kubernetes"}.get)) is RecordedLocal


def test_the_ray_address_comes_back_from_the_meta(tmp_path):
    meta = {"executor": "ray", "ray_address": "local", "ray_num_gpus": 4}
    recorded = recorded_executor(tmp_path, meta.get)
    assert (recorded.address, recorded.num_gpus, recorded.run_dir) == ("local", 4, tmp_path)


def test_where_a_job_runs_before_it_is_launched():
    assert runs_on(ExecutorSpec()) is None
    assert runs_on(ExecutorSpec(kind="ray", address="local")) == "a private Ray cluster"
    assert runs_on(ExecutorSpec(kind="ray", address="head:6379")) == "the Ray cluster at head:6379"
    assert runs_on(ExecutorSpec(kind="slurm", partition="gpu")) == "Slurm partition gpu"
    assert runs_on(ExecutorSpec(kind="slurm")) == "Slurm's default partition"


@dataclass
class View:
    placed: str | None


REFS = [ownership.ProcessRef(101, 1), ownership.ProcessRef(102, 2)]


def test_each_executor_describes_a_kill_as_before():
    assert kill_target(REFS, View(None)) == "2 process(es): 101, 102"
    assert kill_target([], View(None)) == "not running (marked killed)"
    assert kill_target([], View(""), "ray") == "queued in Ray: ended before it starts"
    assert kill_target([], View("n1:0,1"), "ray") == "its process tree on Ray node n1 (GPUs 0,1)"
    assert kill_target([], View(None), "ray") == "not running (marked killed)"
    assert kill_target(REFS, View("n1:2"), "slurm", "41_3") == (
        "Slurm job 41_3 on n1 (GPUs 2), cancelled by its stand-in here (pid 101, 102)"
    )
    assert (
        kill_target(REFS, View(""), "slurm", "41")
        == "Slurm job 41, pending, cancelled by its stand-in here (pid 101, 102)"
    )
    assert kill_target(REFS, View(None), "slurm") == "2 process(es): 101, 102"  # submitted: no job yet
    many = [ownership.ProcessRef(i, i) for i in range(8)]
    assert kill_target(many, None) == "8 process(es): 0, 1, 2, 3, 4, 5 …"


@dataclass
class Attempt:
    task_id: str
    number: int
    log_path: str = ""


@dataclass
class Task:
    id: str


@dataclass
class TaskView:
    task: Task
    attempt: Attempt | None
    placed: str | None = None


@dataclass
class Run:
    run_dir: Path
    meta: dict
    tasks: list


def test_a_kill_on_slurm_names_the_job_its_attempt_was_submitted_as(tmp_path):
    slurm.folder(tmp_path).mkdir()
    slurm.attempt_file(tmp_path, "shard-0", 2, "job").write_text("77_0\n")
    run = Run(tmp_path, {"executor": "slurm"}, [TaskView(Task("shard-0"), Attempt("shard-0", 2), "")])
    lines = kill_lines(run, {"shard-0": REFS, "shard-1": []}, ["shard-0", "shard-1"])
    assert lines == [
        "shard-0: Slurm job 77_0, pending, cancelled by its stand-in here (pid 101, 102)",
        "shard-1: not running (marked killed)",
    ]
    assert kill_lines(None, {}, ["t"]) == ["t: not running (marked killed)"]


def test_where_a_slurm_attempt_runs_and_what_slurm_says_of_a_queued_one(tmp_path):
    recorded = RecordedSlurm(tmp_path)
    assert recorded.placement("shard-0", 1, "") is None and recorded.job_of("shard-0", 1) == ""
    slurm.folder(tmp_path).mkdir()
    slurm.attempt_file(tmp_path, "shard-0", 1, "job").write_text("41")
    squeue = {"job": "41", "state": "PENDING", "reason": "JobHeldAdmin", "nodes": ""}
    slurm.attempt_file(tmp_path, "shard-0", 1, "squeue").write_text(json.dumps(squeue))
    assert recorded.standing("shard-0", 1) == "held (JobHeldAdmin)"
    slurm.attempt_file(tmp_path, "shard-0", 1, "started").write_text(
        json.dumps({"job": "41", "node": "n1", "gpus": "0"})
    )
    found = recorded.placement("shard-0", 1, "")
    assert found is not None and found.shown == "n1:0" and found.since > 0


def test_where_a_ray_attempt_runs_comes_from_its_logs_first_line(tmp_path):
    log = tmp_path / "t.attempt1.log"
    log.write_text(
        "gputui: on Ray node n2 (pid 9, node id abcdef123), GPUs none, since 2026-01-01T00:00:00+00:00\n"
    )
    found = RecordedRay(tmp_path).placement("t", 1, str(log))
    assert found == Placement("n2", "", found.since, "abcdef123") and found.shown == "n2:-"
    assert RecordedRay(tmp_path).placement("t", 1, str(tmp_path / "none.log")) is None


def test_a_word_to_an_attempt_on_ray_goes_to_its_signal_file(tmp_path):
    ray_client.folder(tmp_path).mkdir()
    recorded = RecordedRay(tmp_path)
    for word in ("pause", "resume", "terminate", "kill"):
        assert recorded.signal(Attempt("t", 3), word) is None  # told, not signalled here
    said = ray_client.signals_path(tmp_path, "t", 3).read_text()
    assert said == "STOP\nCONT\nTERM\nKILL\n"


def test_a_local_attempt_is_signalled_as_a_process_tree_and_a_pause_on_slurm_reaches_its_standin():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        ref = ownership.ref_of(child.pid)

        class Record(Attempt):
            def processes(self):
                return ownership.AttemptProcesses(None, ref, None)

        attempt = Record("t", 1)
        assert RecordedLocal().signal(attempt, "pause") == [ref]
        assert RecordedLocal().signal(attempt, "resume") == [ref]
        assert RecordedSlurm(None).signals["pause"] == signal.SIGTSTP  # the stand-in suspends or holds the job
        assert RecordedLocal().signal(attempt, "kill") == [ref]
        assert child.wait(10) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()


def test_the_control_verbs_words_per_executor():
    local, ray, on_slurm = RecordedLocal(), RecordedRay(None), RecordedSlurm(None)
    assert local.paused(REFS + REFS[:1]) == "paused 2 process(es); its GPU memory stays allocated"
    assert ray.paused([]) == "paused on Ray (its processes on the node are stopped; GPU memory stays allocated)"
    assert on_slurm.paused(REFS) == "paused on the slurm cluster (its log says how: suspended, held or stopped)"
    assert (local.resumed(REFS), ray.resumed([]), on_slurm.resumed(REFS[:1])) == (
        "resumed 2 process(es)", "resumed on Ray", "resumed 1 process(es)",
    )  # fmt: skip
    assert local.killed(2, ["pid 7 (D state)"], False) == "killed 2 process(es); still alive: pid 7 (D state)"
    assert (ray.killed(0, [], True), ray.killed(0, [], False)) == ("still ending on Ray", "ended on Ray")
    assert (local.adopted_where(REFS[0]), local.adopted_where(None), ray.adopted_where(None)) == (
        "pid 101", "pid ?", "on Ray",
    )  # fmt: skip


def test_the_app_shows_a_clusters_gpus_only_where_it_can_read_them(tmp_path):
    assert gpus_label(None) is None and cluster_gpus_of(None, None) is None
    here = Run(tmp_path, {"executor": "local"}, [])
    assert gpus_label(here) is None and cluster_gpus_of(here, None) is None
    on_slurm = Run(tmp_path, {"executor": "slurm"}, [])
    assert gpus_label(on_slurm) == "slurm cluster"
    gpus, why = cluster_gpus_of(on_slurm, None)
    assert gpus == [] and why.startswith("this run's tasks run on a slurm cluster: the table's GPUs column")
    on_ray = Run(tmp_path, {"executor": "ray", "ray_address": "local"}, [])
    assert gpus_label(on_ray) == "ray cluster"
    assert cluster_gpus_of(on_ray, None) == (  # no bridge serves this run: the app never starts one
        [],
        "the run's Ray bridge has left (nothing of the run is on the cluster): no GPUs to show",
    )


def test_slots_requeues_and_losses_are_each_executors_own(tmp_path):
    from gputui.executors.base import Capacity

    cluster = Capacity(gpus=4, node_gpus=2, cpus=16, nodes=2, where="x")
    ray = RayExecutor(context(tmp_path), "auto", None)
    on_slurm = SlurmExecutor(context(tmp_path), None, ())
    try:
        assert ray.slots(cluster, 1) == 12 and ray.slots(cluster, 0) == 48 and ray.slots(cluster, 8) == 3
        assert on_slurm.slots(cluster, 1) == slurm.SUBMIT_WINDOW
        assert on_slurm.requeue_reason(slurm.NOT_STARTED).startswith("Slurm dropped it before it ran")
        assert ray.requeue_reason(slurm.NOT_STARTED) is None
        assert on_slurm.after_end("t", 1, 0) is None and on_slurm.after_end("t", 1, 1) is None  # its job ended
        assert ray.lost_wording.startswith("the Ray bridge that held it ended first")
        with pytest.raises(LaunchFailed) as gone:
            ray.waiter()  # no bridge attached: nothing may be sent, and no other waiter would do
        assert gone.value.retry is False
    finally:
        ray.close()
        on_slurm.close()


def test_slurm_submits_shards_as_one_array_and_a_step_behind_the_job_it_waits_for(tmp_path, monkeypatch):
    submitted = []
    monkeypatch.setattr(slurm, "submit", lambda a, batch: submitted.append((a, batch)) or str(40 + len(submitted)))
    executor = SlurmExecutor(context(tmp_path), "gpu", ("--time=1:00",))
    try:

        def spec(task: str, **kw) -> LaunchSpec:
            return LaunchSpec(task, 1, ["work", task], {"GPUTUI_TASK": task}, tmp_path / f"{task}.log", 5.0, **kw)

        shards = [(spec(f"shard-{i}", asked=1, batch=True), i) for i in range(3)]
        out = executor.submit(shards, print)
        args, batch = submitted[0]
        assert "--array=0-2%3" in args and "--gres=gpu:1" in args and "--partition=gpu" in args
        assert args[-1] == "--time=1:00" and len(json.loads(batch.read_text())) == 3
        assert [s.task_id for s, _ in out] == ["shard-0", "shard-1", "shard-2"] and [x for _, x in out] == [
            0,
            1,
            2,
        ]
        assert slurm.attempt_file(tmp_path, "shard-2", 1, "job").read_text() == "41_2"
        assert executor.queues_after("shard-2") and not executor.queues_after("train")
        assert "--job" in out[0][0].argv and "41_0" in out[0][0].argv  # each launch is its job's stand-in

        executor.submit([(spec("eval", asked=2, after=("shard-1",)), None)], print)
        args, _ = submitted[1]
        assert (
            "--dependency=afterok:41_1" in args
            and "--gres=gpu:2" in args
            and not any("--array" in a for a in args)
        )
    finally:
        executor.close()
