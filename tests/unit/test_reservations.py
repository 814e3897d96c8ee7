"""Machine-wide GPU reservations: a claim lasts exactly as long as some process holds its file."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import stat
import time
from pathlib import Path
from unittest import mock

import pytest

from gputui.gpus.detect import open_probe
from gputui.gpus.probe import GpuSnapshot
from gputui.gpus.reservations import (
    SHARED_DIR,
    Reservations,
    claim_note,
    gpu_key,
    holder_text,
    lock_place,
    unsafe_reason,
)


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


def test_the_machine_map_is_in_var_tmp_unless_gputui_lock_dir_says_otherwise(monkeypatch, tmp_path):
    monkeypatch.delenv("GPUTUI_LOCK_DIR")
    folder, prefix, shared, warning = lock_place()
    if unsafe_reason(SHARED_DIR) is None:  # (as on any sane machine: root's, sticky)
        assert (folder, prefix, shared, warning) == (SHARED_DIR, "gputui-gpu-", True, None)
    monkeypatch.setenv("GPUTUI_LOCK_DIR", str(tmp_path / "locks"))
    assert lock_place() == (tmp_path / "locks", "", True, None)


def test_a_shared_folder_is_made_sticky_and_its_lock_files_open_to_every_user(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUTUI_LOCK_DIR", str(tmp_path / "locks"))
    old = os.umask(0o077)  # a strict umask does not narrow them
    try:
        res = Reservations()
        fd = res.claim("SIM-GPU-0")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "locks").st_mode) == 0o1777
    assert stat.S_IMODE(os.stat(tmp_path / "locks" / "SIM-GPU-0.lock").st_mode) == 0o666
    os.close(fd)


@pytest.mark.parametrize("mode", [0o777, 0o757])
def test_a_shared_folder_anyone_may_empty_is_refused_in_one_line_for_the_users_own(tmp_path, monkeypatch, mode):
    folder = tmp_path / "locks"
    folder.mkdir()
    folder.chmod(mode)  # world-writable, not sticky: anyone could delete a held lock file and claim its GPU again
    monkeypatch.setenv("GPUTUI_LOCK_DIR", str(folder))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    res = Reservations()
    assert res.folder == tmp_path / "cache" / "gputui" / socket.gethostname() / "gpu-locks" and not res.shared
    assert res.warning is not None and "\n" not in res.warning
    assert f"{folder} is writable by everyone without the sticky bit" in res.warning
    os.close(res.claim("SIM-GPU-0"))
    assert stat.S_IMODE(os.stat(res.folder / "SIM-GPU-0.lock").st_mode) == 0o600  # the user's own


def test_a_folder_of_another_user_who_is_not_root_is_refused():
    st = os.stat_result((stat.S_IFDIR | 0o1777, 0, 0, 0, 4242, 0, 0, 0, 0, 0))
    with (
        mock.patch("os.stat", return_value=st),
        mock.patch("gputui.gpus.reservations.user_name", return_value="eve"),
    ):
        assert (
            unsafe_reason(Path("/x"), uid=1000)
            == "is owned by eve (neither root nor you), who could delete your lock files"
        )
    root = os.stat_result((stat.S_IFDIR | 0o1777, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    with mock.patch("os.stat", return_value=root), mock.patch("os.access", return_value=True):
        assert unsafe_reason(Path("/var/tmp"), uid=1000) is None


def test_a_link_or_fifo_left_where_a_lock_file_goes_is_never_followed_or_waited_on(tmp_path):
    target = tmp_path / "victim"
    target.write_text("precious")
    (tmp_path / "SIM-GPU-0.lock").symlink_to(target)
    os.mkfifo(tmp_path / "SIM-GPU-1.lock")
    res = Reservations(tmp_path, shared=True)
    assert res.claim("SIM-GPU-0") is None and res.claim("SIM-GPU-1") is None
    assert target.read_text() == "precious"
    assert res.holders(["SIM-GPU-0", "SIM-GPU-1"]) == {}


def test_a_claim_says_who_holds_it_and_a_users_claims_are_counted_across_runs(tmp_path):
    first, second = Reservations(tmp_path), Reservations(tmp_path)
    note = claim_note(Path("/home/me/runs/sweep"), "sweep", "sched-1")
    claims, _ = first.claim_some(gpus(3), 2, note)
    assert second.held_by_user([gpu_key(g) for g in gpus(3)]) == 2  # at once, before any task is named
    assert second.held_by_user([gpu_key(g) for g in gpus(3)], uid=os.getuid() + 1) == 0
    Reservations.annotate(claims[0], note | {"task": "shard-3"})
    held = second.holders(["SIM-GPU-0"])["SIM-GPU-0"]
    assert (held["user"], held["uid"], held["host"], held["task"]) == (
        pwd.getpwuid(os.getuid()).pw_name,
        os.getuid(),
        socket.gethostname(),
        "shard-3",
    )
    since = time.strftime("%H:%M", time.localtime(held["since"]))
    assert holder_text(held) == f"{held['user']}: runs/sweep shard-3 since {since}"
    with second.user_turn():  # (held while a run counts and claims)
        pass
    for fd in claims.values():
        os.close(fd)


def test_private_simulated_gpus_are_claimed_in_their_run_and_shared_ones_in_the_machines_map(tmp_path):
    private, shared = open_probe("2x24"), open_probe("shared:2x24")
    mine = Reservations.for_probe(private, tmp_path / "run")
    assert mine.folder == tmp_path / "run" / "gpu-locks"
    assert Reservations.for_probe(private, None) is None  # no run: nobody holds them
    assert Reservations.for_probe(shared, tmp_path / "run").folder == Reservations().folder
    other = Reservations.for_probe(open_probe("2x24"), tmp_path / "other-run")
    fd = mine.claim(gpu_key(private.snapshot()[0]))
    theirs = other.claim(gpu_key(private.snapshot()[0]))  # another run's private GPU 0 is its own
    assert fd is not None and theirs is not None
    assert Reservations().holders(["SIM-GPU-0"]) == {}  # and the machine's map knows neither
    os.close(fd)
    os.close(theirs)


def test_a_held_gpus_note_can_say_what_its_task_does_and_stop_saying_it(tmp_path):
    res = Reservations(tmp_path / "locks")
    run = tmp_path / "runs" / "sweep"
    mine, other = res.claim("GPU-a"), res.claim("GPU-b")
    res.annotate(mine, claim_note(run, "sweep", "sched-1", "shard-3"))
    res.annotate(other, claim_note(run, "sweep", "sched-1", "shard-4"))
    since = res.holders(["GPU-a"])["GPU-a"]["since"]

    assert res.mark(run, "shard-3", "paused, memory freed") == 1
    notes = res.holders(["GPU-a", "GPU-b"])
    assert notes["GPU-a"]["state"] == "paused, memory freed" and notes["GPU-a"]["since"] == since
    assert "state" not in notes["GPU-b"]  # another task's GPU: untouched
    assert holder_text(notes["GPU-a"], clock=False).endswith("sweep shard-3, paused, memory freed")

    assert res.mark(run, "shard-3", None) == 1
    assert "state" not in res.holders(["GPU-a"])["GPU-a"]
    assert res.mark(tmp_path / "runs" / "elsewhere", "shard-3", "paused, memory freed") == 0  # another run's task
    os.close(mine)
    os.close(other)
