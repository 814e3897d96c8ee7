"""Pausing a task and freeing its GPU memory: NVIDIA's `cuda-checkpoint` moves a CUDA process's device state to
host memory (`--toggle --pid PID`) and back again (the same call), so a paused task need not hold its GPU.

Whether it can is decided here, from what is given (`check`: pure) or read from the machine (`verdict`): the
utility on PATH, a driver of 550 or newer (as NVML says), and a task with exactly one CUDA process (the
utility checkpoints one process; a multi-process NCCL job's peers would lose each other). Either OK, or the
reason in words, which `gputui pause --free-memory` and the app's pause dialog show as they are.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field

TOOL = "cuda-checkpoint"
MIN_DRIVER = 550
TOGGLE_TIMEOUT_S = 300.0  # copying tens of GB of device memory out takes a while
# What a task paused with its GPU memory freed says where it is shown: its reason (`gputui status`, the app's
# table), its GPU cards, its GPU reservations' notes (`gputui gpus`, other runs).
MEMORY_FREED = "paused, memory freed"


class CheckpointError(RuntimeError):
    pass


@dataclass(frozen=True)
class Verdict:
    """`ok`: pause can free this task's GPU memory (`pid`: its CUDA process, `tool`: the utility's path); else
    `reason` says why not."""

    ok: bool
    reason: str = ""
    pid: int | None = None
    tool: str | None = None
    pids: tuple[int, ...] = field(default=())  # the task's CUDA processes found

    def __bool__(self) -> bool:
        return self.ok


def driver_major(version: str) -> int | None:
    """550 of "550.54.15"; None when it does not start with a number."""
    m = re.match(r"\s*(\d+)", version or "")
    return int(m.group(1)) if m else None


def check(tool: str | None, driver: str | None, cuda_pids: Iterable[int], *, driver_error: str = "") -> Verdict:
    """The verdict from what is known: the utility's path (None: not on PATH), the driver's version (None: not
    read; `driver_error` says why) and the task's processes that hold a CUDA context on some GPU."""
    pids = tuple(sorted(set(cuda_pids)))
    if tool is None:
        return Verdict(False, f"{TOOL} is not installed", pids=pids)
    if driver is None:
        why = f" ({driver_error})" if driver_error else ""
        return Verdict(False, f"the NVIDIA driver's version cannot be read{why}", pids=pids)
    major = driver_major(driver)
    if major is None:
        return Verdict(False, f"the NVIDIA driver's version {driver!r} cannot be understood", pids=pids)
    if major < MIN_DRIVER:
        return Verdict(False, f"driver {driver} is older than {MIN_DRIVER}", pids=pids)
    if not pids:
        return Verdict(False, "it has no CUDA process (nothing of it holds GPU memory)", pids=pids)
    if len(pids) > 1:
        return Verdict(False, f"{len(pids)} CUDA processes (an NCCL job): not supported", pids=pids)
    return Verdict(True, pid=pids[0], tool=tool, pids=pids)


def find_tool() -> str | None:
    return shutil.which(TOOL)


def read_driver() -> tuple[str | None, list[int], str]:
    """(the driver's version, the pids of every process with a CUDA context on any GPU, why the version is
    missing) as NVML says; (None, [], why) where NVML cannot be read."""
    try:
        import pynvml
    except ImportError:
        return None, [], "pynvml (nvidia-ml-py) is not installed"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return None, [], f"NVML init failed: {e}"
    try:
        version = pynvml.nvmlSystemGetDriverVersion()
        if isinstance(version, bytes):
            version = version.decode("utf-8", errors="replace")
        pids: list[int] = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            for h in [handle, *_mig_handles(pynvml, handle)]:  # a MIG instance's processes: on its own handle
                for get in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
                    fn = getattr(pynvml, get, None)
                    try:
                        pids += [int(p.pid) for p in (fn(h) if fn else ())]
                    except pynvml.NVMLError:
                        pass
        return str(version), sorted(set(pids)), ""
    except pynvml.NVMLError as e:
        return None, [], f"NVML: {e}"
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def _mig_handles(nv, handle) -> list:
    """The MIG instances of a GPU in MIG mode (NVML lists their processes on the parent only to privileged
    callers); none for any other GPU."""
    try:
        if nv.nvmlDeviceGetMigMode(handle)[0] != 1:
            return []
        slots = nv.nvmlDeviceGetMaxMigDeviceCount(handle)
    except (nv.NVMLError, AttributeError):
        return []
    found = []
    for slot in range(slots):
        try:
            found.append(nv.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot))
        except nv.NVMLError:
            pass
    return found


def verdict(task_pids: Iterable[int]) -> Verdict:
    """Whether pausing the task whose processes are `task_pids` can free its GPU memory, on this machine now."""
    tool = find_tool()
    driver, gpu_pids, why = read_driver()  # (also without the utility: which of the task's processes use CUDA)
    ours = set(task_pids)
    return check(tool, driver, [p for p in gpu_pids if p in ours], driver_error=why)


def toggle(tool: str, pid: int, timeout: float = TOGGLE_TIMEOUT_S) -> None:
    """`cuda-checkpoint --toggle --pid PID`: its CUDA state out to host memory, or back. Raises CheckpointError
    saying what the utility said."""
    try:
        r = subprocess.run(
            [tool, "--toggle", "--pid", str(pid)], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CheckpointError(f"{TOOL} --toggle --pid {pid} failed: {e}") from e
    if r.returncode != 0:
        said = (r.stderr or r.stdout).strip().splitlines()
        raise CheckpointError(
            f"{TOOL} --toggle --pid {pid} failed (exit {r.returncode})" + (f": {said[-1]}" if said else "")
        )
