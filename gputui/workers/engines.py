"""Generation engines for the continuation worker: vLLM on GPUs, transformers anywhere.

Both are imported only when chosen, so the worker (and its tests) start without either installed, and a
missing one is a clear error naming the extra to install instead of a traceback.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any

INSTALL = {"vllm": "pip install 'gputui[vllm]'", "transformers": "pip install 'gputui[transformers]'"}


class EngineMissingError(RuntimeError):
    """The chosen engine's package is not installed; the message says which extra to install."""


@dataclass
class Sample:
    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length" (hit max_new_tokens)
    completion_tokens: int


@dataclass
class Result:
    prompt_tokens: int | None  # None: not known (the engine refused the prompt before counting)
    samples: list[Sample]
    error: str | None = None  # why this prompt has no continuation: it becomes an error row


@dataclass
class GenSettings:
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    seed: int = 0
    chat_template: bool = False


# -- choosing --------------------------------------------------------------------------------------------


def gpu_visible() -> bool:
    """Whether this process may use a GPU; NVML first, so CUDA is not initialised before vLLM forks."""
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None and cvd.strip() in ("", "-1"):
        return False
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            if pynvml.nvmlDeviceGetCount() > 0:
                return True
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        pass
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def resolve_engine(name: str) -> str:
    """`auto` is vLLM when it is installed and a GPU is visible, else transformers."""
    if name != "auto":
        return name
    if importlib.util.find_spec("vllm") is not None and gpu_visible():
        return "vllm"
    return "transformers"


def load_engine(name: str, model: str, args: Any, settings: GenSettings):
    name = resolve_engine(name)
    if name == "vllm":
        return VllmEngine(model, args, settings)
    if name == "transformers":
        return TransformersEngine(model, args, settings)
    raise ValueError(f"unknown engine {name!r}; expected vllm, transformers or auto")


def _require(module: str, extra: str) -> None:
    for m in module.split(","):
        try:
            present = importlib.util.find_spec(m) is not None
        except ValueError:
            present = False
        if not present:
            raise EngineMissingError(f"the {extra} engine needs {m!r}, which is not installed: {INSTALL[extra]}")


# -- vLLM ------------------------------------------------------------------------------------------------


