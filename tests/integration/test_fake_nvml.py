"""gputui against a fake NVIDIA driver: tests/fake_nvml/ builds a libnvidia-ml.so.1 that answers pynvml's ctypes
calls from a JSON spec, so `gputui gpus`, the monitor and a run's GPU accounting go through pynvml and NVML's C
interface (structs, the two-call process list, error codes) exactly as on a GPU machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import WORKER, gputui, gputui_bg, wait_for

pytestmark = pytest.mark.fake_nvml

MIB = 2**20
GIB = 2**30
GATED = Path(__file__).parents[1] / "fake_nvml" / "gated.py"


def h100(**kw) -> dict:
    return {
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": "GPU-6f1b2c3d-0000-1111-2222-333344445555",
        "memory_total_mib": 81920,
        "memory_used_mib": 1024,
        "utilization_gpu": 37,
        "utilization_memory": 20,
        "temperature_c": 51,
        "power_w": 210.5,
        "power_limit_w": 700,
        "energy_mj": 123456789,
        "processes": [],
    } | kw


def gpus_json() -> dict:
    r = gputui("gpus", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def test_gpus_json_reads_every_value_from_the_driver(fake_nvml):
    other = h100(
        name="NVIDIA A100-SXM4-40GB",
        uuid="GPU-a100",
        memory_total_mib=40960,
        memory_used_mib=0,
        utilization_gpu=0,
        temperature_c=33,
        power_w=55,
        power_limit_w=400,
        energy_mj=42,
        processes=[{"pid": 4242, "used_memory_mib": 512, "sm_util": 3}],
    )
    fake_nvml.write({"driver_version": "550.54.15", "cuda_driver_version": 12040, "devices": [h100(), other]})

    out = gpus_json()
    assert out["backend"] == "NVML" and out["simulated"] is False
    assert (out["driver_version"], out["cuda_driver_version"]) == ("550.54.15", "12.4")
    a, b = out["gpus"]
    assert (a["index"], a["name"], a["uuid"]) == (
        0,
        "NVIDIA H100 80GB HBM3",
        "GPU-6f1b2c3d-0000-1111-2222-333344445555",
    )
    assert (a["memory_total"], a["memory_used"], a["memory_free"]) == (80 * GIB, GIB, 79 * GIB)
    assert (a["utilization"], a["temperature"], a["power"], a["power_limit"]) == (37, 51, 210.5, 700)
    assert a["energy_mj"] == 123456789 and a["processes"] == [] and a["simulated"] is False
    assert (b["name"], b["uuid"], b["memory_total"], b["memory_used"]) == (
        "NVIDIA A100-SXM4-40GB",
        "GPU-a100",
        40 * GIB,
        0,
    )
    assert (b["utilization"], b["temperature"], b["power"], b["power_limit"], b["energy_mj"]) == (
        0,
        33,
        55,
        400,
        42,
    )
    assert b["processes"] == [{"pid": 4242, "used_memory": 512 * MIB}]

    table = gputui("gpus").stdout
    assert "GPUs: NVML · driver 550.54.15, CUDA 12.4" in table and "SIMULATED" not in table
    assert "1.0 / 80.0" in table and "37%" in table and "51°C" in table and "210 / 700 W" in table


def gated_job(make_job, tmp_path, **kw) -> tuple[Path, Path, Path]:
    """A job of GPU tasks whose workers wait at a gate once started: (job file, pids file, gate)."""
    pids, gate = tmp_path / "pids.txt", tmp_path / "gate"
    job = make_job(gpus_per_worker=1, **kw)
    front = f"{sys.executable} {GATED} {pids} {gate} {sys.executable} {WORKER}"
    job.write_text(job.read_text().replace(f"{sys.executable} {WORKER}", front))
    return job, pids, gate


def started(pids: Path, n: int) -> dict[str, tuple[int, int]] | None:
    """Task id -> (worker pid, its GPU's index), once `n` workers wait at the gate."""
    if not pids.exists():
        return None
    lines = [line.split() for line in pids.read_text().splitlines() if line.strip()]
    return {task: (int(pid), int(gpu)) for pid, task, gpu in lines} if len(lines) >= n else None


def status_json(run_dir: Path) -> dict:
    if not (run_dir / "state.db").exists():  # not started yet
        return {"tasks": []}
    r = gputui("status", "--run-dir", run_dir, "--json")
    assert r.returncode in (0, 1), r.stdout + r.stderr
    return json.loads(r.stdout)


def test_a_runs_accounting_records_the_memory_the_driver_gives_its_workers_pids(
    fake_nvml, make_job, tmp_path, reaper
):
    fake_nvml.write({"devices": [h100(), h100(uuid="GPU-second")]})
    job, pids, gate = gated_job(make_job, tmp_path, num_workers=2, max_parallel=2)
    log = tmp_path / "sched.log"
    sched = gputui_bg("run", "--jobs", job, log=log)
    reaper.append(sched)
    workers = wait_for(lambda: started(pids, 2), what="both workers at the gate")
    tasks = sorted(workers)
    memory = {tasks[0]: 3072, tasks[1]: 5120}
    devices = [h100(), h100(uuid="GPU-second")]
    assert sorted(gpu for _, gpu in workers.values()) == [0, 1]
    for t, (pid, gpu) in workers.items():  # each on its own GPU, as the run placed it
        devices[gpu]["processes"] = [{"pid": pid, "used_memory_mib": memory[t], "sm_util": 50}]
    devices[0]["processes"].append({"pid": 1, "used_memory_mib": 999})  # a stranger's: nobody's attempt
    fake_nvml.write({"devices": devices})
    wait_for(
        lambda: all(t["peak_memory"] for t in status_json(make_job.run_dir)["tasks"]),
        timeout=60,
        what="peak memory written while the tasks run",
    )
    gate.touch()
    assert sched.wait(120) == 0, log.read_text()
    status = status_json(make_job.run_dir)
    peaks = {t["id"]: t["peak_memory"] for t in status["tasks"]}
    assert status["gpus_simulated"] is False
    assert peaks == {t: memory[t] * MIB for t in tasks}


def test_a_gpu_lost_mid_run_is_said_and_its_task_ends_as_its_worker_does(fake_nvml, make_job, tmp_path, reaper):
    fake_nvml.write({"devices": [h100(), h100(uuid="GPU-second")]})
    job, pids, gate = gated_job(make_job, tmp_path, num_workers=2, max_parallel=2)
    log = tmp_path / "sched.log"
    sched = gputui_bg("run", "--jobs", job, log=log)
    reaper.append(sched)
    workers = wait_for(lambda: started(pids, 2), what="both workers at the gate")
    on_lost = next(t for t, (_, gpu) in workers.items() if gpu == 0)
    fake_nvml.write({"devices": [h100(lost=True), h100(uuid="GPU-second")]})
    said = wait_for(
        lambda: "GPU 0 (NVIDIA H100 80GB HBM3, GPU-6f1b2c3d" in log.read_text() and log.read_text(),
        what="the run saying GPU 0 is lost",
    )
    assert f"is lost: the driver cannot reach it (fallen off the bus?); running on it: {on_lost}" in said
    alerts = [json.loads(line) for line in (make_job.run_dir / "alerts.jsonl").read_text().splitlines()]
    (lost,) = [a for a in alerts if a["kind"] == "gpu_lost"]
    assert (lost["gpu"], lost["task_id"]) == (0, on_lost) and lost["log_path"]
    # A second run (or `gputui gpus`) still sees the GPU that answers, and the lost one as lost.
    gpus = gpus_json()["gpus"]
    assert [(g["uuid"], g["lost"]) for g in gpus] == [("", True), ("GPU-second", False)]
    assert "LOST" in gputui("gpus").stdout
    # Its worker did not fail (the fake's GPU loss kills nobody): the task is done, not failed for it.
    gate.touch()
    assert sched.wait(120) == 0, log.read_text()
    tasks = status_json(make_job.run_dir)["tasks"]
    assert [(t["status"], t["exit_code"]) for t in tasks] == [("done", 0), ("done", 0)]


def test_a_task_waits_rather_than_start_on_a_lost_gpu(fake_nvml, make_job, tmp_path, reaper):
    fake_nvml.write({"devices": [h100(lost=True)]})
    job, pids, gate = gated_job(make_job, tmp_path, num_workers=1, max_parallel=1)
    log = tmp_path / "sched.log"
    reaper.append(gputui_bg("run", "--jobs", job, log=log))
    reason = wait_for(
        lambda: [t["reason"] for t in status_json(make_job.run_dir)["tasks"] if "GPU" in (t["reason"] or "")],
        what="the task's reason for waiting for a GPU",
    )
    assert reason == ["needs 1 GPU, 0 free: GPU 0 lost (the driver cannot reach it)"]
    assert not pids.exists()  # never launched
    fake_nvml.write({"devices": [h100()]})  # back (a reset): the task starts on it
    wait_for(lambda: started(pids, 1), what="the worker launched once the GPU answers again")
    gate.touch()


def test_gpus_say_the_driver_the_fake_reports_and_simulated_gpus_say_they_have_none(fake_nvml):
    fake_nvml.write({"driver_version": "535.183.01", "cuda_driver_version": 12020, "devices": [h100()]})
    out = gpus_json()
    assert (out["driver_version"], out["cuda_driver_version"]) == ("535.183.01", "12.2")
    assert "driver 535.183.01, CUDA 12.2" in gputui("gpus").stdout

    r = gputui("gpus", "--json", "--simulate", "2x24")
    simulated = json.loads(r.stdout)
    assert simulated["simulated"] is True
    assert (simulated["driver_version"], simulated["cuda_driver_version"]) == (None, None)
    assert "driver: none (simulated)" in gputui("gpus", "--simulate", "2x24").stdout


def test_counters_the_driver_does_not_support_or_permit_read_as_unknown_not_zero(fake_nvml):
    quiet = h100(
        temperature_c="not_supported",
        power_w="no_permission",
        power_limit_w="not_supported",
        energy_mj="not_supported",
        utilization_gpu="not_supported",
        processes="no_permission",
    )
    fake_nvml.write({"devices": [quiet]})
    (g,) = gpus_json()["gpus"]
    assert (g["utilization"], g["temperature"], g["power"], g["power_limit"], g["energy_mj"]) == (None,) * 5
    assert g["memory_used"] == GIB and g["processes"] == [] and g["lost"] is False
    row = next(line for line in gputui("gpus").stdout.splitlines() if "H100" in line)
    assert row.split()[-4:] == ["N/A", "N/A", "N/A", "0"]  # Util, Temp, Power, Procs


def a100_in_mig_mode(**kw) -> dict:
    """An A100 in MIG mode with two 3g.40gb instances (MIG-1111 holding 4 GiB of process 4242's, MIG-2222 idle)."""
    slice_ = {"name": "NVIDIA A100-SXM4-80GB MIG 3g.40gb", "memory_total_mib": 40192}
    return (
        h100(
            name="NVIDIA A100-SXM4-80GB",
            uuid="GPU-a100-mig",
            utilization_gpu="not_supported",  # as on a MIG-enabled GPU
            utilization_memory="not_supported",
            mig={
                "current": 1,
                "pending": 1,
                "devices": [
                    slice_
                    | {
                        "uuid": "MIG-1111",
                        "memory_used_mib": 4096,
                        "processes": [{"pid": 4242, "used_memory_mib": 4096}],
                    },
                    slice_ | {"uuid": "MIG-2222"},
                ],
            },
        )
        | kw
    )


def test_a_mig_enabled_gpu_is_listed_as_its_mig_instances(fake_nvml):
    """A GPU in MIG mode is its MIG instances, each a GPU to gputui (own memory, processes, reservation) that a
    task is given by its UUID; a whole GPU after it keeps its NVML index for CUDA."""
    fake_nvml.write({"devices": [a100_in_mig_mode(), h100()]})
    gpus = gpus_json()["gpus"]
    assert [(g["index"], g["uuid"], g["mig_parent"], g["cuda_visible_devices"]) for g in gpus] == [
        (0, "MIG-1111", 0, "MIG-1111"),
        (1, "MIG-2222", 0, "MIG-2222"),
        (2, h100()["uuid"], None, "1"),
    ]
    first, second, whole = gpus
    assert (first["memory_total"], first["memory_used"], first["processes"]) == (
        40192 * MIB,
        4 * GIB,
        [{"pid": 4242, "used_memory": 4 * GIB}],
    )
    assert (second["memory_used"], second["processes"], second["utilization"]) == (0, [], None)
    assert whole["memory_total"] == 80 * GIB
    table = gputui("gpus").stdout
    assert "NVIDIA A100-SXM4-80GB MIG 3g.40gb (MIG of GPU 0)" in table
    assert "GPU 0 is in MIG mode: each MIG instance is listed, reserved and given to one task" in " ".join(
        table.split()
    )


def test_a_gpu_in_mig_mode_without_instances_is_listed_whole_and_full(fake_nvml):
    fake_nvml.write({"devices": [a100_in_mig_mode(mig={"current": 1, "devices": []})]})
    (g,) = gpus_json()["gpus"]
    assert g["name"] == "NVIDIA A100-SXM4-80GB (MIG mode, no MIG instance)" and g["mig_parent"] is None
    assert g["memory_free"] == 0  # nothing CUDA could run on: nothing is placed on it


def test_tasks_placed_on_mig_instances_see_their_uuids_and_hold_them(fake_nvml, make_job, tmp_path, reaper):
    idle = a100_in_mig_mode()
    idle["mig"]["devices"][0] |= {"memory_used_mib": 0, "processes": []}  # (a process gone: memory draining)
    fake_nvml.write({"devices": [idle]})
    job, pids, gate = gated_job(make_job, tmp_path, num_workers=2, max_parallel=2)
    log = tmp_path / "sched.log"
    sched = gputui_bg("run", "--jobs", job, log=log)
    reaper.append(sched)
    seen = wait_for(
        lambda: pids.exists() and len(pids.read_text().splitlines()) >= 2 and pids.read_text(), what="2"
    )
    visible = {line.split()[1]: line.split()[2] for line in seen.splitlines()}
    assert sorted(visible.values()) == ["MIG-1111", "MIG-2222"]  # each task on one instance, named as CUDA needs
    held = {g["uuid"]: (g["held_by"] or {}).get("task") for g in gpus_json()["gpus"]}
    assert held == {uuid: task for task, uuid in visible.items()}  # each instance reserved for its own task
    gate.touch()
    assert sched.wait(120) == 0, log.read_text()
    assert all(t["status"] == "done" for t in status_json(make_job.run_dir)["tasks"])


def test_a_task_needing_two_gpus_is_placed_on_whole_gpus_beside_a_gpu_in_mig_mode(
    fake_nvml, make_job, tmp_path, reaper
):
    fake_nvml.write({"devices": [a100_in_mig_mode(), h100(uuid="GPU-b"), h100(uuid="GPU-c")]})
    job, pids, gate = gated_job(make_job, tmp_path, num_workers=1, max_parallel=1)
    job.write_text(job.read_text().replace("gpus_per_worker = 1", "gpus_per_worker = 2"))
    log = tmp_path / "sched.log"
    sched = gputui_bg("run", "--jobs", job, log=log)
    reaper.append(sched)
    line = wait_for(lambda: pids.exists() and pids.read_text().strip(), what="the worker at the gate")
    assert line.split()[2] == "1,2"  # NVML's GPUs 1 and 2 (gputui's 2 and 3, after the two MIG instances)
    gate.touch()
    assert sched.wait(120) == 0, log.read_text()


def test_a_task_needing_two_gpus_is_refused_mig_instances(fake_nvml, make_job):
    fake_nvml.write({"devices": [a100_in_mig_mode()]})
    r = gputui("run", "--jobs", make_job(gpus_per_worker=2))
    assert r.returncode != 0
    assert "only 0 whole GPU(s) exist here" in r.stdout + r.stderr
    assert "cannot be given MIG instances (a CUDA process sees one at most)" in r.stdout + r.stderr


def test_pause_sees_the_cuda_process_of_a_task_on_a_mig_instance(fake_nvml, tmp_path, monkeypatch):
    """Whether a pause can free a task's GPU memory: its CUDA process is found on the MIG instance's own handle."""
    from gputui.gpus import checkpoint

    (tmp_path / "bin").mkdir()
    tool = tmp_path / "bin" / "cuda-checkpoint"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    gpu = a100_in_mig_mode(processes=[])  # the parent lists none (as to a caller without privileges)
    gpu["mig"]["devices"][1]["processes"] = [{"pid": os.getpid(), "used_memory_mib": 1024}]
    fake_nvml.write({"driver_version": "550.54.15", "devices": [gpu]})
    fake_nvml.load_here()
    found = checkpoint.verdict([os.getpid()])
    assert found.ok and found.pid == os.getpid(), found.reason


def test_ghost_memory_of_an_ended_tasks_process_is_found_through_nvml(fake_nvml, reaper):
    """A process tagged as one of our tasks' (as gputui's workers are) holds memory on GPU 0 after its task
    ended: the scheduler's ghost watch, fed by the NVML probe, names it."""
    from gputui.engine.gpuwatch import GHOST_AFTER_S, GHOST_CHECK_S, GhostWatch
    from gputui.gpus.nvml import NvmlProbe

    env = dict(os.environ, GPUTUI_SCHEDULER_ID="sched-1", GPUTUI_TASK_ID="shard-3", GPUTUI_ATTEMPT="1")
    leftover = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env=env)
    reaper.append(leftover)
    fake_nvml.write({"devices": [h100(processes=[{"pid": leftover.pid, "used_memory_mib": 6144}])]})
    fake_nvml.load_here()
    probe = NvmlProbe()
    try:
        watch = GhostWatch("sched-1")
        assert watch.sample(probe.snapshot(), {"shard-3": "running"}, 0.0) == []  # its task runs: no ghost
        assert watch.sample(probe.snapshot(), {"shard-3": "done"}, GHOST_CHECK_S) == []  # just ended: not yet
        (found,) = watch.sample(probe.snapshot(), {"shard-3": "done"}, GHOST_CHECK_S + GHOST_AFTER_S)
    finally:
        probe.close()
    assert (found.kind, found.task_id, found.gpu) == ("ghost_memory", "shard-3", 0)
    assert found.message == f"GPU 0: 6.0 GiB held by ended task shard-3 (pid {leftover.pid}), seen for 60s"


