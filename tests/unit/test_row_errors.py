"""The continuation worker's row-error rules: which prompts become error rows, how a failed batch finds
them, and when failures are the engine's (the shard fails) rather than the rows'."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gputui.jobs import tabular
from gputui.workers.engines import Result, Sample, too_long
from gputui.workers.row_errors import (
    REASON_WIDTH,
    EngineFailure,
    Isolator,
    clean_text,
    exception_reason,
    finish_reason,
    is_error,
    text_problem,
)


class FakeEngine:
    """Fails a whole call, as vLLM does, when any prompt in it is 'BAD...'; 'OOM' fails it as the device would."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, prompts: list[str]) -> list[Result]:
        self.calls.append(prompts)
        for p in prompts:
            if p.startswith("BAD"):
                raise ValueError(f"The decoder prompt {p!r} is longer than the maximum model length\nsecond line")
            if p == "OOM":
                raise RuntimeError("CUDA out of memory")
        return [Result(len(p), [Sample(p[::-1], "stop", len(p))]) for p in prompts]


def test_finish_reason_is_one_clipped_line():
    reason = finish_reason("prompt\ntoo long " + "x" * 500)
    assert reason.startswith("error: prompt too long x") and "\n" not in reason
    assert len(reason) == len("error: ") + REASON_WIDTH and reason.endswith("…")
    assert is_error(reason) and not is_error("length") and not is_error(None)


def test_exception_reason_names_the_type_and_first_line():
    assert exception_reason(ValueError("too long\nmore")) == "ValueError: too long"
    assert exception_reason(TypeError()) == "TypeError"


def test_undecodable_bytes_and_lone_surrogates_are_not_text():
    read = b"caf\xc3\xa9 \xff tail".decode("utf-8", tabular.KEEP_BAD_BYTES)  # as the worker reads a bad byte
    assert text_problem(read) == "prompt is not valid UTF-8 text (undecodable byte 0xff at character 5)"
    assert text_problem("a\ud800b") == "prompt is not valid UTF-8 text (lone surrogate U+D800 at character 1)"
    assert text_problem("café ✓ 日本") is None
    assert clean_text(read) == "café \ufffd tail" and clean_text("plain") == "plain"


def test_too_long_counts_the_new_tokens_against_the_context():
    assert too_long(250, 6, 256) is None
    assert too_long(251, 6, 256) == "prompt too long: 251 tokens + 6 new exceed the model's context of 256"
    assert too_long(10**6, 6, None) is None  # no known context: the engine decides


def test_a_failed_batch_is_split_until_the_bad_prompts_stand_alone():
    engine = FakeEngine()
    prompts = ["a", "b", "BAD1", "c", "d", "e", "BAD2", "f"]
    results = Isolator(engine)(prompts)
    assert [r.error for r in results] == [
        None,
        None,
        "ValueError: The decoder prompt 'BAD1' is longer than the maximum model length",
        None,
        None,
        None,
        "ValueError: The decoder prompt 'BAD2' is longer than the maximum model length",
        None,
    ]
    assert [r.samples[0].text for r in results if r.error is None] == ["a", "b", "c", "d", "e", "f"]
    assert len(engine.calls) < len(prompts) * 2  # halves, not one call per prompt and then some


def test_prompts_that_are_not_text_never_reach_the_engine():
    engine = FakeEngine()
    results = Isolator(engine)(["a", "b\udcff", "c"])
    assert engine.calls == [["a", "c"]]
    assert results[1].error.startswith("prompt is not valid UTF-8 text") and results[1].prompt_tokens is None
    assert results[0].samples[0].text == "a" and results[2].samples[0].text == "c"


def test_an_engine_wide_error_fails_at_once_without_splitting():
    engine = FakeEngine()
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        Isolator(engine)(["a", "b", "OOM", "c"])
    assert len(engine.calls) == 1


def test_every_prompt_failing_is_an_engine_failure_not_thousands_of_error_rows():
    engine = FakeEngine()
    isolate = Isolator(engine, max_in_a_row=3)
    with pytest.raises(EngineFailure, match=r"raised on 4 prompts in a row \(last: ValueError: The decoder"):
        isolate([f"BAD{i}" for i in range(1000)])
    assert len(engine.calls) < 20  # it stopped as soon as the streak passed the limit


def test_the_streak_runs_across_batches_and_a_good_prompt_ends_it():
    isolate = Isolator(FakeEngine(), max_in_a_row=2)
    isolate(["a", "BAD1", "BAD2"])
    assert isolate.in_a_row == 2
    isolate(["b"])
    assert isolate.in_a_row == 0
    isolate(["BAD3"])
    with pytest.raises(EngineFailure):
        isolate(["BAD4", "BAD5"])


def test_an_engine_answering_the_wrong_number_of_results_fails():
    with pytest.raises(EngineFailure, match="answered 1 results for 2 prompts"):
        Isolator(lambda prompts: [Result(1, [])])(["a", "b"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["ok", "BAD", "bin"]), min_size=1, max_size=40))
def test_every_good_prompt_gets_its_own_continuation_wherever_the_bad_ones_are(kinds):
    prompts = [f"{k}{i}\udc80" if k == "bin" else f"{k}{i}" for i, k in enumerate(kinds)]  # bin: a bad byte
    results = Isolator(FakeEngine(), max_in_a_row=len(prompts))(prompts)
    assert len(results) == len(prompts)
    for p, r in zip(prompts, results, strict=True):
        if p.startswith("ok"):
            assert r.error is None and r.samples[0].text == p[::-1]
        else:
            assert r.error is not None and not r.samples


def test_the_plan_reads_past_a_bad_byte_in_a_prompt_but_refuses_one_in_an_id(tmp_path):
    from gputui.jobs.loader import load_jobspec
    from gputui.jobs.plans import plan_job
    from gputui.jobs.spec import JobSpecError

    job = tmp_path / "job.toml"
    job.write_text('[job]\nname = "d"\ncommand = "w {low} {high}"\n[shards]\ninput = "in.csv"\nnum_workers = 2\n')
    (tmp_path / "in.csv").write_bytes(b"data_id,prompt\n1,fine\n2,bad \xff byte\n3,fine\n")
    assert [(t.low, t.high) for t in plan_job(load_jobspec(job)).tasks] == [(1, 3), (3, 4)]
    (tmp_path / "in.csv").write_bytes(b"data_id,prompt\n1,fine\nx\xffy,fine\n")
    with pytest.raises(JobSpecError, match=r"in.csv, row 2: the id 'x\\udcffy' is not valid UTF-8"):
        plan_job(load_jobspec(job))


def test_an_error_record_whose_id_holds_a_bad_byte_survives_a_resume(tmp_path):
    from gputui.workers import rows as rowio

    path, config = tmp_path / "o.csv.partial.jsonl", {"model": "m"}
    first = rowio.Partial(path, config)
    first.append([{"key": "x\udcff#0", "id": "x\udcff", "prompt_tokens": None, "samples": [], "error": "why"}])
    first.close()
    again = rowio.Partial(path, config)
    assert list(again.records) == ["x\udcff#0"] and rowio.is_error_record(again.records["x\udcff#0"])
    again.close()
    row = rowio.Row("x\udcff#0", "x\udcff", "p\udcff")
    (out,) = rowio.output_rows([row], again.records, "id", n=3)  # one error row, whatever --n
    assert out == {
        "id": "x\ufffd",
        "prompt": "p\ufffd",
        "sample": 0,
        "continuation": None,
        "finish_reason": "error: why",
        "prompt_tokens": None,
        "completion_tokens": 0,
    }