def vllm_kwargs(args: Any, settings: GenSettings, model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(LLM(...) kwargs, SamplingParams(...) kwargs) from the CLI; pure, so it is testable without vLLM.

    Options left unset are omitted so vLLM's own defaults apply (max_model_len from the model config,
    dtype "auto").
    """
    llm: dict[str, Any] = {"model": model, "tensor_parallel_size": int(args.tensor_parallel_size or 1)}
    if args.gpu_memory_utilization is not None:
        llm["gpu_memory_utilization"] = float(args.gpu_memory_utilization)
    if args.max_model_len is not None:
        llm["max_model_len"] = int(args.max_model_len)
    if args.dtype:
        llm["dtype"] = args.dtype
    llm["seed"] = int(settings.seed)
    sampling = {
        "n": int(settings.n),
        "temperature": float(settings.temperature),
        "top_p": 1.0 if settings.temperature == 0 else float(settings.top_p),
        "max_tokens": int(settings.max_new_tokens),
        "seed": int(settings.seed),
    }
    return llm, sampling


class VllmEngine:
    name = "vllm"

    def __init__(self, model: str, args: Any, settings: GenSettings) -> None:
        _require("vllm", "vllm")
        from vllm import LLM, SamplingParams

        llm_kwargs, sampling_kwargs = vllm_kwargs(args, settings, model)
        self.settings = settings
        self.llm = LLM(**llm_kwargs)
        self.params = SamplingParams(**sampling_kwargs)
        self.tokenizer = self.llm.get_tokenizer() if settings.chat_template else None

    def generate(self, prompts: list[str]) -> list[Result]:
        if self.settings.chat_template:
            prompts = [_chat(self.tokenizer, p) for p in prompts]
        outputs = self.llm.generate(prompts, self.params, use_tqdm=False)
        return [
            Result(
                len(o.prompt_token_ids or []),
                [
                    Sample(c.text, "length" if c.finish_reason == "length" else "stop", len(c.token_ids))
                    for c in o.outputs
                ],
            )
            for o in outputs
        ]


def _chat(tokenizer, prompt: str) -> str:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )


# -- transformers ----------------------------------------------------------------------------------------


class TransformersEngine:
    """Batched `generate` with left padding: greedy at temperature 0, seeded sampling otherwise.

    A prompt whose tokens plus `max_new_tokens` exceed the model's context (`--max-model-len`, else the
    config's `max_position_embeddings`) is left out of the batch and answered with an error: past it, a
    model with learned positions fails the whole batch (on a GPU, the whole process), one with rotary
    positions writes what it was never trained to.
    """

    name = "transformers"

    def __init__(self, model: str, args: Any, settings: GenSettings) -> None:
        _require("torch,transformers", "transformers")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

        self.torch = torch
        self.settings = settings
        set_seed(settings.seed)
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.tokenizer.padding_side = "left"  # decoder-only: new tokens must follow the prompt directly
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = _torch_dtype(torch, args.dtype)
        kwargs: dict[str, Any] = {} if dtype is None else {"dtype": dtype}
        self.device = "cpu"
        if torch.cuda.is_available():
            if torch.cuda.device_count() > 1 and not _fits_one_gpu(torch, model):
                kwargs["device_map"] = "auto"  # spread over the visible GPUs
            else:
                self.device = "cuda:0"
        self.model = AutoModelForCausalLM.from_pretrained(model, **kwargs)
        if "device_map" not in kwargs:
            self.model.to(self.device)
        else:
            self.device = str(next(self.model.parameters()).device)
        self.model.eval()
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        self.context = getattr(args, "max_model_len", None) or getattr(
            self.model.config, "max_position_embeddings", None
        )

    def generate(self, prompts: list[str]) -> list[Result]:
        torch, s = self.torch, self.settings
        tok = self.tokenizer
        if s.chat_template:
            texts = [_chat(tok, p) for p in prompts]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        else:
            enc = tok(prompts, return_tensors="pt", padding=True)
        lengths = enc["attention_mask"].sum(dim=1).tolist()
        results: list[Result | None] = [None] * len(prompts)
        for i, n in enumerate(lengths):
            why = too_long(n, s.max_new_tokens, self.context)
            if why:
                results[i] = Result(n, [], error=why)
        keep = [i for i, r in enumerate(results) if r is None]
        if keep:
            width = max(lengths[i] for i in keep)  # left padding: the kept prompts are the last `width` columns
            rows = torch.tensor(keep)
            enc = {k: v[rows][:, -width:].to(self.device) for k, v in enc.items()}
            for i, res in zip(keep, self._generate(enc), strict=True):
                results[i] = res
        return results  # type: ignore[return-value]  # every slot is filled

    def _generate(self, enc: dict[str, Any]) -> list[Result]:
        torch, s = self.torch, self.settings
        tok = self.tokenizer
        gen: dict[str, Any] = {
            "max_new_tokens": s.max_new_tokens,
            "num_return_sequences": s.n,
            "pad_token_id": tok.pad_token_id,
        }
        if s.temperature == 0:
            gen |= {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        else:
            gen |= {"do_sample": True, "temperature": s.temperature, "top_p": s.top_p, "top_k": None}
        with torch.inference_mode():
            out = self.model.generate(**enc, **gen)
        width = enc["input_ids"].shape[1]
        new = out[:, width:].tolist()
        prompt_tokens = enc["attention_mask"].sum(dim=1).tolist()
        results = []
        for i, n_prompt in enumerate(prompt_tokens):
            samples = []
            for ids in new[i * s.n : (i + 1) * s.n]:
                stop = next((j for j, t in enumerate(ids) if t in self.eos_ids), None)
                kept = ids if stop is None else ids[: stop + 1]  # count EOS, as vLLM does
                text = tok.decode(kept, skip_special_tokens=True)
                samples.append(Sample(text, "length" if stop is None else "stop", len(kept)))
            results.append(Result(int(n_prompt), samples))
        return results


def too_long(prompt_tokens: int, max_new_tokens: int, context: int | None) -> str | None:
    """Why a prompt cannot be continued within the model's context, or None when it can (or none is known)."""
    if not context or prompt_tokens + max_new_tokens <= context:
        return None
    return (
        f"prompt too long: {prompt_tokens} tokens + {max_new_tokens} new exceed the model's context of {context}"
    )


def _eos_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [] if ids is None else [ids])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _torch_dtype(torch, name: str | None):
    if not name or name == "auto":
        return "auto" if name == "auto" else None
    names = {
        "float16": "float16",
        "half": "float16",
        "bfloat16": "bfloat16",
        "float32": "float32",
        "float": "float32",
    }
    if name not in names:
        raise ValueError(f"unknown --dtype {name!r}; expected auto, float16, bfloat16 or float32")
    return getattr(torch, names[name])


def _fits_one_gpu(torch, model: str) -> bool:
    """Whether the weights (local files' size) fit in 90% of GPU 0's free memory; unknown size: assume not."""
    if not os.path.isdir(model):
        return False
    size = sum(
        e.stat().st_size
        for e in os.scandir(model)
        if e.is_file() and e.name.endswith((".safetensors", ".bin", ".pt"))
    )
    free, _ = torch.cuda.mem_get_info(0)
    return size * 1.0 < 0.9 * free
