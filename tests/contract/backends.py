"""The executors the contract suite runs against, each seen as a user sees it: the `[executor]` table a job
file adds, the arguments `gputui run` needs, what gputui says about it, how to start a look-alike that is not
ours, and what only this backend shows of the same runs (checked on the suite's own runs, so that no run is
paid for twice). Every backend runs its attempts on this machine, so the tests see their processes as a
user on the node would, through the invocation record the test worker writes."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import psutil

from tests import ray_cluster
from tests.conftest import gputui, gputui_bg, wait_for


class Backend:
    """What the suite needs of an executor; each subclass fills in its own."""

    name: str
    executor: str  # the `[executor]` table a job file ends with
    run_args: tuple[str, ...] = ()  # what `gputui run` needs besides the job file
    says_gpus: str  # in `gputui run`'s first lines: the GPUs it found
    says_paused: str  # in `gputui pause`'s answer
    refuses_too_many_gpus: tuple[str, ...]  # in `gputui run`'s refusal of gpus_per_worker = 5 (each node has 4)

    def job(self, make_job, **kw) -> Path:
        return make_job(extra=self.executor, **kw)

    def add_to(self, job: Path) -> Path:
        job.write_text(job.read_text() + self.executor)
        return job

    def run(self, job: Path, *args, timeout: float = 180, **kw) -> subprocess.CompletedProcess:
        return gputui("run", "--jobs", job, *self.run_args, *args, timeout=timeout, **kw)

    def run_bg(self, job: Path, *args, log: Path) -> subprocess.Popen:
        return gputui_bg("run", "--jobs", job, *self.run_args, *args, log=log)

    def foreign_twin(self, argv: list[str], tmp_path: Path, reaper: list) -> Foreign:
        """`argv` started outside gputui, as someone else using this backend would start it."""
        raise NotImplementedError

    def unreachable(self, job: Path, tmp_path: Path) -> tuple[dict[str, str], str]:
        """For a backend reached over the network: `job` (or the environment) pointed where nothing answers;
        (environment for `gputui run`, what it must say)."""
        raise NotImplementedError

    # What only this backend shows of the suite's runs (nothing, unless a subclass says so).
    def check_shard_run(self, run_dir: Path, said: str, starts: list[dict]) -> None:
        """After a shard job ran: `said` is what `gputui run` printed, `starts` the workers' start records."""

    def check_sweep_and_pipeline(self, sweep_dir: Path, pipeline_said: str) -> None:
        """After a sweep and a pipeline ran."""

    def check_paused(self, run_dir: Path, task: str, paused: bool) -> None:
        """After a pause (or resume) of a running task: the backend's own record of the attempt agrees."""

    def check_nothing_left(self, run_dir: Path) -> None:
        """After a kill of every task: the backend holds nothing more of the run."""


class LocalBackend(Backend):
    """This machine: the local executor, on four simulated GPUs."""

    name = "local"
    executor = ""
    run_args = ("--simulate", "4x24")
    says_gpus = "GPUs: SIMULATED (4 x 24 GB)"
    says_paused = "its GPU memory stays allocated"
    refuses_too_many_gpus = ("gpus_per_worker = 5, but only 4 GPU(s) exist here",)

    def foreign_twin(self, argv: list[str], tmp_path: Path, reaper: list) -> Foreign:
        """Another user's processes: untagged, and tagged as another run's attempt."""
        return Foreign([look_alike(argv, None, reaper), look_alike(argv, another_runs_tags(), reaper)])

    def check_shard_run(self, run_dir: Path, said: str, starts: list[dict]) -> None:
        """Each launch line names the GPU its worker got."""
        for e in starts:
            launch = next(line for line in said.splitlines() if line.startswith(f"gputui: launch {e['task']} "))
            assert f" attempt 1/3 on GPU {e['gpus']}: " in launch, (launch, e)


class Foreign:
    """A look-alike that is not ours: its processes, and whatever else shows it is left alone."""

    def __init__(self, procs: list[subprocess.Popen]):
        self.procs = procs

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def check_untouched(self) -> None:
        for p in self.procs:
            assert p.poll() is None, "a look-alike was ended"

    def stop(self) -> None:
        pass  # the reaper ends its processes


def look_alike(argv: list[str], tags: dict | None, reaper: list) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUTUI_")} | (tags or {})
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    reaper.append(proc)
    return proc


