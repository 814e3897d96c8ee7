"""The `auto` run mode's arithmetic for real model shapes on 1-8 GPUs of 12/24/80 GB, and refusals that say
why. Configs are the models' published config.json shapes (Qwen2.5 family)."""

from __future__ import annotations

import pytest

from gputui.jobs.gpu_plan import Gpu, NoFit, choose, model_facts

QWEN = {  # name: (hidden, layers, heads, kv heads, intermediate, vocab, tied embeddings)
    "0.5B": (896, 24, 14, 2, 4864, 151936, True),
    "1.5B": (1536, 28, 12, 2, 8960, 151936, True),
    "7B": (3584, 28, 28, 4, 18944, 152064, False),
    "14B": (5120, 48, 40, 8, 13824, 152064, False),
    "32B": (5120, 64, 40, 8, 27648, 152064, False),
    "72B": (8192, 80, 64, 8, 29568, 152064, False),
}


def config(name: str) -> dict:
    hidden, layers, heads, kv, inter, vocab, tied = QWEN[name]
    return {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "intermediate_size": inter,
        "vocab_size": vocab,
        "tie_word_embeddings": tied,
        "torch_dtype": "bfloat16",
        "max_position_embeddings": 32768,
    }


def gpus(n: int, gb: float, free: float | None = None) -> list[Gpu]:
    return [Gpu(i, gb, gb - 0.5 if free is None else free) for i in range(n)]


@pytest.mark.parametrize(
    "name, billions", [("0.5B", 0.49), ("1.5B", 1.54), ("7B", 7.62), ("14B", 14.77), ("32B", 32.76), ("72B", 72.7)]
)
def test_parameters_are_counted_from_the_shapes(name, billions):
    assert model_facts(config(name)).parameters / 1e9 == pytest.approx(billions, rel=0.01)


@pytest.mark.parametrize(
    "name, n, gb, per_worker, workers",
    [
        ("0.5B", 1, 12, 1, 1),
        ("0.5B", 8, 24, 1, 8),  # fits one GPU: data parallel over all eight
        ("1.5B", 4, 12, 1, 4),
        ("7B", 1, 24, 1, 1),
        ("7B", 2, 12, 2, 1),  # 15 GB of weights: split over two 12 GB GPUs
        ("7B", 8, 12, 2, 4),
        ("7B", 8, 80, 1, 8),
        ("14B", 2, 24, 2, 1),
        ("14B", 8, 80, 1, 8),
        ("32B", 1, 80, 1, 1),
        ("32B", 4, 24, 4, 1),
        ("72B", 8, 80, 4, 2),  # 145 GB of weights: four 80 GB GPUs per worker, two workers
        ("72B", 8, 24, 8, 1),
    ],
)
def test_auto_picks_the_fewest_gpus_per_worker_that_fit_then_as_many_workers_as_gpus_allow(
    name, n, gb, per_worker, workers
):
    d = choose(model_facts(config(name)), gpus(n, gb))
    assert (d.gpus_per_worker, d.workers) == (per_worker, workers)
    assert config(name)["num_attention_heads"] % d.gpus_per_worker == 0
    assert d.gpu_memory_utilization * gb >= d.per_gpu_need_gb  # vLLM gets at least what the model needs
    assert d.gpu_memory_utilization <= 0.95
    assert any(line.startswith("chosen:") for line in d.arithmetic)


def test_utilization_never_asks_for_more_than_the_least_free_gpu_has():
    busy = [Gpu(0, 80, 80 - 0.5), Gpu(1, 80, 50.0)]  # someone holds 30 GB of GPU 1
    d = choose(model_facts(config("7B")), busy, mode="data_parallel")
    assert d.workers == 2 and d.gpu_memory_utilization == pytest.approx((50.0 - 0.5) / 80, abs=0.01)


def test_modes():
    model = model_facts(config("7B"))
    assert choose(model, gpus(8, 80), mode="single").workers == 1
    assert choose(model, gpus(8, 80), mode="data_parallel").workers == 8
    d = choose(model, gpus(8, 80), mode="tensor_parallel", tp=4)
    assert (d.gpus_per_worker, d.workers) == (4, 2)


def test_refusals_say_why_with_the_numbers():
    with pytest.raises(NoFit, match=r"does not fit 4 GPUs here in mode 'auto': it needs [\d.]+ GB per GPU"):
        choose(model_facts(config("72B")), gpus(4, 24))
    with pytest.raises(NoFit, match="does not fit one GPU"):
        choose(model_facts(config("7B")), gpus(8, 12), mode="single")
    with pytest.raises(NoFit, match="power of two dividing the model's 28 attention heads"):
        choose(model_facts(config("7B")), gpus(8, 80), mode="tensor_parallel", tp=8)
    with pytest.raises(NoFit, match="no GPU"):
        choose(model_facts(config("7B")), [])
