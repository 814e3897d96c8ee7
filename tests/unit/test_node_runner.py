"""The runner on a cluster's node, run here: the command as a tree of its own, obeying the attempt's signal
file, and the first line of its log saying where it ran (what the app's GPUs column reads back)."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

from gputui.executors import node_runner, ray_client


def test_the_log_says_where_the_command_ran_and_placement_reads_it_back(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")  # what the cluster gave the task
    log = tmp_path / "t.attempt1.log"
    before = time.time()
    code = node_runner.run(["sh", "-c", "echo $CUDA_VISIBLE_DEVICES"], {}, str(log), str(tmp_path), "", 5.0)
    assert code == 0
    first, output = log.read_text().splitlines()
    assert output == "2,3"
    placed = node_runner.placement(str(log))
    assert before - 0.01 <= placed.pop("since") <= time.time()  # its GPU time counts from then
    assert placed == {"node": socket.gethostname(), "pid": os.getpid(), "node_id": "", "gpus": "2,3"}
    assert first.startswith(f"gputui: on Ray node {socket.gethostname()} (pid {os.getpid()}), GPUs 2,3, since ")


def test_an_attempt_ended_while_queued_never_starts(tmp_path):
    signals = tmp_path / "t.signals"
    ray_client.tell(signals, "TERM")  # a kill that reached the attempt before the cluster started it
    log = tmp_path / "t.log"
    code = node_runner.run(["sh", "-c", "touch ran"], {}, str(log), str(tmp_path), str(signals), 5.0)
    assert code == -signal.SIGTERM and not (tmp_path / "ran").exists()
    assert node_runner.placement(str(log)) is None
    assert "ended before it started" in log.read_text()


def test_a_queued_attempt_has_no_placement(tmp_path):
    assert node_runner.placement(str(tmp_path / "missing.log")) is None
    (tmp_path / "other.log").write_text("gputui: Slurm job 12: pending (Resources)\n")
    assert node_runner.placement(str(tmp_path / "other.log")) is None


def test_words_in_the_signal_file_stop_continue_and_end_the_whole_tree(tmp_path):
    signals = tmp_path / "t.signals"
    log = tmp_path / "t.log"
    ended: list[int] = []
    # The command forks a child; both must be stopped, continued and ended.
    argv = ["sh", "-c", "sleep 60 & echo $! > child; wait"]
    runner = threading.Thread(
        target=lambda: ended.append(node_runner.run(argv, {}, str(log), str(tmp_path), str(signals), 1.0))
    )
    runner.start()
    deadline = time.monotonic() + 10
    while not (tmp_path / "child").exists() or not (tmp_path / "child").read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    child = int((tmp_path / "child").read_text())

    def state() -> str:
        with open(f"/proc/{child}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]

    def becomes(want: str) -> None:
        deadline = time.monotonic() + 5
        while state() != want:
            assert time.monotonic() < deadline, f"pid {child} is {state()}, not {want}"
            time.sleep(0.02)

    ray_client.tell(signals, "STOP")
    becomes("T")
    ray_client.tell(signals, "CONT")
    becomes("S")
    ray_client.tell(signals, "TERM")
    runner.join(10)
    assert ended == [-signal.SIGTERM]
    assert not os.path.exists(f"/proc/{child}") or state() == "Z"
