"""What only Slurm shows, on a real Slurm: one node on 127.0.0.1 (its own munged, slurmctld and slurmd, four
fake GPUs made with mknod), the session's, shared with tests/contract/ (started as root on first use, stopped
when the session ends). What every executor guarantees is in tests/contract/ (run there against Slurm too).

The node is this machine, so the tests see the jobs' processes (and their tags) as a user on the node
would, and squeue shows what Slurm thinks of them.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from gputui.engine import control
from gputui.executors import slurm, slurm_task
from gputui.rundir.manifests import read_manifest
from gputui.rundir.opening import open_existing
from gputui.rundir.store import Store
from gputui.tui.widgets.job_rows import row_cells
from gputui.tui.widgets.run_header import progress_text
from gputui.views.executor_facts import kill_target
from gputui.views.runview import RunView
from tests import slurm_cluster
from tests.conftest import gputui, gputui_bg, keeper_of, wait_for

ON_SLURM = '\n[executor]\nkind = "slurm"\npartition = "gpu"\nextra_args = ["--time=00:30:00"]\n'


@pytest.fixture(scope="module")
def slurm_env(shared_slurm):
    """The session's Slurm (tests/conftest.py); every command of the module's tests (and gputui's) talks to it."""
    with slurm_cluster.environment(shared_slurm):
        yield shared_slurm


def merged_ids(run_dir: Path) -> Counter:
    with open(run_dir / "outputs" / "merged.csv", newline="") as f:
        return Counter(int(r["data_id"]) for r in csv.DictReader(f))


def squeue() -> list[dict]:
    """Every job Slurm lists now: id, state, comment."""
    out = subprocess.run(["squeue", "-h", "-o", "%i|%T|%k"], capture_output=True, text=True, check=True).stdout
    return [dict(zip(("id", "state", "comment"), line.split("|"), strict=True)) for line in out.splitlines()]


def job_of(run_dir: Path, task: str, attempt: int = 1) -> str:
    return slurm.attempt_file(run_dir, task, attempt, "job").read_text()


def status_text(run_dir: Path) -> str:
    """`gputui status` as a wide terminal shows it (no cell folded)."""
    return gputui("status", "--run-dir", run_dir, env=os.environ | {"COLUMNS": "250"}).stdout


def node(state: str, reason: str = "") -> None:
    """`scontrol update` of the node, as an admin would do it (resume: errors ignored, it may be idle)."""
    why = [f"reason={reason}"] if reason else []
    subprocess.run(["scontrol", "update", "nodename=localhost", f"state={state}", *why], check=state != "resume",
                   capture_output=True)  # fmt: skip


def test_a_failed_step_holds_back_its_follower_which_runs_after_the_retry(slurm_env, tmp_path):
    flag = tmp_path / "failed-once"
    prep = f"sh -c 'sleep 2; [ -e {flag} ] || (touch {flag}; echo failing once; exit 3)'"
    job = tmp_path / "pl.toml"
    job.write_text(
        textwrap.dedent(f"""
        [job]
        name = "pl"
        kind = "pipeline"
        [[pipeline.step]]
        name = "prep"
        command = "{prep}"
        [[pipeline.step]]
        name = "train"
        command = "echo trained"
        after = ["prep"]
        [resources]
        gpus_per_worker = 0
        [retry]
        max_attempts = 2
        backoff_s = 0.05
        """)
        + ON_SLURM
    )
    r = gputui("run", "--jobs", job, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    run_dir = tmp_path / "runs" / "pl"
    status = {t["id"]: t for t in json.loads(gputui("status", "--run-dir", run_dir, "--json").stdout)["tasks"]}
    assert status["prep"]["status"] == "done" and status["prep"]["attempts"] == 2
    assert status["train"]["status"] == "done"
    logs = sorted((run_dir / "logs").glob("train.attempt*.log"))
    assert "trained" in logs[-1].read_text()
    first = logs[0].read_text()
    assert "Slurm dropped job" in first or len(logs) == 1, first  # afterok never satisfied: not a failure
    assert "trained" not in first or len(logs) == 1, "train ran only after prep succeeded"


def test_a_job_cancelled_outside_fails_with_slurms_reason_and_is_retried(slurm_env, make_job, reaper, tmp_path):
    job = make_job(extra=ON_SLURM, ids=5, num_workers=1, gpus_per_worker=1, sleep=3)
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "run.log")
    reaper.append(sched)
    wait_for(lambda: make_job.running().get("shard-0"), timeout=60, what="shard-0 running on Slurm")
    subprocess.run(["scancel", job_of(make_job.run_dir, "shard-0")], check=True)  # an admin, a time limit...
    assert sched.wait(120) == 0, (tmp_path / "run.log").read_text()
    store = Store.open(make_job.run_dir / "state.db", readonly=True)
    reason = store.attempt("shard-0", 1).reason
    store.close()
    assert reason.startswith("Slurm: ") and "CANCELLED AT" in reason, reason
    assert [e["attempt"] for e in make_job.events() if e["event"] == "start"] == [1, 2]


@pytest.mark.parametrize("signals", ["writable", "unwritable"])
def test_a_stand_in_killed_here_cancels_its_job_which_is_retried(slurm_env, make_job, reaper, tmp_path, signals):
    """`unwritable`: the attempt's signals file cannot be written (a folder in its place): the scancel is
    still done."""
    job = make_job(extra=ON_SLURM, ids=5, num_workers=1, gpus_per_worker=1, sleep=3)
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "run.log")
    reaper.append(sched)
    wait_for(lambda: make_job.running().get("shard-0"), timeout=60, what="shard-0 running on Slurm")
    first = job_of(make_job.run_dir, "shard-0")
    store = Store.open(make_job.run_dir / "state.db", readonly=True)
    standin = store.attempt("shard-0", 1).worker.pid  # the process its waiter watches, here
    store.close()
    if signals == "unwritable":
        path = slurm.attempt_file(make_job.run_dir, "shard-0", 1, "signals")
        path.unlink(missing_ok=True)
        path.mkdir()
    os.kill(standin, signal.SIGKILL)
    wait_for(lambda: slurm.job_state(first) is None, timeout=30, what="its Slurm job cancelled, not left running")
    assert sched.wait(120) == 0, (tmp_path / "run.log").read_text()
    assert f"cancelled Slurm job {first}" in (tmp_path / "run.log").read_text()
    attempts = [e["attempt"] for e in make_job.events() if e["event"] == "start"]
    assert attempts == [1, 2] and merged_ids(make_job.run_dir) == Counter({i: 2 for i in range(5)})


