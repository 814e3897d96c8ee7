"""The GPU box policy an admin writes (/etc/gputui/policy.toml): read like a job file, its rules pure."""

from __future__ import annotations

import pytest

from gputui.engine.rules.placement import Policy, held_by, why_waiting
from gputui.gpus.probe import GIB, GpuSnapshot
from gputui.jobs.box_policy import BoxPolicy, PolicyFile, read_box_policy
from gputui.jobs.spec import JobSpecError


def gpus(n: int) -> list[GpuSnapshot]:
    return [GpuSnapshot(i, "sim", f"SIM-GPU-{i}", 24 * GIB, 0, simulated=True) for i in range(n)]


def test_no_file_is_no_policy(tmp_path):
    policy = read_box_policy(tmp_path / "missing.toml")
    assert policy == BoxPolicy()
    assert policy.room(5) is None and policy.claimable([0, 1]) == [0, 1]


def test_a_policy_file_is_read(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text("max_gpus_per_user = 2\nreserved_gpus = [6, 7]\n")
    policy = read_box_policy(path)
    assert (policy.max_gpus_per_user, policy.reserved_gpus, policy.path) == (2, frozenset({6, 7}), str(path))


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("max_gpus_per_user = -1", "max_gpus_per_user: expected a non-negative integer, got -1 (int)"),
        ("max_gpus_per_user = 1.5", "max_gpus_per_user: expected a non-negative integer, got 1.5 (float)"),
        ('max_gpus_per_user = "2"', "max_gpus_per_user: expected a non-negative integer, got '2' (str)"),
        ("reserved_gpus = 7", "reserved_gpus: expected an array of GPU indices (integers >= 0), got 7 (int)"),
        ("reserved_gpus = [1, -2]", "reserved_gpus: expected an array of GPU indices (integers >= 0)"),
        ("max_gpu_per_user = 2", "policy.max_gpu_per_user: unknown key; did you mean 'max_gpus_per_user'?"),
        ("max_gpus_per_user = ", "TOML syntax error at line 1"),
    ],
)
def test_a_bad_policy_names_the_file_the_key_and_what_was_expected(tmp_path, text, said):
    path = tmp_path / "policy.toml"
    path.write_text(text + "\n")
    with pytest.raises(JobSpecError) as info:
        read_box_policy(path)
    assert str(info.value).startswith(f"{path}: ") and said in str(info.value), str(info.value)


def test_the_rules_room_per_user_and_gpus_kept_for_interactive_use():
    policy = BoxPolicy(2, frozenset({6, 7}))
    assert [policy.room(n) for n in (0, 1, 2, 3)] == [2, 1, 0, 0]
    assert policy.claimable(range(8)) == [0, 1, 2, 3, 4, 5]
    assert policy.limit_reason(2) == "policy: at most 2 GPUs per user (you hold 2)"
    assert BoxPolicy(1).limit_reason(1) == "policy: at most 1 GPU per user (you hold 1)"


def test_an_edit_that_breaks_the_policy_keeps_the_last_one_and_says_so(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text("max_gpus_per_user = 1\n")
    said = []
    file = PolicyFile(path, warn=said.append)
    assert file.current().max_gpus_per_user == 1
    path.write_text("max_gpus_per_user = 3\nreserved_gpus = [0]\n")
    assert file.current().max_gpus_per_user == 3
    path.write_text("max_gpus_per_user = oops\n")
    assert file.current().max_gpus_per_user == 3 and "keeping the policy read before" in said[0]
    path.unlink()
    assert file.current() == BoxPolicy()  # the admin took the policy away
    path.write_text("nonsense = 1\n")
    with pytest.raises(JobSpecError):
        PolicyFile(path).current()  # broken from the start: a refusal


def test_the_waiting_reason_names_the_holder_with_the_user_and_the_policy():
    note = {"user": "alice", "uid": 1001, "job": "sweep", "task": "shard-3", "run_dir": "/home/alice/runs/sweep"}
    assert held_by(note) == "held by alice (run sweep, task shard-3)"
    assert held_by({"job": "old", "run_dir": "/r/old"}) == "held by run old (/r/old)"  # an older gputui's note
    assert held_by({}) == "held by another gputui run"  # a note this user cannot read
    policy = Policy(1, None)
    said = why_waiting(gpus(2), set(), policy, 1, {0: note}, kept={1})
    held, kept = "GPU 0 held by alice (run sweep, task shard-3)", "GPU 1 reserved for interactive use by policy"
    assert said == f"needs 1 GPU, 0 free: {held}; {kept}"
    limit = BoxPolicy(2).limit_reason(2)
    said = why_waiting(gpus(4), {0, 1}, policy, 1, limit=limit)
    assert said == "needs 1 GPU, 2 free: policy: at most 2 GPUs per user (you hold 2); GPUs 0,1 in use by this run"
