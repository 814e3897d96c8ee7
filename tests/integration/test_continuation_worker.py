"""The continuation worker as real processes on CPU with a tiny offline model: shards, outputs and resume."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")  # the [transformers] extra
pytest.importorskip("tokenizers")

from gputui.hooks.reader import Latest, read_all  # noqa: E402
from gputui.workers import rows as rowio  # noqa: E402
from gputui.workers.continuation import DELAY_ENV  # noqa: E402
from gputui.workers.engines import EngineMissingError, GenSettings, _require, vllm_kwargs  # noqa: E402
from tests.conftest import gputui  # noqa: E402

ROOT = Path(__file__).parents[2]
COLUMNS = ["data_id", "prompt", "continuation", "finish_reason", "prompt_tokens", "completion_tokens"]
PROMPTS = ["The cat sat on", "A worker that is", "Once upon a time", "The weather today is", "She opened the"]
PROCESSED = re.compile(r"processed (\d+)/(\d+) rows \([\d.]+ rows/s, \d+ tokens/s\)")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from gputui.workers.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", PROMPTS, fit_steps=10)


def env(events: Path | None = None, **extra: str) -> dict[str, str]:
    e = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "", **extra}
    if events is not None:
        e["GPUTUI_EVENTS"] = str(events)
    return e


def argv(model: Path, inp: Path, out: Path, low: int, high: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "gputui.workers.continuation", "--input", str(inp), "--id-column", "data_id",
        "--low", str(low), "--high", str(high), "--output", str(out), "--model", str(model),
        "--max-new-tokens", "6", *extra,
    ]  # fmt: skip


def worker(*args: str, events: Path | None = None, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env(events, **extra_env), capture_output=True, text=True, timeout=120)


def write_csv(path: Path, ids: list) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["data_id", "prompt", "other"])
        for i, id_ in enumerate(ids):
            w.writerow([id_, PROMPTS[i % len(PROMPTS)], i])
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_integer_ids_greedy(model, tmp_path):
    inp = write_csv(tmp_path / "in.csv", [str(i) for i in range(30)] + ["007"])  # "007" is the integer 7
    out, events = tmp_path / "out" / "shard.csv", tmp_path / "events.jsonl"
    p = worker(*argv(model, inp, out, 5, 12, "--engine", "auto", "--batch-size", "3"), events=events)
    assert p.returncode == 0, p.stderr
    assert "engine transformers" in p.stdout  # auto without vLLM / GPU
    assert PROCESSED.findall(p.stdout)[-1] == ("8", "8")
    rows = read_csv(out)
    assert list(rows[0]) == COLUMNS
    assert [r["data_id"] for r in rows] == ["5", "6", "7", "8", "9", "10", "11", "007"]  # input order
    for r in rows:
        assert r["finish_reason"] in ("length", "stop")
        assert 1 <= int(r["completion_tokens"]) <= 6 and int(r["prompt_tokens"]) > 0
        assert r["finish_reason"] == "stop" or int(r["completion_tokens"]) == 6
    by_prompt = {}
    for r in rows:  # greedy: the same prompt always continues the same way
        assert by_prompt.setdefault(r["prompt"], r["continuation"]) == r["continuation"]
    assert not rowio.partial_path(out).exists()
    latest = Latest().feed(read_all(events))
    assert latest.done and latest.fraction == 1.0
    assert "tokens_per_s" in latest.metrics and "rows_per_s" in latest.metrics


def test_jsonl_string_ids_template_and_samples(model, tmp_path):
    inp = tmp_path / "in.jsonl"
    ids = ["delta", "alpha", "echo", "charlie", "bravo"]  # sorted: alpha bravo charlie delta echo
    inp.write_text("".join(json.dumps({"data_id": k, "topic": k, "text": "unused"}) + "\n" for k in ids))
    out = tmp_path / "shard.jsonl"
    args = argv(model, inp, out, 1, 4, "--engine", "transformers", "--template", "Tell me about {topic}:")
    p = worker(*args, "--n", "2", "--temperature", "0.9", "--top-p", "0.95", "--seed", "3")
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["data_id"], r["sample"]) for r in rows] == [
        (k, s) for k in ("delta", "charlie", "bravo") for s in (0, 1)
    ]  # positions 1..3 of the sorted ids, in file order, two samples each
    assert list(rows[0]) == ["data_id", "prompt", "sample", *COLUMNS[2:]]
    assert rows[0]["prompt"] == "Tell me about delta:" and isinstance(rows[0]["prompt_tokens"], int)


def test_killed_mid_shard_resumes_without_loss_or_duplicates(model, tmp_path):
    inp = write_csv(tmp_path / "in.csv", list(range(40)))
    out = tmp_path / "shard.csv"
    partial = rowio.partial_path(out)
    args = argv(model, inp, out, 0, 40, "--engine", "transformers", "--batch-size", "2", "--chat-template")
    proc = subprocess.Popen(args, env=env(**{DELAY_ENV: "0.25"}), stdout=subprocess.PIPE, text=True)
    seen = []
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        m = PROCESSED.search(line)
        if m:
            seen.append(int(m.group(1)))
            if seen[-1] >= 10:
                break
        assert time.monotonic() < deadline
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert partial.exists() and not out.exists()  # no final file while the shard is incomplete
    kept = [json.loads(line) for line in partial.read_text().splitlines()[1:]]
    assert len(kept) >= seen[-1]
    with open(partial, "a") as f:
        f.write('{"key": "39#0", "id": 39, "samp')  # a torn last line must be ignored

    p = worker(*args)
    assert p.returncode == 0, p.stderr
    done = int(re.search(r"(\d+) already done \(a torn last line was dropped\)", p.stdout).group(1))
    assert done == len(kept) and seen[-1] <= done <= seen[-1] + 2  # at most one batch redone
    redone = [int(m[0]) for m in PROCESSED.findall(p.stdout)]
    assert redone[0] == done + 2 and redone[-1] == 40
    rows = read_csv(out)
    assert [int(r["data_id"]) for r in rows] == list(range(40))  # none missing, none twice
    assert not partial.exists()

    clean = tmp_path / "clean.csv"  # greedy: the resumed shard equals an uninterrupted one
    assert worker(*argv(model, inp, clean, 0, 40, "--engine", "transformers", "--chat-template")).returncode == 0
    assert read_csv(clean) == rows


def test_prompts_the_model_cannot_take_become_error_rows_and_the_shard_goes_on(model, tmp_path):
    """One prompt too long for the tiny model's 256 positions, one with a byte that is not UTF-8: each is an
    error row with its reason, the good rows beside them are generated; --max-errors 0 fails the shard at
    the first, and the resume keeps it as done."""
    inp = tmp_path / "in.csv"
    lines = [b"data_id,prompt"]
    for i in range(9):
        prompt = {2: b"~" * 300, 5: b"bad \xff byte"}.get(i, PROMPTS[i % len(PROMPTS)].encode())
        lines.append(b"%d,%s" % (i, prompt))
    inp.write_bytes(b"\n".join(lines) + b"\n")
    out, events = tmp_path / "shard.csv", tmp_path / "events.jsonl"
    args = argv(model, inp, out, 0, 9, "--engine", "transformers", "--batch-size", "3")

    p = worker(*args, "--max-errors", "0")
    assert p.returncode == 1, p.stderr
    assert "error: shard [0, 9): 1 error row, more than --max-errors 0 (first: id '2': error: prompt too long" in (
        p.stderr
    )
    assert "Traceback" not in p.stderr and not out.exists() and rowio.partial_path(out).exists()

    p = worker(*args, events=events)  # the resume: no limit now
    assert p.returncode == 0, p.stderr
    assert "9 rows, 3 already done, 1 error row among them" in p.stdout  # kept, not redone
    assert [m[0] for m in PROCESSED.findall(p.stdout)] == ["6", "9"]
    assert f"wrote 9 rows to {out} (2 error rows)" in p.stdout
    rows = read_csv(out)
    assert [r["data_id"] for r in rows] == [str(i) for i in range(9)]
    too_long, undecodable = rows[2], rows[5]
    assert too_long["continuation"] == "" and too_long["completion_tokens"] == "0"
    assert re.fullmatch(
        r"error: prompt too long: \d+ tokens \+ 6 new exceed the model's context of 256", too_long["finish_reason"]
    )
    assert undecodable["prompt"] == "bad \ufffd byte" and undecodable["completion_tokens"] == "0"
    assert (
        undecodable["finish_reason"]
        == "error: prompt is not valid UTF-8 text (undecodable byte 0xff at character 4)"
    )
    for r in rows[:2] + rows[3:5] + rows[6:]:
        assert r["finish_reason"] in ("length", "stop") and int(r["completion_tokens"]) >= 1
    assert Latest().feed(read_all(events)).metrics["error_rows"] == 2  # what the merge counts


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_missing_engine_is_a_clear_error(model, tmp_path):
    inp = write_csv(tmp_path / "in.csv", [1, 2])
    out = tmp_path / "o.csv"
    p = worker(*argv(model, inp, out, 0, 5, "--engine", "vllm"))
    assert p.returncode == 2
    assert "pip install 'gputui[vllm]'" in p.stderr and "Traceback" not in p.stderr
    assert not out.exists()


def test_missing_transformers_names_its_extra():
    with pytest.raises(EngineMissingError, match=r"gputui\[transformers\]"):
        _require("surely_not_installed_pkg", "transformers")


def test_vllm_argument_mapping():
    args = Namespace(tensor_parallel_size=2, gpu_memory_utilization=0.85, max_model_len=4096, dtype="bfloat16")
    llm, sampling = vllm_kwargs(args, GenSettings(64, 0.7, 0.9, 4, 11), "org/model")
    assert llm == {
        "model": "org/model",
        "tensor_parallel_size": 2,
        "gpu_memory_utilization": 0.85,
        "max_model_len": 4096,
        "dtype": "bfloat16",
        "seed": 11,
    }
    assert sampling == {"n": 4, "temperature": 0.7, "top_p": 0.9, "max_tokens": 64, "seed": 11}
    unset = Namespace(tensor_parallel_size=None, gpu_memory_utilization=None, max_model_len=None, dtype=None)
    llm, sampling = vllm_kwargs(unset, GenSettings(max_new_tokens=8), "m")
    assert llm == {"model": "m", "tensor_parallel_size": 1, "seed": 0}  # vLLM's defaults for the rest
    assert sampling["temperature"] == 0.0 and sampling["top_p"] == 1.0 and sampling["max_tokens"] == 8


def test_partial_from_other_settings_is_set_aside(tmp_path):
    path = tmp_path / "o.csv.partial.jsonl"
    first = rowio.Partial(path, {"temperature": 0.0})
    first.append([{"key": "1#0", "samples": []}])
    first.close()
    again = rowio.Partial(path, {"temperature": 0.0})
    assert list(again.records) == ["1#0"] and again.set_aside is None
    again.close()
    other = rowio.Partial(path, {"temperature": 1.0})
    assert other.records == {} and other.set_aside is not None and other.set_aside.exists()
    other.close()


def test_resident_worker_loads_the_model_once_for_every_shard_and_writes_the_same_rows(model, tmp_path):
    """`[job] resident = true`: one worker process serves the 4 shards, loading the model once, and the merged
    output holds the rows one plain worker writes over the same prompts in the same batches (shards of 4 ids,
    batches of 4)."""
    inp = write_csv(tmp_path / "in.csv", list(range(16)))
    command = " ".join(argv(model, inp, Path("OUT"), 0, 0, "--engine", "transformers", "--batch-size", "4"))
    command = command.replace("--low 0 --high 0", "--low {low} --high {high}").replace("OUT", "{output}")
    job = tmp_path / "job.toml"
    job.write_text(f"""
[job]
name = "resident"
command = "{command}"
resident = true
env = {{ HF_HUB_OFFLINE = "1" }}
[shards]
input = "in.csv"
num_workers = 4
[resources]
gpus_per_worker = 0
max_parallel = 1
[outputs]
pattern = "out_{{low}}_{{high}}.csv"
merged = "merged.csv"
""")
    r = gputui("run", "--jobs", job, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    run_dir = tmp_path / "runs" / "resident"
    logs = sorted((run_dir / "logs").glob("shard-*.log"))
    assert len(logs) == 4 and all("wrote 4 rows" in log.read_text() for log in logs)  # each shard's own log
    loads = [log.read_text().count("loaded the transformers engine") for log in logs]
    assert loads == [1, 0, 0, 0]  # in the first shard's log: the worker started for it
    plain = worker(*argv(model, inp, tmp_path / "plain.csv", 0, 16, "--engine", "transformers", "--batch-size=4"))
    assert plain.returncode == 0, plain.stderr
    assert read_csv(run_dir / "outputs" / "merged.csv") == read_csv(tmp_path / "plain.csv")