def test_a_pending_job_is_held_and_released_and_a_killed_one_cancelled(slurm_env, make_job, reaper, tmp_path):
    job = make_job(extra=ON_SLURM, ids=10, num_workers=2, gpus_per_worker=4, max_parallel=2, sleep=30)
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "run.log")
    reaper.append(sched)
    wait_for(lambda: make_job.running(), timeout=60, what="one shard running (all 4 GPUs)")
    running = next(iter(make_job.running()))
    waiting = "shard-1" if running == "shard-0" else "shard-0"
    pending = wait_for(lambda: slurm.attempt_file(make_job.run_dir, waiting, 1, "job").exists(), what="submitted")
    assert pending
    slurm_job = job_of(make_job.run_dir, waiting)
    assert slurm.job_state(slurm_job).state == "PENDING"
    # A stand-in writes to its log itself: the keeper holds no output pipe of theirs (only its own 3 pipes).
    held = [os.readlink(fd) for fd in Path(f"/proc/{keeper_of(sched).pid}/fd").iterdir()]
    assert sum(fd.startswith("pipe:") for fd in held) == 3, held
    # The app's table and header tell the queued task from the one Slurm started, and say where that one runs.
    run = RunView(make_job.run_dir).snapshot()
    placed = {v.task.id: v.placed for v in run.tasks}
    assert placed[waiting] == "" and placed[running].endswith(":0,1,2,3"), placed
    assert "1 running, 1 queued" in progress_text(run, time.time()).plain
    # Our jobs say whose they are in their comment (a foreign one does not: tests/contract/).
    jobs = {task: job_of(make_job.run_dir, task) for task in (running, waiting)}
    assert sorted(j["id"] for j in squeue() if j["comment"].startswith("gputui:")) == sorted(jobs.values())
    # The app's confirmation names what a kill reaches: each of our jobs, through its stand-in here.
    found = RunView(make_job.run_dir).processes([running, waiting])
    for v in run.tasks:
        said = kill_target(found[v.task.id], v, "slurm", jobs[v.task.id])
        where = " on " if v.task.id == running else ", pending, "
        assert said.startswith(f"Slurm job {jobs[v.task.id]}{where}"), said
        assert said.endswith(f"cancelled by its stand-in here (pid {found[v.task.id][0].pid})"), said
    gputui("pause", "--run-dir", make_job.run_dir, waiting)
    held = lambda: slurm.job_state(slurm_job).reason.startswith("JobHeld")  # noqa: E731
    wait_for(held, timeout=20, what="the pending job held")
    gputui("resume", "--run-dir", make_job.run_dir, waiting)
    wait_for(lambda: not held(), timeout=20, what="the job released")
    # Held by an admin, behind gputui's back: `status` and the app's table say so, with Slurm's reason.
    subprocess.run(["scontrol", "hold", slurm_job], check=True)
    shown = wait_for(lambda: "queued: held (JobHeldAdmin)" in (said := status_text(make_job.run_dir)) and said,
                     timeout=30, what="gputui status showing the admin's hold")  # fmt: skip
    assert f"{running}" in shown and ":0,1,2,3" in shown, shown  # the running one: where it runs
    view = next(v for v in RunView(make_job.run_dir).snapshot().tasks if v.task.id == waiting)
    cells = row_cells(view, time.time())  # short in the progress cell, whole in the reason, once
    assert cells["progress"] == "queued: held" and cells["reason"].count("held (JobHeldAdmin)") == 1, cells
    assert [column for column, cell in cells.items() if "JobHeldAdmin" in cell] == ["reason"], cells

    def reasons() -> dict[str, str | None]:  # `status --json` says it too: the engine's reason, Slurm's word in it
        return {
            t["id"]: t["reason"]
            for t in json.loads(gputui("status", "--run-dir", make_job.run_dir, "--json").stdout)["tasks"]
        }

    said = wait_for(lambda: (r := reasons())[waiting] == "queued in Slurm: held (JobHeldAdmin)" and r,
                    timeout=30, what="status --json giving Slurm's word on the queued task")  # fmt: skip
    assert said[running] is None, said  # started on its node: nothing to say
    subprocess.run(["scontrol", "release", slurm_job], check=True)
    r = gputui("kill", "--run-dir", make_job.run_dir, "--all")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: not [j for j in squeue() if j["comment"].startswith("gputui:")], timeout=60, what="all gone")
    sched.wait(60)