async def test_the_monitor_shows_the_drivers_gpus(fake_nvml):
    from gputui.tui.app import GpuTuiApp
    from gputui.tui.widgets.gpu_panel import GpuPanel

    quiet = h100(name="NVIDIA A100-SXM4-40GB", uuid="GPU-a100", memory_total_mib=40960, memory_used_mib=10240)
    quiet |= {"temperature_c": "not_supported", "power_w": "not_supported", "power_limit_w": "not_supported"}
    fake_nvml.write({"devices": [h100(), quiet]})
    fake_nvml.load_here()
    app = GpuTuiApp(interval=0.25)
    async with app.run_test(size=(120, 40)) as pilot:
        deadline = time.monotonic() + 20
        while len(app.query(GpuPanel)) < 2 and time.monotonic() < deadline:
            await pilot.pause(0.1)
        first, second = (panel.text() for panel in app.query(GpuPanel))
        header = str(app.query_one("#header").render())
        assert "NVML (driver 550.54.15, CUDA 12.4)" in header and "SIMULATED" not in header
        assert (
            first[0] == "GPU 0 · NVIDIA H100 80GB HBM3"
            and "1.0 / 80.0 GiB" in first[1]
            and first[2].endswith("37%")
        )
        assert "51°C" in first[3] and "210" in first[3]
        assert second[0] == "GPU 1 · NVIDIA A100-SXM4-40GB" and "10.0 / 40.0 GiB" in second[1]
        assert not any(c.isdigit() for c in second[3]), second[3]  # no temperature, no power: dashes

        fake_nvml.write({"devices": [h100(lost=True), quiet]})  # GPU 0 falls off the bus
        deadline = time.monotonic() + 20
        while "LOST" not in next(iter(app.query(GpuPanel))).text()[0] and time.monotonic() < deadline:
            await pilot.pause(0.1)
        assert next(iter(app.query(GpuPanel))).text()[0].endswith(" LOST")
        await pilot.press("q")


