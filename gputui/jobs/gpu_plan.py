"""Choosing GPUs per worker for a model: the one-word run modes (`single`, `data_parallel`, `tensor_parallel`,
`auto`) turned into GPUs per worker, parallel workers and vLLM's `gpu_memory_utilization`. Pure: the model's
config.json and the GPUs' memory are handed in; the arithmetic is returned with the decision so a user can
check it (`gputui plan`).

The rule of thumb: weights take parameters x bytes per parameter (about 2 GB per billion parameters in fp16 /
bf16), split evenly over tensor-parallel GPUs; each GPU also needs room for its share of the KV cache and a
fixed overhead (CUDA context, activations, graphs). vLLM counts `gpu_memory_utilization` as a fraction of a
GPU's *total* memory and refuses to start when less than that is free, so the fraction chosen never asks for
more than the least free GPU has.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

GB = 1e9
DTYPE_BYTES = {"float32": 4, "fp32": 4, "float16": 2, "fp16": 2, "half": 2, "bfloat16": 2, "bf16": 2, "auto": 2}
DTYPE_BYTES |= {"int8": 1, "fp8": 1}
MODES = ("single", "data_parallel", "tensor_parallel", "auto")
OVERHEAD_GB = 1.5  # per GPU: CUDA context, activations, CUDA graphs (vLLM's own profile lands near this)
KV_SEQUENCES = 8  # the KV-cache reserve holds this many full-length sequences (the least worth batching)
MAX_UTILIZATION = 0.95  # vLLM's own ceiling in practice: leave the driver room
DEFAULT_LEN = 4096  # tokens per sequence the KV reserve is sized for, unless max_model_len is given
HEADROOM_GB = 0.5  # free memory left unclaimed on each GPU (other processes' drift)


class NoFit(ValueError):
    """The model cannot run on these GPUs in this mode; str() says why, with the numbers."""


@dataclass(frozen=True)
class ModelFacts:
    parameters: float  # count
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype: str
    max_model_len: int

    @property
    def bytes_per_parameter(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def weights_gb(self) -> float:
        return self.parameters * self.bytes_per_parameter / GB

    @property
    def kv_gb(self) -> float:
        """KV cache for KV_SEQUENCES sequences of max_model_len tokens (keys and values, every layer)."""
        per_token = 2 * self.layers * self.kv_heads * self.head_dim * self.bytes_per_parameter
        return per_token * self.max_model_len * KV_SEQUENCES / GB


@dataclass(frozen=True)
class Gpu:
    index: int
    total_gb: float
    free_gb: float


@dataclass(frozen=True)
class Decision:
    gpus_per_worker: int
    workers: int
    gpu_memory_utilization: float
    per_gpu_need_gb: float
    arithmetic: list[str] = field(default_factory=list)

    @property
    def summary(self) -> str:
        return (
            f"{self.gpus_per_worker} GPU(s) per worker, {self.workers} worker(s) at once, "
            f"gpu_memory_utilization {self.gpu_memory_utilization:.2f}"
        )


def model_facts(config: Mapping, dtype: str = "auto", max_model_len: int | None = None) -> ModelFacts:
    """From a Hugging Face config.json (Llama, Qwen, Mistral shapes): parameters counted from the shapes."""
    hidden = int(config["hidden_size"])
    layers = int(config["num_hidden_layers"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    inter = int(config.get("intermediate_size") or 4 * hidden)
    vocab = int(config["vocab_size"])
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2  # q, o; k, v
    mlp = 3 * hidden * inter  # gate, up, down
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    parameters = layers * (attention + mlp) + embeddings
    if dtype == "auto":
        dtype = str(config.get("torch_dtype") or "bfloat16")
    if dtype not in DTYPE_BYTES:
        raise NoFit(f"unknown dtype {dtype!r}; expected one of: {', '.join(DTYPE_BYTES)}")
    # Batch continuation rarely needs the model's whole context: 4096 tokens unless the job says otherwise.
    length = max_model_len or min(int(config.get("max_position_embeddings") or DEFAULT_LEN), DEFAULT_LEN)
    return ModelFacts(parameters, layers, heads, kv_heads, head_dim, dtype, length)


def per_gpu_need(model: ModelFacts, tp: int) -> float:
    return model.weights_gb / tp + model.kv_gb / tp + OVERHEAD_GB


def choose(model: ModelFacts, gpus: Sequence[Gpu], mode: str = "auto", tp: int | None = None) -> Decision:
    """GPUs per worker (a power of two dividing the attention heads), workers, and gpu_memory_utilization.

    single: one GPU, one worker; data_parallel: one GPU per worker, as many workers as GPUs fit it;
    tensor_parallel: `tp` GPUs per worker (default: all), as many workers as that allows; auto: the fewest
    GPUs per worker that fit the model, then as many workers as the GPUs allow (data parallelism is cheaper
    than tensor parallelism when a model fits)."""
    if mode not in MODES:
        raise NoFit(f"unknown mode {mode!r}; expected one of: {', '.join(MODES)}")
    if not gpus:
        raise NoFit("no GPU to run on")
    lines = [
        f"model: {model.parameters / 1e9:.2f} B parameters x {model.bytes_per_parameter} bytes ({model.dtype}) "
        f"= {model.weights_gb:.1f} GB of weights; KV cache for {KV_SEQUENCES} x {model.max_model_len} tokens "
        f"= {model.kv_gb:.1f} GB; {OVERHEAD_GB:g} GB overhead per GPU",
        "GPUs: " + ", ".join(f"{g.index}: {g.free_gb:.1f}/{g.total_gb:.0f} GB free" for g in gpus),
    ]
    sizes = [t for t in (1, 2, 4, 8, 16) if t <= len(gpus) and model.heads % t == 0]
    if mode in ("single", "data_parallel"):
        candidates = [1]
    elif mode == "tensor_parallel":
        want = tp or max(sizes)
        if want not in sizes:
            raise NoFit(
                f"tensor_parallel over {want} GPUs: it must be a power of two dividing the model's "
                f"{model.heads} attention heads and at most the {len(gpus)} GPUs here"
            )
        candidates = [want]
    else:
        candidates = sizes
    by_free = sorted(gpus, key=lambda g: -g.free_gb)
    for t in candidates:
        need = per_gpu_need(model, t)
        fitting = [g for g in by_free if g.free_gb - HEADROOM_GB >= need]
        lines.append(
            f"{t} GPU(s) per worker: {model.weights_gb:.1f}/{t} + {model.kv_gb:.1f}/{t} + {OVERHEAD_GB:g} = "
            f"{need:.1f} GB per GPU; {len(fitting)} GPU(s) have that free (+{HEADROOM_GB:g} GB headroom)"
        )
        if len(fitting) < t:
            continue
        workers = 1 if mode == "single" else len(fitting) // t
        used = fitting[: workers * t]
        least_free = min(g.free_gb for g in used)
        total = min(g.total_gb for g in used)
        utilization = round(min(MAX_UTILIZATION, (least_free - HEADROOM_GB) / total), 2)
        on = ", ".join(str(g.index) for g in used)
        lines.append(
            f"chosen: {t} GPU(s) per worker x {workers} worker(s) on GPUs {on}; "
            f"gpu_memory_utilization = min({MAX_UTILIZATION}, ({least_free:.1f} - {HEADROOM_GB:g}) / {total:.0f}) "
            f"= {utilization:.2f} (vLLM counts it against total memory and needs that much free)"
        )
        if utilization * total < need:
            continue
        return Decision(t, workers, utilization, need, lines)
    most = max(g.free_gb for g in gpus)
    most_gpus = max(candidates)
    where = "one GPU" if most_gpus == 1 else f"{most_gpus} GPUs"
    raise NoFit(
        f"the model does not fit {where} here in mode {mode!r}: it needs "
        f"{per_gpu_need(model, max(candidates)):.1f} GB per GPU and the most free on a GPU is {most:.1f} GB\n  "
        + "\n  ".join(lines)
    )
