"""The continuation worker's vLLM engine. Where vLLM and an NVIDIA GPU are present it runs for real (a tiny
local model; killed mid-shard, nothing of it keeps GPU memory). Everywhere, the worker runs against vLLM's
offline API as it is called (tests/fakes/vllm): the LLM and SamplingParams arguments, one generate call per
batch, and how its outputs become rows."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
FAKES = ROOT / "tests" / "fakes"


def write_prompts(path: Path, n: int) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["data_id", "prompt"])
        for i in range(n):
            w.writerow([i, f"prompt number {i} " + ("stop" if i % 3 == 0 else "go on")])
    return path


def run_worker(inp: Path, out: Path, *extra: str, env: dict[str, str], timeout: float = 120):
    args = [
        sys.executable, "-m", "gputui.workers.continuation", "--input", str(inp), "--id-column", "data_id",
        "--low", "0", "--high", "20", "--output", str(out), "--engine", "vllm", *extra,
    ]  # fmt: skip
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_each_batch_is_one_generate_call_with_the_mapped_arguments(tmp_path):
    calls = tmp_path / "calls.jsonl"
    env = {**os.environ, "PYTHONPATH": f"{FAKES}{os.pathsep}{ROOT}", "FAKE_VLLM_CALLS": str(calls)}
    inp, out = write_prompts(tmp_path / "in.csv", 25), tmp_path / "out.csv"
    r = run_worker(
        inp, out, "--model", "org/model", "--batch-size", "8", "--max-new-tokens", "3", "--n", "2",
        "--tensor-parallel-size", "2", "--gpu-memory-utilization", "0.8", "--max-model-len", "2048",
        "--dtype", "bfloat16", "--seed", "5", env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    made = [json.loads(line) for line in calls.read_text().splitlines()]
    assert made[0] == {
        "init": {
            "model": "org/model",
            "tensor_parallel_size": 2,
            "gpu_memory_utilization": 0.8,
            "max_model_len": 2048,
            "dtype": "bfloat16",
            "seed": 5,
        }
    }
    generates = made[1:]
    assert [c["generate"] for c in generates] == [8, 8, 4], "20 ids of [0, 20) in batches of 8"
    assert all(c["use_tqdm"] is False for c in generates)
    assert generates[0]["sampling"] == {"n": 2, "temperature": 0.0, "top_p": 1.0, "max_tokens": 3, "seed": 5}
    rows = read_rows(out)
    assert len(rows) == 40 and [r["sample"] for r in rows[:2]] == ["0", "1"], "n = 2: a row per sample"
    first, second = rows[0], rows[2]
    assert (
        first["data_id"] == "0" and first["continuation"] == "stop 0 number" and first["finish_reason"] == "stop"
    )
    assert second["continuation"] == "on go 1" and second["finish_reason"] == "length"
    assert (first["prompt_tokens"], first["completion_tokens"]) == ("4", "3")
    assert "engine vllm, model org/model, batch size 8" in r.stdout


def fake_env(calls: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{FAKES}{os.pathsep}{ROOT}", "FAKE_VLLM_CALLS": str(calls)}


def write_with_long(
    path: Path, long_ids: tuple[int, ...], n: int = 20, extra: dict[int, str] | None = None
) -> Path:
    """`write_prompts`' prompts (4-5 words), but 8 words for `long_ids` and `extra`'s own prompts."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["data_id", "prompt"])
        for i in range(n):
            prompt = f"a long prompt of eight words, number {i}" if i in long_ids else f"prompt number {i} go on"
            w.writerow([i, (extra or {}).get(i, prompt)])
    return path


VLLM_TOO_LONG = (
    "error: ValueError: The decoder prompt (length 8) is longer than the maximum model length of 6. "
    "Make sure that `max_model_len` is no smaller than the number of text tokens."
)