PYNVML_CALLS = r"""
import json, os, pynvml as n
n.nvmlInit()
h = n.nvmlDeviceGetHandleByIndex(0)
out = {"driver": n.nvmlSystemGetDriverVersion(), "count": n.nvmlDeviceGetCount()}
m1, m2 = n.nvmlDeviceGetMemoryInfo(h), n.nvmlDeviceGetMemoryInfo(h, n.nvmlMemory_v2)
out["memory"] = [m1.total, m1.used, m1.free, m2.total, m2.reserved, m2.used, m2.free]
out["v3"] = [(p.pid, p.usedGpuMemory, p.gpuInstanceId) for p in n.nvmlDeviceGetComputeRunningProcesses(h)]
out["v2"] = [(p.pid, p.usedGpuMemory) for p in n.nvmlDeviceGetComputeRunningProcesses_v2(h)]
out["sm"] = sorted((s.pid, s.smUtil) for s in n.nvmlDeviceGetProcessUtilization(h, 0))
out["by_uuid"] = n.nvmlDeviceGetName(n.nvmlDeviceGetHandleByUUID("MIG-1"))
mig = n.nvmlDeviceGetMigDeviceHandleByIndex(h, 0)
out["mig"] = [n.nvmlDeviceGetMigMode(h), n.nvmlDeviceGetUUID(mig), n.nvmlDeviceGetMemoryInfo(mig).total]
errors = {}
for name, call in [("temp", lambda: n.nvmlDeviceGetTemperature(h, 0)), ("second", lambda: n.nvmlDeviceGetName(
        n.nvmlDeviceGetHandleByIndex(1))), ("graphics", lambda: n.nvmlDeviceGetGraphicsRunningProcesses(h))]:
    try:
        errors[name] = call()
    except n.NVMLError as e:
        errors[name] = [e.value, str(e)]
out["errors"] = errors
n.nvmlShutdown()
print(json.dumps(out))
"""