@pytest.mark.parametrize("restarted", ["controller", "controller and node"])
def test_a_controller_restarted_from_older_state_does_not_run_finished_shards_again(
    slurm_env, make_job, reaper, tmp_path, restarted
):
    """slurmctld SIGKILLed while the shards run; they finish and are settled while it is away; it comes
    back from state saved before they started (held back here by a drained node, so that state is
    certain) and starts each shard's job again. On a node that kept the finished jobs' steps, slurmd
    refuses the duplicates and --no-requeue has Slurm cancel them (it requeued and ran them later before);
    on a node restarted meanwhile, slurmd runs them and the runner refuses. Either way every command ran
    once, and no output changed after its manifest."""
    state = Path(slurm_env["SLURM_CONF"]).parent / "state"
    node("drain", "maintenance by the test")
    try:
        job = make_job(extra=ON_SLURM, ids=8, num_workers=4, gpus_per_worker=1, max_parallel=4, sleep=2)
        sched = gputui_bg("run", "--jobs", job, log=tmp_path / "run.log")
        reaper.append(sched)
        jobs = make_job.run_dir / "slurm"
        wait_for(lambda: len(list(jobs.glob("*.attempt1.job"))) == 4, timeout=60, what="4 shards submitted")
        submitted = max(p.stat().st_mtime for p in jobs.glob("*.attempt1.job"))
        wait_for(lambda: saved_since(state / "job_state", submitted), timeout=60, what="the controller's save")
        # While the node is drained, `gputui status` says why the shards wait, as Slurm does.
        said = "queued: node localhost drained: maintenance by the test"
        shown = wait_for(lambda: (out := status_text(make_job.run_dir)).count(said) == 4 and out, timeout=30,
                         what="the drained node shown for each queued shard")  # fmt: skip
        assert "running" in shown
        older = Path(shutil.copytree(state, tmp_path / "saved-state"))
        node("resume")
        wait_for(lambda: len(make_job.running()) == 4, timeout=60, what="4 shards running")
        slurm_cluster.kill_controller(slurm_env)
        assert sched.wait(120) == 0, (tmp_path / "run.log").read_text()  # done while the controller is away
        if restarted == "controller and node":
            slurm_cluster.restart_node(slurm_env)
        slurm_cluster.restore_state(slurm_env, older)
    finally:
        slurm_cluster.start_controller(slurm_env)
        node("resume")  # as it was saved, maybe: drained
    idle = lambda: all("held" in reason for _, _, reason in still_queued())  # noqa: E731
    wait_for(idle, timeout=120, what="Slurm has nothing left to start")
    node("resume")  # slurmd refusing duplicates drains it ("Duplicate jobid")
    starts = Counter(e["task"] for e in make_job.events() if e["event"] == "start")
    assert starts == {f"shard-{i}": 1 for i in range(4)}, f"each shard's command ran once: {starts}"
    for out in (make_job.run_dir / "outputs").glob("out_*.csv"):
        assert out.stat().st_mtime_ns == read_manifest(out)["mtime_ns"], f"{out} rewritten after its manifest"
    assert not still_queued(), "no job of the run is left requeued (and held) to run again"
    if restarted == "controller and node":
        logs = [log.read_text() for log in (make_job.run_dir / "logs").glob("shard-*.attempt1.log")]
        assert all("Slurm started it again" in log and "not running it twice" in log for log in logs), logs


