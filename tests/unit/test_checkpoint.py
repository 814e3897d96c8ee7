"""Whether a pause can free a task's GPU memory (gputui.gpus.checkpoint): NVIDIA's cuda-checkpoint on PATH, a
driver of 550 or newer as NVML says it (here the fake NVML's driver_version), one CUDA process in the task. Each
"no" comes with its reason in words, as `gputui pause --free-memory` and the app say it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gputui.gpus import checkpoint
from gputui.gpus.checkpoint import check, driver_major


def fake_tool(folder: Path, *, fail: bool = False) -> Path:
    """A cuda-checkpoint that records its arguments, one call a line (and fails where told)."""
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / "cuda-checkpoint"
    tool.write_text(
        f'#!/bin/sh\necho "$@" >> "{folder}/calls"\n' + ('echo "no such process" >&2\nexit 3\n' if fail else "")
    )
    tool.chmod(0o755)
    return tool


def calls(folder: Path) -> list[str]:
    record = folder / "calls"
    return record.read_text().splitlines() if record.exists() else []


def test_every_reason_in_words():
    assert check(None, "550.54.15", [10]).reason == "cuda-checkpoint is not installed"
    assert check("/x/cuda-checkpoint", "535.104", [10]).reason == "driver 535.104 is older than 550"
    nccl = check("/x/cuda-checkpoint", "550.54.15", [12, 10, 11])
    assert nccl.reason == "3 CUDA processes (an NCCL job): not supported" and nccl.pids == (10, 11, 12)
    assert "no CUDA process" in check("/x/cuda-checkpoint", "550.54.15", []).reason
    unread = check("/x/cuda-checkpoint", None, [10], driver_error="NVML init failed: Driver Not Loaded")
    assert unread.reason == "the NVIDIA driver's version cannot be read (NVML init failed: Driver Not Loaded)"
    assert not unread and "cannot be understood" in check("/x/c", "weird", [10]).reason


def test_one_cuda_process_on_a_new_driver_is_ok():
    v = check("/x/cuda-checkpoint", "570.86.10", [10, 10])  # (one process seen on two GPUs)
    assert v and (v.pid, v.tool, v.reason) == (10, "/x/cuda-checkpoint", "")
    assert check("/x/cuda-checkpoint", "550.40.07", [10])  # 550 itself is enough


def test_driver_major():
    assert (driver_major("550.54.15"), driver_major("535"), driver_major(""), driver_major("r550")) == (
        550,
        535,
        None,
        None,
    )


def test_missing_tool_is_said_first(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no cuda-checkpoint anywhere
    assert checkpoint.verdict([os.getpid()]).reason == "cuda-checkpoint is not installed"


def spec(driver: str, pids: list[list[int]]) -> dict:
    return {
        "driver_version": driver,
        "devices": [
            {
                "name": "NVIDIA H100 80GB HBM3",
                "uuid": f"GPU-{i}",
                "memory_total_mib": 81920,
                "memory_used_mib": 1024,
                "processes": [{"pid": p, "used_memory_mib": 512} for p in gpu],
            }
            for i, gpu in enumerate(pids)
        ],
    }


@pytest.mark.fake_nvml
def test_verdict_reads_the_driver_and_the_processes_from_nvml(fake_nvml, monkeypatch, tmp_path):
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    fake_nvml.load_here()
    me, stranger = os.getpid(), 999_999

    fake_nvml.write(spec("535.104.05", [[me]]))
    assert checkpoint.verdict([me]).reason == "driver 535.104.05 is older than 550"

    fake_nvml.write(spec("550.54.15", [[me, stranger]]))  # someone else's process is not the task's
    ok = checkpoint.verdict([me])
    assert ok and ok.pid == me and ok.tool == str(bin_dir / "cuda-checkpoint")

    fake_nvml.write(spec("550.54.15", [[me, me + 1], [me + 2]]))  # one per GPU: an NCCL job
    assert checkpoint.verdict([me, me + 1, me + 2]).reason == "3 CUDA processes (an NCCL job): not supported"

    fake_nvml.write(spec("550.54.15", [[stranger]]))
    assert "no CUDA process" in checkpoint.verdict([me]).reason


def test_verdict_without_a_driver_says_so(monkeypatch, tmp_path):
    bin_dir = tmp_path / "bin"
    fake_tool(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(checkpoint, "read_driver", lambda: (None, [], "NVML init failed: Driver Not Loaded"))
    v = checkpoint.verdict([os.getpid()])
    assert v.reason == "the NVIDIA driver's version cannot be read (NVML init failed: Driver Not Loaded)"


def test_toggle_calls_the_utility_and_says_its_failure(tmp_path):
    tool = fake_tool(tmp_path / "ok")
    checkpoint.toggle(str(tool), 4242)
    assert calls(tmp_path / "ok") == ["--toggle --pid 4242"]
    bad = fake_tool(tmp_path / "bad", fail=True)
    with pytest.raises(checkpoint.CheckpointError, match=r"--toggle --pid 7 failed \(exit 3\): no such process"):
        checkpoint.toggle(str(bad), 7)
