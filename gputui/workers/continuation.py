"""Continue the prompts of one shard with a language model (vLLM or transformers), resumably.

Reads the rows whose id is in [low, high) by the planner's rules, generates `--n` continuations per
prompt batch by batch, and appends each finished batch to `<output>.partial.jsonl` (fsynced), so a
killed or preempted worker redoes at most one batch when it is started again. When the shard is
complete the output (CSV or JSONL) is written atomically and the partial file removed.

A prompt the engine cannot take (undecodable, too long, a per-prompt error from the engine) becomes an
error row, `finish_reason = "error: <why>"`, and the shard goes on (row_errors); `--max-errors N` fails it
past N such rows. On a resume an error row counts as done, unless `--retry-errors`.

    python -m gputui.workers.continuation --input data/prompts.csv --id-column data_id --low 0 --high 75 \\
        --output out/shard_0_75.csv --model meta-llama/Llama-3.1-8B-Instruct --engine auto

With `[job] resident = true` one worker takes shard after shard (gputui.hooks.resident_tasks) and keeps its
engine loaded while the next shard asks for the same one (model, engine and generation settings).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from gputui import hooks
from gputui.jobs.tabular import ColumnMissingError, MissingDependencyError
from gputui.workers import rows as rowio
from gputui.workers.engines import EngineMissingError, GenSettings, load_engine
from gputui.workers.row_errors import MAX_IN_A_ROW, EngineFailure, Isolator, finish_reason
from gputui.workers.tiny_model import TINY, ensure_tiny_model

DEFAULT_BATCH = {"vllm": 1024, "transformers": 8}
DELAY_ENV = "GPUTUI_CONTINUATION_BATCH_DELAY"  # seconds to sleep after each batch: lets tests kill mid-shard


class UsageError(Exception):
    """Bad input or arguments: exit status 2 and one line, no traceback, as for a missing engine."""


class TooManyErrors(Exception):
    """More error rows than --max-errors allows: the shard fails (exit status 1), its rows so far kept."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m gputui.workers.continuation", description=__doc__.split("\n")[0])
    ap.add_argument("--input", type=Path, required=True, help="CSV, JSONL or Parquet")
    ap.add_argument("--id-column", required=True)
    ap.add_argument("--low", type=int, required=True)
    ap.add_argument("--high", type=int, required=True)
    ap.add_argument("--output", type=Path, required=True, help=".csv or .jsonl")
    ap.add_argument("--model", required=True, help="local folder or hub name")
    ap.add_argument("--engine", choices=("vllm", "transformers", "auto"), default="auto")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--prompt-column", help="default: 'prompt' if present, else 'text'")
    src.add_argument("--template", help="str.format template over the row's columns, e.g. 'Q: {question}\\nA:'")
    ap.add_argument(
        "--chat-template", action="store_true", help="wrap each prompt in the tokenizer's chat template"
    )
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--n", type=int, default=1, help="continuations per prompt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, help="prompts per batch (default: 1024 on vLLM, 8 on transformers)")
    ap.add_argument("--tensor-parallel-size", type=int, default=1)
    ap.add_argument("--gpu-memory-utilization", type=float)
    ap.add_argument("--max-model-len", type=int)
    ap.add_argument("--dtype", help="auto, float16, bfloat16 or float32")
    ap.add_argument(
        "--max-errors",
        type=int,
        help="fail the shard once it has more than this many error rows (default: no limit)",
    )
    ap.add_argument(
        "--max-errors-in-a-row",
        type=int,
        default=MAX_IN_A_ROW,
        help="fail the shard when the engine raises on more than this many prompts in a row: an engine failure "
        f"(default {MAX_IN_A_ROW})",
    )
    ap.add_argument("--retry-errors", action="store_true", help="on a resume, redo the rows recorded as errors")
    a = ap.parse_args(argv)
    if a.n < 1 or a.max_new_tokens < 1 or (a.batch_size is not None and a.batch_size < 1):
        ap.error("--n, --max-new-tokens and --batch-size must be at least 1")
    if (a.max_errors is not None and a.max_errors < 0) or a.max_errors_in_a_row < 0:
        ap.error("--max-errors and --max-errors-in-a-row must be at least 0")
    if a.temperature < 0 or not 0 < a.top_p <= 1:
        ap.error("--temperature must be >= 0 and --top-p in (0, 1]")
    return a