def still_queued() -> list[tuple[str, str, str]]:
    """Every job Slurm lists now: id, state, reason."""
    out = subprocess.run(["squeue", "-h", "-o", "%i|%T|%r"], capture_output=True, text=True, check=True).stdout
    return [tuple(line.split("|", 2)) for line in out.splitlines()]


def saved_since(path: Path, t: float) -> bool:
    try:
        return path.stat().st_mtime > t
    except OSError:  # between the controller's rename and link
        return False


# How long past stop_grace_s a SIGTERM waits for Slurm's jobs (20 s unless set): here long enough for their
# stand-ins to hear that the controller does not answer, their Slurm commands giving up on it after 2 s
# (MessageTimeout=4, a client's own setting; 9 s by default), and for the run to say so.
TERM_MARGIN_S = 6


@pytest.mark.parametrize("how", ["Ctrl-C twice", "SIGTERM"])
def test_a_stop_while_the_controller_is_gone_says_what_it_waits_for_and_leaves(
    slurm_env, make_job, reaper, tmp_path, how, monkeypatch
):
    """Two shards wait in Slurm behind one that holds the node's four GPUs when slurmctld dies and gputui
    is stopped: nothing can cancel them, so it says what it waits for, and leaves them: at a second Ctrl-C,
    or, stopped by a SIGTERM (systemd, timeout, a batch script: nobody to press Ctrl-C again), on its own
    stop_grace_s + a margin later (GPUTUI_SLURM_TERM_MARGIN_S: 20 s, shortened here). The waiting jobs never
    run their commands (their runner finds the stop asked), and the next run finds them and runs the shards
    again."""
    client = tmp_path / "slurm.conf"  # what the run's Slurm commands read (the daemons keep theirs)
    client.write_text(Path(slurm_env["SLURM_CONF"]).read_text() + "\nMessageTimeout=4\n")
    monkeypatch.setenv("SLURM_CONF", str(client))
    monkeypatch.setenv("GPUTUI_SLURM_TERM_MARGIN_S", str(TERM_MARGIN_S))
    job = make_job(extra=ON_SLURM, ids=6, num_workers=3, gpus_per_worker=4, max_parallel=3, sleep=10)
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "run.log")
    reaper.append(sched)
    log = tmp_path / "run.log"
    try:
        wait_for(lambda: make_job.running() and len(list((make_job.run_dir / "slurm").glob("*.job"))) == 3,
                 timeout=60, what="one shard running, two queued")  # fmt: skip
        (running,) = make_job.running()
        queued = sorted({f"shard-{i}" for i in range(3)} - {running})
        # A controller that came back from state saved before the shard started would start it again, and
        # slurmd, refusing the duplicate, would drain the node.
        since = slurm.started(make_job.run_dir, running, 1)["since"]
        state = Path(slurm_env["SLURM_CONF"]).parent / "state" / "job_state"
        wait_for(lambda: saved_since(state, since), timeout=30, what="the controller's state saved since")
        slurm_cluster.kill_controller(slurm_env)
        said = "waiting for the Slurm controller to cancel 2 job(s) (it does not answer); "
        if how == "Ctrl-C twice":
            sched.send_signal(signal.SIGINT)
            said += "Ctrl-C again to leave them"
            wait_for(lambda: said in log.read_text(), timeout=90, what="what it waits for")
            sched.send_signal(signal.SIGINT)
            assert sched.wait(30) == 130
            assert "left 2 Slurm job(s) to their stand-ins" in log.read_text()
        else:
            sched.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            assert sched.wait(90) == 130
            bound = 2 + TERM_MARGIN_S  # stop_grace_s + the margin
            assert time.monotonic() - sent < bound + 10, "it leaves the jobs stop_grace_s + margin after a SIGTERM"
            assert said + f"left to their stand-ins {bound}s after the SIGTERM" in log.read_text()
            assert f"SIGTERM: waited {bound}s; left 2 Slurm job(s) to their stand-ins" in log.read_text()
        stopping = r"stopping [23] Slurm job\(s\): running ones get SIGTERM on their node, then SIGKILL after 2s; "
        assert re.search(stopping + "queued ones are cancelled", log.read_text()), log.read_text()
    finally:
        slurm_cluster.start_controller(slurm_env)
    # Only the first run's shard had to outlive the outage: the next run's, the same shards, need not take 10 s.
    job.write_text(job.read_text().replace("--sleep 10 ", "--sleep 0.2 "))
    r = gputui("run", "--jobs", job, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    starts = [(e["task"], e["attempt"]) for e in make_job.events() if e["event"] == "start"]
    assert len(starts) == len(set(starts)), f"no attempt ran twice: {starts}"
    assert not [s for s in starts if s[0] in queued and s[1] == 1], f"the left jobs never ran: {starts}"
    assert merged_ids(make_job.run_dir) == Counter({i: 2 for i in range(6)})


def test_a_ctrl_c_after_the_apps_stop_is_a_first_one_not_a_second(slurm_env, make_job, reaper, tmp_path):
    """The app's stop (a control posted to the scheduler), then one Ctrl-C: the run still waits for its job
    to end (its worker takes 6 s over SIGTERM) and does not leave it, as after a first Ctrl-C."""
    job = make_job(extra=ON_SLURM, ids=2, num_workers=1, gpus_per_worker=1, sleep=120, stop_grace_s=30,
                   worker_args="--term-delay 6")  # fmt: skip
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "run.log")
    reaper.append(sched)
    log = tmp_path / "run.log"
    wait_for(lambda: make_job.running().get("shard-0"), timeout=60, what="shard-0 running on Slurm")
    paths, store = open_existing(make_job.run_dir)
    try:
        ok, said = control.request(paths, store, "stop", None, lambda: control.Controller(paths, store))
    finally:
        store.close()
    assert ok, said
    stopping = "stopping 1 Slurm job(s): running ones get SIGTERM on their node, then SIGKILL after 30s"
    wait_for(lambda: stopping in log.read_text(), timeout=30, what="the stop under way")
    sched.send_signal(signal.SIGINT)
    assert sched.wait(60) == 130
    assert "left" not in log.read_text(), log.read_text()
    assert not [j for j in squeue() if j["comment"].startswith("gputui:")], "its job ended before the run did"


