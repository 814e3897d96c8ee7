"""Fixtures that build real job files, inputs and run directories, and run the real CLI."""

from __future__ import annotations

import contextlib
import csv
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from gputui.executors import cgroup as cgroups
from tests import ray_cluster, slurm_cluster

WORKER = Path(__file__).parent / "workers" / "shard_worker.py"


class JobFactory:
    def __init__(self, tmp_path: Path):
        self.root = tmp_path
        self.record = tmp_path / "invocations.jsonl"

    def __call__(
        self,
        *,
        ids: int = 40,
        num_workers: int = 4,
        gpus_per_worker: int = 0,
        max_parallel: int = 2,
        sleep: float = 0.0,
        worker_args: str = "",
        max_attempts: int = 3,
        backoff_s: float = 0.05,
        merged: bool = True,
        extra: str = "",
        stop_grace_s: float = 2.0,
        rows_per_id: int = 2,
    ) -> Path:
        data = self.root / "data.csv"
        with open(data, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["data_id", "value"])
            for i in range(ids):
                for r in range(rows_per_id):
                    w.writerow([i, f"row{i}-{r}"])
        command = (
            f"{sys.executable} {WORKER} --input {{input}} --output {{output_dir}} --low {{low}} "
            f"--high {{high}} --record {self.record} --sleep {sleep} {worker_args}"
        )
        merged_line = 'merged = "merged.csv"' if merged else ""
        job = self.root / "job.toml"
        job.write_text(f"""
[job]
name = "test"
command = "{command}"
stop_grace_s = {stop_grace_s}
{extra}
[shards]
input = "data.csv"
num_workers = {num_workers}
[resources]
gpus_per_worker = {gpus_per_worker}
max_parallel = {max_parallel}
[retry]
max_attempts = {max_attempts}
backoff_s = {backoff_s}
[outputs]
pattern = "out_{{low}}_{{high}}.csv"
{merged_line}
""")
        return job

    @property
    def run_dir(self) -> Path:
        return self.root / "runs" / "test"

    def running(self) -> dict[str, int]:
        """Task id -> pid of its worker that started and has not finished, from the invocation record."""
        started = {e["task"]: e["pid"] for e in self.events() if e["event"] == "start"}
        finished = {e["task"] for e in self.events() if e["event"] == "finish"}
        return {t: p for t, p in started.items() if t not in finished}

    def events(self) -> list[dict]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines() if line.strip()]


def keeper_of(sched) -> psutil.Process:
    """The keeper a background `gputui run` started (its child running gputui.executors.keeper)."""

    def find():
        for child in psutil.Process(sched.pid).children():
            if "gputui.executors.keeper" in " ".join(child.cmdline()):
                return child
        return None

    return wait_for(find, what="the keeper")


def proc_state(pid: int) -> str:
    try:
        return psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return "gone"


def gone(pid: int) -> bool:
    return proc_state(pid) in ("gone", psutil.STATUS_ZOMBIE)


@pytest.fixture
def make_job(tmp_path) -> JobFactory:
    return JobFactory(tmp_path)


def gputui(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gputui", *map(str, args)], capture_output=True, text=True, timeout=timeout, **kw
    )


def gputui_bg(*args: str, log: Path) -> subprocess.Popen:
    out = open(log, "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "gputui", *map(str, args)], stdout=out, stderr=subprocess.STDOUT
    )


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def small_disk(tmp_path):
    """`small_disk(mb)`: a tmpfs of that size to fill up (unmounted afterwards); skips where none mounts."""
    mounted: list[Path] = []

    def mount(mb: int) -> Path:
        mnt = tmp_path / f"disk{len(mounted)}"
        mnt.mkdir()
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={mb}m", "tmpfs", str(mnt)], capture_output=True, text=True
        )
        if r.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here to fill up: {r.stderr.strip()}")
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.fixture
def reaper():
    """Processes a test starts (decoys, schedulers) are killed at the end with their children."""
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        try:
            tree = psutil.Process(p.pid).children(recursive=True)
        except psutil.Error:
            tree = []
        for proc in [*tree, p]:
            try:
                proc.kill()
            except (psutil.Error, ProcessLookupError, OSError):
                pass
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture(autouse=True)
def _private_gpu_reservations(tmp_path, monkeypatch):
    """Each test's runs reserve GPUs among themselves, never against a real run on this machine."""
    monkeypatch.setenv("GPUTUI_LOCK_DIR", str(tmp_path / "gpu-locks"))


@pytest.fixture(autouse=True)
def _private_run_registry(tmp_path, monkeypatch):
    """Each test's runs are recorded for `gputui ls` among themselves, never in the user's own list."""
    monkeypatch.setenv("GPUTUI_REGISTRY_DIR", str(tmp_path / "registry"))


@pytest.fixture(autouse=True)
def _no_leaked_workers(tmp_path):
    """Kill anything started for this test's runs (workers, keepers, background schedulers), so one
    failing test cannot leak processes into the next."""
    yield
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if str(tmp_path) in p.environ().get("GPUTUI_RUN_DIR", "") or str(tmp_path) in " ".join(
                p.info["cmdline"] or []
            ):
                p.kill()
        except (psutil.Error, OSError):
            pass


_cgroups_before_the_suite: set[Path] = set()


def pytest_sessionstart(session) -> None:
    if not hasattr(session.config, "workerinput"):  # the controlling process, with or without xdist
        _cgroups_before_the_suite.update(_run_cgroups())


