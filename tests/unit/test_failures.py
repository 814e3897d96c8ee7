from __future__ import annotations

from gputui.engine.rules.failures import classify

TRACEBACK = """Traceback (most recent call last):
  File "w.py", line 3, in <module>
    main()
KeyError: 'prompt'
"""


def test_cuda_oom_wins_over_generic_cuda_error_and_traceback():
    tail = TRACEBACK + "RuntimeError: CUDA error: out of memory\ntorch.OutOfMemoryError: CUDA out of memory. Tried"
    f = classify(1, tail)
    assert f.kind == "cuda_oom" and f.reason.startswith("CUDA out of memory: torch.OutOfMemoryError")


def test_cuda_error():
    f = classify(1, "RuntimeError: CUDA error: an illegal memory access was encountered\n")
    assert f.kind == "cuda_error" and "illegal memory access" in f.reason


def test_slurm_saying_why_it_ended_a_job_is_the_reason_not_the_signal():
    tail = "step 40\nslurmstepd: error: *** JOB 12 ON gpu-3 CANCELLED AT 2026-12-02T16:55 DUE TO TIME LIMIT ***\n"
    f = classify(-15, tail)
    assert f.kind == "slurm" and f.reason.startswith("Slurm: slurmstepd: error: *** JOB 12 ON gpu-3 CANCELLED")
    assert "DUE TO TIME LIMIT" in f.reason


def test_nccl_error():
    assert classify(1, "torch.distributed.DistBackendError: NCCL error in: x.cpp:1\n").kind == "nccl"


def test_python_exception_names_the_exception():
    f = classify(1, TRACEBACK)
    assert f.kind == "exception" and f.reason == "Python exception: KeyError: 'prompt'"


def test_killed_by_signal_negative_and_shell_style():
    assert classify(-9, "").reason.startswith("killed by SIGKILL")
    assert classify(-15, "").reason == "killed by SIGTERM"
    assert classify(137, "").reason.startswith("killed by SIGKILL")


def test_command_not_found_and_plain_exit_code():
    assert classify(127, "gputui: cannot run 'foo': No such file or directory\n").kind == "not_found"
    f = classify(3, "loading\nbad config value\n")
    assert f.kind == "exit_code" and f.reason == "exit code 3: bad config value"


def test_unknown_exit_status():
    assert classify(None, "").kind == "lost"


def test_a_workers_escape_sequences_never_reach_the_reason():
    attack = "\x1b]0;PWNED-TITLE\x07\x1b[2J\x1b[HFAKE: all 4 tasks done\x1b[8m hidden"
    shown = "␛]0;PWNED-TITLE␇␛[2J␛[HFAKE: all 4 tasks done hidden"  # colours dropped, the rest shown
    assert classify(1, f"working\n{attack}\n").reason == f"exit code 1: {shown}"
    assert classify(1, f"{TRACEBACK}ValueError: {attack}\n").reason == f"Python exception: ValueError: {shown}"
    oom = classify(1, "\x1b[31mtorch.OutOfMemoryError: CUDA out of memory\x1b[0m\n")
    assert oom.reason == "CUDA out of memory: torch.OutOfMemoryError: CUDA out of memory"  # torch's colours
    assert "\x9b" not in classify(127, "sh: x\x9b2J: not found").reason