def test_a_stopping_stand_in_asks_squeue_once_soon_then_at_its_usual_pace(slurm_env, tmp_path):
    """A stand-in told to stop a job that goes on (here its runner is not gputui's, so the TERM is not acted
    on) asks squeue once a second later, then every SQUEUE_S or so: not every second until the job ends,
    as hundreds of stand-ins stopping together would."""
    scheduler_id = "pace-test"
    job = subprocess.run(["sbatch", "--parsable", f"--comment={slurm.comment(scheduler_id)}",
                          f"--output={tmp_path}/job.out", "--wrap=sleep 300"],
                         capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    try:
        wait_for(lambda: slurm.job_state(job).state == "RUNNING", timeout=30, what="the job running")
        slurm.folder(tmp_path).mkdir()
        slurm.attempt_file(tmp_path, "shard-0", 1, "started").write_text(json.dumps({"job": job}))
        calls = tmp_path / "squeue-calls"
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "squeue").write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {shutil.which("squeue")} "$@"\n')
        (bin_dir / "squeue").chmod(0o755)
        asked = lambda: len(calls.read_text().splitlines()) if calls.exists() else 0  # noqa: E731
        argv = slurm_task.command(tmp_path, "shard-0", 1, 60.0, scheduler_id, job)
        with open(tmp_path / "standin.log", "wb") as out:
            standin = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                       env=os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}"})  # fmt: skip
        try:
            wait_for(lambda: asked() == 1, timeout=10, what="its first question, a second after it starts")
            standin.send_signal(signal.SIGTERM)
            time.sleep(6)
            assert asked() - 1 == 1, calls.read_text()  # a second after the stop; the next one 8 to 12 s later
            assert slurm.attempt_file(tmp_path, "shard-0", 1, "signals").read_text() == "TERM\n"
        finally:
            standin.kill()
            standin.wait(10)
    finally:
        subprocess.run(["scancel", job], check=True)


def test_max_parallel_raised_on_a_live_run_throttles_the_arrays_submitted_after_it(slurm_env, make_job, tmp_path):
    """`gputui set max_parallel=3` while a run goes: the next array is submitted with `%3`, not the `%1` the
    run started with (which would let Slurm run one of its elements at a time)."""
    job = make_job(ids=6, num_workers=6, max_parallel=1, sleep=30, extra=ON_SLURM)
    sched = gputui_bg("run", "--jobs", job, log=tmp_path / "run.log")
    try:
        wait_for(lambda: len(make_job.running()) == 1, timeout=60, what="the first worker")
        r = gputui("set", "--run-dir", make_job.run_dir, "max_parallel=3")
        assert r.returncode == 0, r.stdout + r.stderr
        # Before the first worker ends (30 s): a `%1` array would start its second element only then.
        wait_for(lambda: len(make_job.running()) == 3, timeout=20, what="three workers at once")
    finally:
        gputui("kill", "--run-dir", make_job.run_dir, "--all")
        sched.send_signal(signal.SIGINT)
        sched.wait(60)