def pytest_sessionfinish(session) -> None:
    """Remove the run cgroups the suite's killed trees left (a waiter SIGKILLed removes nothing), so a machine
    running it keeps none. Once, at the end: while tests run in parallel, another test's live run has its own."""
    if not hasattr(session.config, "workerinput"):
        for folder in _run_cgroups() - _cgroups_before_the_suite:
            cgroups.remove(str(folder), wait=1.0)  # emptied once its killed processes are gone; else left


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items) -> None:
    """Under xdist (`-n`), tests that share something run in one worker, one after another: those of one
    cluster (which it then starts once; a Ray driver started beside another head would join it), and the
    snapshots (their run lives at one fixed path, which the pictures show)."""
    for item in items:
        backend = getattr(item, "callspec", None) and item.callspec.params.get("backend")  # the contract suite's
        for group in ("ray", "slurm", "snapshots"):
            if backend == group or item.path.name.startswith(f"test_{group}"):
                item.add_marker(pytest.mark.xdist_group(group))


def _run_cgroups() -> set[Path]:
    """The run cgroup folders (`gputui-<scheduler id>`) beside this process's cgroup, where its runs make them."""
    base = cgroups.of("self")
    return set(Path(base).glob(cgroups.run_root_name("*"))) if base else set()


# -- clusters shared by the whole session ----------------------------------------------------------------------
# Each is started on first use and stopped when the session ends: the contract suite (tests/contract/), the Ray
# tests and the Slurm tests share one of each. A test that needs a cluster of its own (a private one its run
# starts and stops, two nodes, a controller it kills) starts its own.
@pytest.fixture(scope="session")
def shared_ray_head() -> Iterator[str]:
    """A Ray head with 4 fake GPUs on loopback; its address. Its clients (gputui's bridges, a test's own
    drivers) need RAY_ENV in their environment: run them inside `ray_cluster.environment()`."""
    with contextlib.ExitStack() as stack:
        with ray_cluster.environment():
            address = stack.enter_context(ray_cluster.ray_head(gpus=4))
        yield address


@pytest.fixture(scope="session")
def shared_slurm() -> Iterator[dict[str, str]]:
    """A single-node Slurm with 4 fake GPUs (slurm_cluster.py); the environment its clients need: set it with
    `slurm_cluster.environment()` where gputui or a test talks to it."""
    with slurm_cluster.slurm_node(gpus=4) as env:
        yield env


@pytest.fixture(autouse=True)
def _no_box_policy(tmp_path, monkeypatch):
    """Each test's runs follow no GPU box policy (a test writes one where it wants one), whatever
    /etc/gputui/policy.toml this machine has."""
    monkeypatch.setenv("GPUTUI_POLICY", str(tmp_path / "box-policy.toml"))


# -- a fake NVIDIA driver (tests/fake_nvml/): pynvml, and so gputui, talks to it as to libnvidia-ml ---------------
FAKE_NVML_SOURCE = Path(__file__).parent / "fake_nvml"


class FakeNvml:
    """The built fake library and one test's spec (tests/fake_nvml/fake_nvml.c says what a spec holds). The
    test's environment names both, so every gputui it starts (and pynvml in this process, once `load_here`)
    reads this spec as its GPUs; `write` changes them while it runs."""

    def __init__(self, lib_dir: Path, spec: Path) -> None:
        self.lib_dir, self.spec = lib_dir, spec

    @property
    def env(self) -> dict[str, str]:
        import os

        ld = os.environ.get("LD_LIBRARY_PATH", "")
        path = f"{self.lib_dir}:{ld}" if ld else str(self.lib_dir)
        return {"LD_LIBRARY_PATH": path, "FAKE_NVML_SPEC": str(self.spec)}

    def write(self, spec: dict) -> None:
        """Replace the spec atomically (the library re-reads it when it changes: a reader never sees half)."""
        import os

        tmp = self.spec.with_suffix(".tmp")
        tmp.write_text(json.dumps(spec))
        os.replace(tmp, self.spec)

    def load_here(self) -> None:
        """Load the fake into this process, so pynvml's CDLL("libnvidia-ml.so.1") finds it by its soname
        (LD_LIBRARY_PATH is read once, when a process starts)."""
        import ctypes

        self.here = ctypes.CDLL(str(self.lib_dir / "libnvidia-ml.so.1"), mode=ctypes.RTLD_GLOBAL)

    here = None

    def unload_here(self) -> None:
        """The library cannot leave this process once loaded: shut it down to its last init, so a later test's
        nvmlInit reads the environment again (no FAKE_NVML_SPEC: 'driver not loaded', as on a machine without
        a GPU) instead of this test's spec."""
        if self.here is not None:
            while self.here.nvmlShutdown() == 0:
                pass


@pytest.fixture(scope="session")
def fake_nvml_lib(tmp_path_factory) -> Path:
    """The fake libnvidia-ml.so.1, built once per session: the folder holding it. Without a C compiler the
    tests using it fail where CI is set (CI installs gcc: .ci/run), and are skipped elsewhere."""
    import os
    import shutil

    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        message = f"the fake NVML library needs a C compiler ({cc!r} not found): install gcc"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    out = tmp_path_factory.mktemp("fake_nvml")
    r = subprocess.run(
        ["sh", str(FAKE_NVML_SOURCE / "build.sh"), str(out)], capture_output=True, text=True, timeout=120
    )
    if r.returncode != 0:
        pytest.fail(f"building the fake NVML library failed:\n{r.stdout}{r.stderr}")
    return out


@pytest.fixture
def fake_nvml(fake_nvml_lib, tmp_path, monkeypatch) -> Iterator[FakeNvml]:
    """This test's fake GPUs: `fake_nvml.write(spec)` first. The environment (inherited by every gputui the
    test starts) names the fake library and the spec."""
    fake = FakeNvml(fake_nvml_lib, tmp_path / "nvml-spec.json")
    for key, value in fake.env.items():
        monkeypatch.setenv(key, value)
    yield fake
    fake.unload_here()