def test_a_prompt_vllm_refuses_is_an_error_row_and_its_batch_mates_are_generated(tmp_path):
    calls = tmp_path / "calls.jsonl"
    inp, out = write_with_long(tmp_path / "in.csv", (4, 13)), tmp_path / "out.csv"
    r = run_worker(inp, out, "--model", "m", "--batch-size", "8", "--max-model-len", "6", env=fake_env(calls))
    assert r.returncode == 0, r.stderr
    rows = read_rows(out)
    assert [int(x["data_id"]) for x in rows] == list(range(20))
    assert [x["finish_reason"] for x in rows if x["finish_reason"] not in ("stop", "length")] == [
        VLLM_TOO_LONG
    ] * 2
    assert rows[4]["continuation"] == "" and rows[13]["continuation"] == ""
    assert rows[5]["continuation"] == "on go 5 number prompt"  # in the same batch as 4: generated all the same
    made = [json.loads(line)["generate"] for line in calls.read_text().splitlines()[1:]]
    assert made[0] == 8 and sum(made) < 3 * 20  # a failed batch is halved, not retried prompt by prompt
    assert "error row: id '4': " + VLLM_TOO_LONG in r.stdout and "(2 error rows)" in r.stdout


def test_an_engine_wide_error_still_fails_the_shard(tmp_path):
    calls = tmp_path / "calls.jsonl"
    inp = write_with_long(tmp_path / "in.csv", (), extra={9: "prompt number 9 OOM"})
    r = run_worker(inp, tmp_path / "out.csv", "--model", "m", "--batch-size", "8", env=fake_env(calls))
    assert r.returncode == 1 and "RuntimeError: CUDA out of memory" in r.stderr  # as before: the retry policy's
    assert "error row: " not in r.stdout and not (tmp_path / "out.csv").exists()

    everything = write_with_long(tmp_path / "all.csv", tuple(range(20)))  # every prompt refused: a bad setting
    args = ("--model", "m", "--max-model-len", "6", "--max-errors-in-a-row", "3")
    r = run_worker(everything, tmp_path / "all.csv.out.csv", *args, env=fake_env(calls))
    assert r.returncode == 1
    assert "error: the engine raised on 4 prompts in a row (last: ValueError: The decoder prompt" in r.stderr


def test_retry_errors_redoes_the_error_rows_of_a_resumed_shard(tmp_path):
    calls = tmp_path / "calls.jsonl"
    inp, out = write_with_long(tmp_path / "in.csv", (4,)), tmp_path / "out.csv"
    r = run_worker(inp, out, "--model", "m", "--batch-size", "8", "--max-model-len", "6", "--max-errors", "0",
                   env=fake_env(calls))  # fmt: skip
    assert r.returncode == 1 and "1 error row, more than --max-errors 0" in r.stderr
    r = run_worker(inp, out, "--model", "m", "--batch-size", "8", "--max-model-len", "8", "--retry-errors",
                   env=fake_env(calls))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "20 rows, 7 already done, 1 error row to retry" in r.stdout
    rows = read_rows(out)
    assert rows[4]["finish_reason"] == "length" and rows[4]["continuation"].startswith("4 number")
    assert "error row: " not in r.stdout and r.stdout.rstrip().endswith("out.csv")  # none left