def generation_config(a: argparse.Namespace) -> dict:
    """What makes two attempts' rows interchangeable; a partial file written with other settings is set aside."""
    return {
        "model": a.model,
        "prompt_column": a.prompt_column,
        "template": a.template,
        "chat_template": a.chat_template,
        "max_new_tokens": a.max_new_tokens,
        "temperature": a.temperature,
        "top_p": a.top_p,
        "n": a.n,
        "seed": a.seed,
    }


class Engines:
    """The engine loaded last, kept for the next shard that asks for the same one (a resident worker's)."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.engine = None
        self.loads = 0

    def get(self, a: argparse.Namespace, model: str, settings: GenSettings):
        key = (
            a.engine,
            model,
            a.tensor_parallel_size,
            a.gpu_memory_utilization,
            a.max_model_len,
            a.dtype,
            settings,
        )
        if key != self.key:
            self.engine = self.key = None  # the last one is let go first (its GPU memory)
            t0 = time.monotonic()
            self.engine = load_engine(a.engine, model, a, settings)
            self.key, self.loads = key, self.loads + 1
            took = time.monotonic() - t0
            print(
                f"loaded the {self.engine.name} engine in {took:.1f}s (load {self.loads} of this worker)",
                flush=True,
            )
        return self.engine


def run(a: argparse.Namespace, engines: Engines | None = None) -> int:
    try:
        rowio.output_format(a.output)  # fail before loading a model
        rows = rowio.select_rows(
            a.input, a.id_column, a.low, a.high, prompt_column=a.prompt_column, template=a.template
        )
    except (ColumnMissingError, MissingDependencyError, ValueError, OSError) as e:
        raise UsageError(str(e)) from e
    total = len(rows)
    a.output.parent.mkdir(parents=True, exist_ok=True)
    partial = rowio.Partial(rowio.partial_path(a.output), generation_config(a))
    if partial.set_aside:
        print(
            f"settings changed since the last attempt: moved its partial file to {partial.set_aside}", flush=True
        )
    recorded = [r for r in rows if r.key in partial.records]
    recorded_errors = [r for r in recorded if rowio.is_error_record(partial.records[r.key])]
    redo = {r.key for r in recorded_errors} if a.retry_errors else set()
    todo = [r for r in rows if r.key not in partial.records or r.key in redo]
    done = len(recorded) - len(redo)
    kept_errors = [r for r in recorded_errors if r.key not in redo]
    errors = len(kept_errors)
    first_error = _described(kept_errors[0], partial.records) if kept_errors else ""
    print(
        f"shard [{a.low}, {a.high}): {total} rows, {done} already done"
        + (f", {_error_rows(errors)} among them" if errors else "")
        + (f", {_error_rows(len(redo))} to retry" if redo else "")
        + (" (a torn last line was dropped)" if partial.torn else ""),
        flush=True,
    )
    hooks.progress(done, total)
    _check_max_errors(a, errors, first_error)

    tokens_total, started = 0, time.monotonic()
    if todo:
        settings = GenSettings(a.max_new_tokens, a.temperature, a.top_p, a.n, a.seed, a.chat_template)
        model = a.model
        if model.startswith(TINY):  # the sample's model: built here on first use, shared by every shard
            model = str(ensure_tiny_model(Path(model[len(TINY) :]), [r.prompt for r in rows]))
        engine = (engines or Engines()).get(a, model, settings)
        batch_size = a.batch_size or DEFAULT_BATCH[engine.name]
        print(f"engine {engine.name}, model {a.model}, batch size {batch_size}", flush=True)
        delay = float(os.environ.get(DELAY_ENV) or 0)
        isolate = Isolator(engine.generate, a.max_errors_in_a_row)
        started = time.monotonic()
        for b, start in enumerate(range(0, len(todo), batch_size), 1):
            batch = todo[start : start + batch_size]
            t0 = time.monotonic()
            results = isolate([r.prompt for r in batch])
            partial.append([_record(r, res, b) for r, res in zip(batch, results, strict=True)])
            dt = max(time.monotonic() - t0, 1e-9)
            tokens = sum(s.completion_tokens for res in results for s in res.samples)
            tokens_total += tokens
            done += len(batch)
            for r, res in zip(batch, results, strict=True):
                if res.error is not None:
                    errors += 1
                    first_error = first_error or _described(r, partial.records)
                    print(f"error row: {_described(r, partial.records)}", flush=True)
            hooks.progress(done, total)
            hooks.log_metrics(b, tokens_per_s=tokens / dt, rows_per_s=len(batch) / dt, error_rows=errors)
            if b == 1:
                hooks.mark_healthy()
            print(
                f"processed {done}/{total} rows ({len(batch) / dt:.1f} rows/s, {tokens / dt:.0f} tokens/s)"
                + (f", {_error_rows(errors)}" if errors else ""),
                flush=True,
            )
            _check_max_errors(a, errors, first_error)
            if delay:
                time.sleep(delay)

    out_rows = list(rowio.output_rows(rows, partial.records, a.id_column, a.n))
    columns = [a.id_column, "prompt", *(["sample"] if a.n > 1 else [])]
    columns += ["continuation", "finish_reason", "prompt_tokens", "completion_tokens"]
    rowio.write_output(a.output, out_rows, columns)
    partial.remove()
    elapsed = max(time.monotonic() - started, 1e-9)
    print(
        f"wrote {len(out_rows)} rows to {a.output}" + (f" ({_error_rows(errors)})" if errors else ""), flush=True
    )
    hooks.mark_done(rows=total, outputs=len(out_rows), error_rows=errors, tokens_per_s=tokens_total / elapsed)
    return 0


def _record(row: rowio.Row, res, batch: int) -> dict:
    rec = {
        "key": row.key,
        "id": row.id,
        "batch": batch,
        "prompt_tokens": res.prompt_tokens,
        "samples": [
            {"text": s.text, "finish_reason": s.finish_reason, "completion_tokens": s.completion_tokens}
            for s in res.samples
        ],
    }
    if res.error is not None:
        rec["error"] = res.error
    return rec


def _error_rows(n: int) -> str:
    return f"{n} error row{'' if n == 1 else 's'}"


def _described(row: rowio.Row, records: dict[str, dict]) -> str:
    """`id 7: error: <why>`; the id as repr() writes it, so a bad byte in it shows as an escape."""
    return f"id {row.id!r}: {finish_reason(records[row.key]['error'])}"


def _check_max_errors(a: argparse.Namespace, errors: int, first_error: str) -> None:
    if a.max_errors is not None and errors > a.max_errors:
        raise TooManyErrors(
            f"shard [{a.low}, {a.high}): {_error_rows(errors)}, more than --max-errors {a.max_errors} "
            f"(first: {first_error})"
        )


def main(argv: list[str] | None = None) -> int:
    """One shard from the command line, or, as a resident worker, every shard gputui hands it."""
    engines, code = Engines(), 0
    for task in hooks.resident_tasks(argv):
        code = shard(task.args, engines)
        if code:
            task.fail(code=code)
    return code


def shard(argv: list[str], engines: Engines) -> int:
    try:
        a = parse_args(argv)
    except SystemExit as e:  # argparse said why on stderr
        return e.code if isinstance(e.code, int) else 2
    try:
        return run(a, engines)
    except (EngineMissingError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        hooks.mark_failed(str(e))
        return 2
    except (TooManyErrors, EngineFailure) as e:  # the rows so far stay in the partial file for a resume
        print(f"error: {e}", file=sys.stderr, flush=True)
        hooks.mark_failed(str(e))
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
