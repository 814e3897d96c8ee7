"""Machine-wide GPU reservations: a claim lasts exactly as long as some process holds its file."""

from __future__ import annotations

import os
import signal

from gputui.gpus.probe import GpuSnapshot
from gputui.gpus.reservations import Reservations, gpu_key


def gpus(n: int) -> list[GpuSnapshot]:
    return [GpuSnapshot(i, "sim", f"SIM-GPU-{i}", 24 << 30, 0, simulated=True) for i in range(n)]


def test_a_gpu_claimed_by_one_run_is_skipped_by_another_which_is_told_who_holds_it(tmp_path):
    first, second = Reservations(tmp_path), Reservations(tmp_path)
    claims, foreign = first.claim_some(gpus(4), 2)
    assert sorted(claims) == [0, 1] and foreign == {}
    for fd in claims.values():
        Reservations.annotate(fd, {"job": "first-job", "run_dir": "/runs/first", "task": "shard-0"})
    claims2, foreign2 = second.claim_some(gpus(4), 2)
    assert sorted(claims2) == [2, 3]
    assert {i: (note["job"], note["run_dir"]) for i, note in foreign2.items()} == {
        0: ("first-job", "/runs/first"),
        1: ("first-job", "/runs/first"),
    }
    assert second.holders([gpu_key(g) for g in gpus(4)])["SIM-GPU-0"]["task"] == "shard-0"
    for fd in [*claims.values(), *claims2.values()]:
        os.close(fd)
    assert second.holders([gpu_key(g) for g in gpus(4)]) == {}  # released with the last holder


def test_a_claim_handed_to_a_child_outlives_its_claimer_and_ends_with_the_child(tmp_path):
    res = Reservations(tmp_path)
    fd = res.claim("SIM-GPU-0")
    pid = os.fork()
    if pid == 0:  # the "waiter": holds its copy of the open file
        signal.pause()
        os._exit(0)
    os.close(fd)  # the claimer lets go; the child still holds the GPU
    assert res.claim("SIM-GPU-0") is None
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    again = res.claim("SIM-GPU-0")
    assert again is not None  # however the holder ended, nothing stale remains
    os.close(again)


def test_a_gpu_without_uuid_is_keyed_by_index():
    assert gpu_key(GpuSnapshot(3, "x", "", 1, 0)) == "gpu-index-3"
    assert gpu_key(GpuSnapshot(0, "x", "GPU-ab/cd", 1, 0)) == "GPU-ab_cd"