def test_the_fake_answers_pynvml_as_the_driver_does(fake_nvml):
    """The C interface itself: versioned structs, the two-call process list, samples, MIG handles, errors."""
    procs = [{"pid": 10 + i, "used_memory_mib": i, "sm_util": i, "gpu_instance_id": 1} for i in range(40)]
    procs[3]["used_memory_mib"] = "n/a"  # WDDM's NVML_VALUE_NOT_AVAILABLE
    spec = h100(memory_reserved_mib=512, temperature_c="no_permission", processes=procs)
    spec["mig"] = {"current": 1, "devices": [{"uuid": "MIG-1", "name": "slice", "memory_total_mib": 10240}]}
    fake_nvml.write({"driver_version": "535.1", "devices": [spec, h100(lost=True)]})
    r = subprocess.run([sys.executable, "-c", PYNVML_CALLS], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["driver"] == "535.1" and out["count"] == 2
    assert out["memory"] == [80 * GIB, 1536 * MIB, 78.5 * GIB, 80 * GIB, 512 * MIB, GIB, 78.5 * GIB]
    assert len(out["v3"]) == 40 and out["v3"][0] == [10, 0, 1] and out["v3"][39] == [49, 39 * MIB, 1]
    assert out["v3"][3] == [13, None, 1] and out["v2"][:3] == [[10, 0], [11, MIB], [12, 2 * MIB]]
    assert out["sm"] == [[10 + i, i] for i in range(40)]
    assert out["by_uuid"] == "slice" and out["mig"] == [[1, 1], "MIG-1", 10 * GIB]
    assert out["errors"] == {
        "temp": [4, "Insufficient Permissions"],
        "second": [15, "GPU is lost"],
        "graphics": [],
    }


def test_a_malformed_spec_fails_nvml_init_and_says_why(fake_nvml):
    fake_nvml.spec.write_text('{"devices": [{"name": "x", "memory_total_mib": 80,}]}')
    r = gputui("gpus", "--json")
    assert r.returncode != 0
    assert "nvml: NVML init failed: Unknown Error" in r.stderr
    assert "fake_nvml: nvmlInit fails:" in r.stderr and "line 1" in r.stderr