def another_runs_tags() -> dict[str, str]:
    return {"GPUTUI_SCHEDULER_ID": str(uuid.uuid4()), "GPUTUI_TASK_ID": "shard-0", "GPUTUI_ATTEMPT": "1"}


# -- Ray -------------------------------------------------------------------------------------------
FOREIGN_RAY_DRIVER = """
import os, subprocess, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False)

@ray.remote(num_gpus=1)
def same_command(pid_file, argv):
    p = subprocess.Popen(argv)
    with open(pid_file, "w") as f:
        f.write(str(p.pid))
    return p.wait()

print(ray.get(same_command.remote(sys.argv[2], sys.argv[3:])), flush=True)
"""


class RayBackend(Backend):
    """A Ray head of its own on 127.0.0.1 with four declared GPUs."""

    name = "ray"
    says_paused = "paused on Ray (its processes on the node are stopped; GPU memory stays allocated)"
    refuses_too_many_gpus = ("gpus_per_worker = 5, but no node of the Ray cluster", "the largest has 4")

    def __init__(self, address: str):
        self.address = address
        self.executor = f'\n[executor]\nkind = "ray"\naddress = "{address}"\n'
        self.says_gpus = f"the Ray cluster at '{address}' (4 GPU(s), 1 node(s))"

    def unreachable(self, job: Path, tmp_path: Path) -> tuple[dict[str, str], str]:
        """The job file pointed at a port nothing listens on: (environment, what gputui must say)."""
        port = ray_cluster.free_port()
        job.write_text(job.read_text().replace(self.address, f"127.0.0.1:{port}"))
        return {}, f"{job}: [executor]: cannot reach the Ray cluster at '127.0.0.1:{port}'"

    def foreign_twin(self, argv: list[str], tmp_path: Path, reaper: list) -> Foreign:
        """The same command as a Ray task of another driver, holding one of the cluster's GPUs."""
        (tmp_path / "foreign.py").write_text(FOREIGN_RAY_DRIVER)
        pid_file = tmp_path / "foreign.pid"
        driver = subprocess.Popen([sys.executable, tmp_path / "foreign.py", self.address, pid_file, *argv],
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
        reaper.append(driver)
        return ForeignRayTask(driver, pid_file)

    def check_shard_run(self, run_dir: Path, said: str, starts: list[dict]) -> None:
        """Each attempt's log says which node ran it; the app looking at the ended run says why it shows no
        GPUs (the run's bridge has left), instead of probing this machine's."""
        from gputui.tui.refresh import Gatherer  # the app's view: an internal, as the Ray tests use it
        from gputui.views.runview import RunView

        for e in starts:
            assert "gputui: on Ray node" in (run_dir / "logs" / f"{e['task']}.attempt1.log").read_text()
        gatherer = Gatherer(RunView(run_dir), None, None)
        left = lambda: "bridge has left" in ((r := gatherer.gather()).gpu_error or "") and r  # noqa: E731
        shown = wait_for(left, what="the app saying the bridge has left")
        assert shown.gpus == [] and "no GPUs to show" in shown.gpu_error


class ForeignRayTask(Foreign):
    def __init__(self, driver: subprocess.Popen, pid_file: Path):
        super().__init__([driver])
        self.pid_file = pid_file

    def pids(self) -> list[int]:
        return [int(wait_for(lambda: self.pid_file.exists() and self.pid_file.read_text(), timeout=90,
                             what="the foreign Ray task's pid"))]  # fmt: skip

    def check_untouched(self) -> None:
        assert self.procs[0].poll() is None, "the foreign driver's task must be left alone"


# -- Slurm -----------------------------------------------------------------------------------------
class SlurmBackend(Backend):
    """A single-node Slurm of its own (munged, slurmctld, slurmd) with four fake GPUs."""

    name = "slurm"
    executor = '\n[executor]\nkind = "slurm"\npartition = "gpu"\nextra_args = ["--time=00:30:00"]\n'
    says_gpus = "GPUs: Slurm partition 'gpu' (4 GPU(s), 1 node(s))"
    says_paused = "paused on the slurm cluster (its log says how: suspended, held or stopped)"
    refuses_too_many_gpus = ("gpus_per_worker = 5, but no node of Slurm partition 'gpu' has that many",)

    def __init__(self, env: dict[str, str]):
        self.env = env

    def unreachable(self, job: Path, tmp_path: Path) -> tuple[dict[str, str], str]:
        """A configuration naming a controller port nothing listens on: (environment, what gputui must say)."""
        conf = Path(self.env["SLURM_CONF"]).read_text()
        dead = tmp_path / "slurm.conf"
        port = ray_cluster.free_port()
        dead.write_text("\n".join(f"SlurmctldPort={port}" if line.startswith("SlurmctldPort=") else line
                                  for line in conf.splitlines()))  # fmt: skip
        return {"SLURM_CONF": str(dead)}, f"{job}: [executor]: cannot ask Slurm for partition 'gpu'"

    def foreign_twin(self, argv: list[str], tmp_path: Path, reaper: list) -> Foreign:
        """The same command as a Slurm job of someone else's, holding one of the node's GPUs."""
        job = subprocess.run(
            ["sbatch", "--parsable", "--gres=gpu:1", f"--output={tmp_path}/foreign.out",
             f"--wrap=exec {shlex.join(argv)}"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        return ForeignSlurmJob(job, argv)

    def check_shard_run(self, run_dir: Path, said: str, starts: list[dict]) -> None:
        """The shards went to Slurm as one job array; each attempt's log says which job and node ran it."""
        jobs = [job_of(run_dir, e["task"]) for e in sorted(starts, key=lambda e: int(e["task"].split("-")[1]))]
        array = jobs[0].split("_")[0]
        assert jobs == [f"{array}_{i}" for i in range(len(jobs))], "the shards were one job array"
        log = (run_dir / "logs" / "shard-0.attempt1.log").read_text()
        assert f"submitted to Slurm as job {array}_0" in log and "gputui: on Slurm node" in log

    def check_sweep_and_pipeline(self, sweep_dir: Path, pipeline_said: str) -> None:
        """A job per trial, not an array; every step submitted at once, the later ones waiting in Slurm on
        afterok, not in gputui."""
        trial_jobs = [p.read_text() for p in (sweep_dir / "slurm").glob("*.attempt1.job")]
        assert trial_jobs and all("_" not in j for j in trial_jobs), trial_jobs
        assert len(set(trial_jobs)) == len(trial_jobs), "a job per trial"
        assert pipeline_said.index("launch eval") < pipeline_said.index("done prep"), pipeline_said

    def check_paused(self, run_dir: Path, task: str, paused: bool) -> None:
        """Slurm suspended the job, or runs it again."""
        want = "SUSPENDED" if paused else "RUNNING"
        wait_for(lambda: job_state(job_of(run_dir, task)) == want, timeout=20, what=f"the Slurm job {want}")

    def check_nothing_left(self, run_dir: Path) -> None:
        """No job of the run is left in Slurm's queue."""
        ours = {p.read_text() for p in (run_dir / "slurm").glob("*.job")}
        wait_for(lambda: not ours & {j for j, _ in squeue()}, timeout=60, what="the run's Slurm jobs gone")


class ForeignSlurmJob(Foreign):
    def __init__(self, job: str, argv: list[str]):
        super().__init__([])
        self.job, self.argv = job, argv

    def pids(self) -> list[int]:
        def found() -> list[int]:
            return [p.pid for p in psutil.process_iter(["cmdline"])
                    if p.info["cmdline"] == self.argv and _slurm_job_of(p) == self.job]  # fmt: skip

        return wait_for(found, timeout=60, what="the foreign Slurm job's command running")

    def check_untouched(self) -> None:
        assert squeue() == [(self.job, "RUNNING")], "the foreign Slurm job must be left alone"

    def stop(self) -> None:
        subprocess.run(["scancel", self.job], check=True)


def _slurm_job_of(p: psutil.Process) -> str | None:
    try:
        return p.environ().get("SLURM_JOB_ID")
    except (psutil.Error, OSError):
        return None


def job_of(run_dir: Path, task: str, attempt: int = 1) -> str:
    """The Slurm job of an attempt, as written in the run directory when it was submitted."""
    return (run_dir / "slurm" / f"{task}.attempt{attempt}.job").read_text()


def squeue() -> list[tuple[str, str]]:
    """Every job Slurm lists now: (id, state)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i|%T"], capture_output=True, text=True, check=True).stdout
    return [tuple(line.split("|", 1)) for line in out.splitlines()]


def job_state(job: str) -> str | None:
    return dict(squeue()).get(job)
