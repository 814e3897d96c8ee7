"""Build a tiny Llama-style model and tokenizer offline, so the continuation worker can be tested for real.

No download and no GPU: a byte-level BPE tokenizer is trained on the given prompts (or a small built-in
corpus), a 2-layer Llama with random weights is saved next to it with `save_pretrained`, and an optional
few-second fit makes continuations read as words instead of byte soup.

    python -m gputui.workers.tiny_model --out DIR [--prompts FILE] [--fit-steps N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
TINY = "tiny:"  # --model tiny:DIR: the tiny model in DIR, built there first if it is not yet
FIT_STEPS = 120  # enough for continuations to read as words: about 3 s on one CPU core
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A scheduler runs one worker per shard of the input table.",
    "The model reads a prompt and writes a short continuation.",
    "Every shard covers the ids from low up to but not including high.",
    "GPUs are busy when jobs run and idle when the queue is empty.",
    "The cat sat on the mat and looked at the rain outside.",
    "Once upon a time there was a small model that liked to talk.",
    "Results are written to a partial file batch by batch.",
    "A worker that is killed starts again where it stopped.",
    "The weather today is sunny with a light wind from the west.",
    "She opened the door and saw the garden full of flowers.",
    "Numbers like one two three four five are easy to count.",
]


def build_tiny_model(
    out: str | os.PathLike[str],
    prompts: Iterable[str] | None = None,
    *,
    fit_steps: int = 0,
    seed: int = 0,
    vocab_size: int = 400,
    hidden_size: int = 64,
    heads: int = 4,
) -> Path:
    """Write tokenizer + model to `out` and return it; `prompts` extend the built-in corpus."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    texts = [t for t in [*CORPUS, *(prompts or [])] if t and t.strip()]

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=1, special_tokens=[PAD, BOS, EOS])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,  # the wrapper's Tokenizer is what transformers accepts
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        padding_side="left",
        model_max_length=256,
    )
    tok.chat_template = CHAT_TEMPLATE

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    if fit_steps > 0:
        _fit(model, tok, _fit_texts(list(prompts or [])), fit_steps)
    model.eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _fit_texts(prompts: list[str]) -> list[str]:
    """Each prompt followed by a corpus sentence, then EOS: the model learns to go on after a prompt and
    to stop after a sentence. (Fitted on the bare prompts + EOS it learns to stop at once: empty output.)"""
    tail = [c[0].lower() + c[1:] for c in CORPUS]
    joined = [f"{p.rstrip()} {tail[i % len(tail)]}" for i, p in enumerate(prompts) if p.strip()]
    return [t + EOS for t in [*CORPUS, *joined]]


def _fit(model, tok, texts: list[str], steps: int, batch: int = 32) -> None:
    """A fixed number of small-batch steps, cycling through the texts in order: the same seed and prompts give
    the same model on every machine, in about as long."""
    import torch

    enc = tok(texts, padding=True, truncation=True, return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for step in range(steps):
        at = (step * batch) % len(texts)
        rows = torch.arange(at, at + batch) % len(texts)
        ids, mask = enc["input_ids"][rows], enc["attention_mask"][rows]
        loss = model(input_ids=ids, attention_mask=mask, labels=labels[rows]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gputui.workers.tiny_model", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--prompts", type=Path, help="text file, one prompt a line, to train the tokenizer on")
    ap.add_argument("--fit-steps", type=int, default=0, help="training steps on the prompts, so output reads")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    prompts = a.prompts.read_text(encoding="utf-8").splitlines() if a.prompts else None
    started = time.monotonic()
    build_tiny_model(a.out, prompts, fit_steps=a.fit_steps, seed=a.seed)
    print(f"wrote tiny model to {a.out} in {time.monotonic() - started:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def ensure_tiny_model(out: Path, prompts: Iterable[str]) -> Path:
    """The tiny model in `out`, built (and fitted on `prompts`) by the first worker to get here; the others
    wait on the lock and find it built. Written to a temp folder and renamed: never half a model."""
    import fcntl

    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "config.json").exists():
            print(f"building the tiny sample model in {out} ({FIT_STEPS} training steps)", flush=True)
            staging = out.with_name(f".{out.name}.building")
            shutil.rmtree(staging, ignore_errors=True)
            build_tiny_model(staging, prompts, fit_steps=FIT_STEPS)
            staging.rename(out)
    return out