def test_the_merge_and_the_summaries_count_the_error_rows(tmp_path):
    (tmp_path / "in.csv").write_bytes(write_with_long(tmp_path / "src.csv", (4, 13, 14)).read_bytes())
    command = (
        f"{sys.executable} -m gputui.workers.continuation --input {{input}} --id-column data_id --low {{low}} "
        "--high {high} --output {output} --model m --engine vllm --max-model-len 6"
    )
    job = tmp_path / "job.toml"
    job.write_text(
        f'[job]\nname = "v"\ncommand = "{command}"\n[shards]\ninput = "in.csv"\nid_column = "data_id"\n'
        'num_workers = 2\n[resources]\ngpus_per_worker = 0\n[outputs]\npattern = "o_{low}_{high}.csv"\n'
        'merged = "all.csv"\n'
    )
    r = subprocess.run(
        [sys.executable, "-m", "gputui", "run", "--jobs", str(job)],
        env=fake_env(tmp_path / "calls.jsonl"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (
        "merged 20 rows from 2 shard(s)" in r.stdout
        and '(3 error rows with finish_reason "error: ..."; coverage checked' in r.stdout
    )
    run_dir = tmp_path / "runs" / "v"
    merge = json.loads((run_dir / "merge_summary.json").read_text())
    assert merge["error_rows"] == 3 and [s["error_rows"] for s in merge["shards"]] == [1, 2]
    assert json.loads((run_dir / "summary.json").read_text())["merge"]["error_rows"] == 3
    assert "3 of them are error rows" in (run_dir / "report.md").read_text()
    shard = json.loads((run_dir / "tasks" / "shard-1" / "summary.json").read_text())
    assert shard["final_metrics"]["error_rows"] == 2
    merged = read_rows(run_dir / "outputs" / "all.csv")
    assert [int(x["data_id"]) for x in merged if x["finish_reason"].startswith("error: ")] == [4, 13, 14]


def _gpu() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetCount() > 0
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return False


real_vllm = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None or not _gpu(),
    reason="needs vLLM and an NVIDIA GPU (pip install 'gputui[vllm]' on a GPU machine)",
)


@pytest.fixture(scope="module")
def vllm_model(tmp_path_factory) -> Path:
    from gputui.workers.tiny_model import build_tiny_model

    # head_dim 64: a size every vLLM attention backend takes
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", None, hidden_size=256, heads=4)


def _gpu_pids() -> set[int]:
    import pynvml

    pynvml.nvmlInit()
    try:
        pids = set()
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            pids |= {p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)}
        return pids
    finally:
        pynvml.nvmlShutdown()


@real_vllm
def test_real_vllm_continues_a_shard_on_the_gpu(vllm_model, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    inp, out = write_prompts(tmp_path / "in.csv", 20), tmp_path / "out.csv"
    extra = ("--model", str(vllm_model), "--max-new-tokens", "8", "--gpu-memory-utilization", "0.3")
    r = run_worker(inp, out, *extra, "--max-model-len", "256", env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = read_rows(out)
    assert [int(x["data_id"]) for x in rows] == list(range(20))
    assert all(int(x["completion_tokens"]) >= 1 and x["finish_reason"] in ("stop", "length") for x in rows)


@real_vllm
def test_killing_a_vllm_task_leaves_nothing_holding_gpu_memory(vllm_model, tmp_path):
    import psutil

    (tmp_path / "in.csv").write_text("data_id,prompt\n" + "".join(f"{i},hello {i}\n" for i in range(2000)))
    command = (
        f"{sys.executable} -m gputui.workers.continuation --input {{input}} --id-column data_id --low {{low}} "
        f"--high {{high}} --output {{output}} --model {vllm_model} --engine vllm --batch-size 4 "
        "--max-new-tokens 64 --gpu-memory-utilization 0.3 --max-model-len 256"
    )
    job = tmp_path / "job.toml"
    job.write_text(
        f'[job]\nname = "v"\ncommand = "{command}"\n[shards]\ninput = "in.csv"\nid_column = "data_id"\n'
        '[resources]\ngpus_per_worker = 1\n[outputs]\npattern = "o_{low}_{high}.csv"\n'
    )
    before = _gpu_pids()
    run = subprocess.Popen([sys.executable, "-m", "gputui", "run", "--jobs", str(job)], env={**os.environ})
    run_dir = tmp_path / "runs" / "v"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (_gpu_pids() - before):
        time.sleep(1)
    ours = _gpu_pids() - before
    assert ours, "vLLM never took GPU memory"
    tree = {p.pid for p in psutil.Process(run.pid).children(recursive=True)}
    subprocess.run([sys.executable, "-m", "gputui", "kill", "--run-dir", str(run_dir), "--all"], check=True)
    run.wait(120)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (_gpu_pids() & (ours | tree)):
        time.sleep(1)
    assert not (_gpu_pids() & (ours | tree)), "a vLLM engine process outlived its task and holds GPU memory"
