"""vLLM's offline API as the continuation worker meets it (LLM, SamplingParams, RequestOutput's fields),
for machines without a GPU, where vLLM cannot run. It records each call as a JSON line in
$FAKE_VLLM_CALLS and continues a prompt with its words reversed, one token per word; a prompt whose last
word is "stop" ends early with finish reason "stop", like an EOS. Like vLLM, a call fails as a whole when
one of its prompts has more tokens (words) than `max_model_len` (ValueError, with vLLM's message); a
prompt holding the word "OOM" fails the call as CUDA running out of memory would."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field


def _record(**call) -> None:
    with open(os.environ["FAKE_VLLM_CALLS"], "a") as f:
        f.write(json.dumps(call) + "\n")


class SamplingParams:
    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs


@dataclass
class CompletionOutput:
    text: str
    token_ids: list[int]
    finish_reason: str


@dataclass
class RequestOutput:
    prompt: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)


class LLM:
    def __init__(self, **kwargs) -> None:
        _record(init=kwargs)
        self.max_model_len = kwargs.get("max_model_len")

    def get_tokenizer(self):
        raise NotImplementedError("the fake has no chat template")

    def generate(self, prompts, params: SamplingParams, use_tqdm: bool = True) -> list[RequestOutput]:
        _record(generate=len(prompts), sampling=params.kwargs, use_tqdm=use_tqdm)
        for p in prompts:  # vLLM validates every request before it generates any
            n = len(p.split())
            if self.max_model_len is not None and n > self.max_model_len:
                raise ValueError(
                    f"The decoder prompt (length {n}) is longer than the maximum model length of "
                    f"{self.max_model_len}. Make sure that `max_model_len` is no smaller than the number of "
                    "text tokens."
                )
            if "OOM" in p.split():
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        out = []
        for p in prompts:
            words = p.split()
            stop = words[-1] == "stop"
            reply = words[::-1][: params.kwargs["max_tokens"]]
            samples = [
                CompletionOutput(" ".join(reply), list(range(len(reply))), "stop" if stop else "length")
                for _ in range(params.kwargs["n"])
            ]
            out.append(RequestOutput(p, list(range(len(words))), samples))
        return out
