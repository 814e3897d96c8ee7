"""[resources].mode sizes GPUs per worker from the model's config.json and the GPUs' memory: the worker is
given {tensor_parallel_size} and {gpu_memory_utilization}, and as many workers run as the GPUs allow;
`gputui plan` shows the decision and its arithmetic without running anything."""

from __future__ import annotations

import json
import sys

from tests.conftest import gputui

QWEN_7B = {
    "hidden_size": 3584,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "intermediate_size": 18944,
    "vocab_size": 152064,
    "torch_dtype": "bfloat16",
}


def job(tmp_path, mode: str = "auto") -> str:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps(QWEN_7B))
    (tmp_path / "ids.csv").write_text("data_id\n" + "".join(f"{i}\n" for i in range(40)))
    (tmp_path / "worker.py").write_text(
        "import os, sys\nprint('worker', os.environ['CUDA_VISIBLE_DEVICES'], *sys.argv[1:])\n"
        "open(sys.argv[-1], 'w').write('data_id\\n')\n"
    )
    args = "{model} {dtype} {tensor_parallel_size} {gpu_memory_utilization} {output}"
    path = tmp_path / "job.toml"
    path.write_text(
        f"""
[job]
name = "m"
command = "{sys.executable} worker.py {args}"
[shards]
input = "ids.csv"
num_workers = 8
[resources]
mode = "{mode}"
[model]
path = "model"
[outputs]
pattern = "out_{{low}}_{{high}}.csv"
"""
    )
    return str(path)


def test_auto_gives_each_worker_the_gpus_and_memory_fraction_it_needs(tmp_path):
    path = job(tmp_path)
    r = gputui("run", "--jobs", path, "--simulate", "8x12")  # 15 GB of weights: two 12 GB GPUs per worker
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [ln for ln in r.stdout.splitlines() if " worker " in ln]
    assert len(lines) == 8
    for line in lines:
        gpus, model, dtype, tp, util = line.split(" worker ")[1].split()[:5]
        assert len(gpus.split(",")) == 2 and (dtype, tp) == ("auto", "2") and model.endswith("model")
        assert 0.9 <= float(util) <= 0.95
    assert "CUDA_VISIBLE_DEVICES=6,7 " in r.stdout  # four workers at once cover all eight GPUs


def test_a_model_that_fits_nowhere_is_refused_before_anything_runs(tmp_path):
    path = job(tmp_path)
    r = gputui("run", "--jobs", path, "--simulate", "1x12")
    assert r.returncode == 2 and "does not fit one GPU here in mode 'auto'" in r.stderr, r.stderr
    assert "18.6 GB per GPU" in r.stderr and "launch" not in r.stdout


def test_plan_prints_the_decision_and_writes_nothing(tmp_path):
    path = job(tmp_path, mode="data_parallel")
    r = gputui("plan", "--jobs", path, "--simulate", "4x24")
    assert r.returncode == 0, r.stderr
    assert "8 shards" in r.stdout and "15.2 GB of weights" in r.stdout
    assert "decision: 1 GPU(s) per worker, 4 worker(s) at once" in r.stdout
    assert not (tmp_path / "runs").exists()
