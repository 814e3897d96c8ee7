"""Which prompts become error rows instead of failing the shard, and how a failed batch finds them.

A prompt the engine cannot take becomes an error row: its id and row as usual, no continuation, and
`finish_reason = "error: <why>"`. That is a prompt that is not valid text (undecodable bytes), one too long
for the model's context, or one the engine raises a per-prompt error on (ValueError or TypeError: vLLM's
"longer than the maximum model length", a tokenizer's refusal). A batch call that raises one is split in
halves until the failing prompts stand alone, so the good prompts beside them still get real continuations.

What belongs to the engine, not to a row, still fails the shard: any other exception (CUDA out of memory,
a dead engine) at once, unchanged; and more than `max_in_a_row` prompts in a row that the engine raised on,
which is what a broken engine or setting looks like, rather than thousands of error rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from gputui.text_safety import one_line
from gputui.workers.engines import Result

ERROR_PREFIX = "error: "
REASON_WIDTH = 200  # characters of a reason kept in finish_reason: one line, still readable in a table
ROW_ERROR_TYPES = (ValueError, TypeError)  # per-prompt errors (UnicodeError is a ValueError)
MAX_IN_A_ROW = 32  # default --max-errors-in-a-row

_SURROGATE = re.compile("[\ud800-\udfff]")


class EngineFailure(RuntimeError):
    """The engine, not a row, failed: the shard fails with this one-line message."""


def finish_reason(reason: str) -> str:
    """`error: <reason>` on one line, clipped: the finish_reason of an error row."""
    text = one_line(reason)
    if len(text) > REASON_WIDTH:
        text = text[: REASON_WIDTH - 1] + "…"
    return ERROR_PREFIX + text


def is_error(finish: object) -> bool:
    return isinstance(finish, str) and finish.startswith(ERROR_PREFIX)


def exception_reason(exc: BaseException) -> str:
    """`ValueError: <its first line>`: what an engine said about one prompt."""
    first = next((line for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def text_problem(prompt: str) -> str | None:
    """Why a prompt is not valid text, or None. A byte that is not UTF-8 is read as a lone surrogate
    (U+DC80-U+DCFF, named here as the byte it was); JSON may also spell a lone surrogate as an escape.
    No tokenizer takes either, and no output file could hold it."""
    m = _SURROGATE.search(prompt)
    if m is None:
        return None
    code = ord(m.group())
    what = (
        f"undecodable byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"lone surrogate U+{code:04X}"
    )
    return f"prompt is not valid UTF-8 text ({what} at character {m.start()})"


def clean_text(text: str) -> str:
    """`text` writable as UTF-8: each lone surrogate becomes U+FFFD, the replacement character."""
    return _SURROGATE.sub("\ufffd", text) if not text.isascii() else text


class Isolator:
    """Calls the engine on a batch and answers one Result per prompt, error rows included.

    Counts the prompts in a row that the engine raised on (`in_a_row`, across batches: a prompt that
    generates resets it; a prompt refused before the engine saw it, as not text or too long, leaves it).
    """

    def __init__(self, generate: Callable[[list[str]], list[Result]], max_in_a_row: int = MAX_IN_A_ROW) -> None:
        self.generate = generate
        self.max_in_a_row = max_in_a_row
        self.in_a_row = 0
        self.calls = 0  # engine calls made, splits included

    def __call__(self, prompts: list[str]) -> list[Result]:
        results: list[Result | None] = [None] * len(prompts)
        sent: list[int] = []
        for i, p in enumerate(prompts):
            why = text_problem(p)
            if why:
                results[i] = Result(None, [], error=why)
            else:
                sent.append(i)
        if sent:
            for i, res in zip(sent, self._solve([prompts[i] for i in sent]), strict=True):
                results[i] = res
        return results  # type: ignore[return-value]  # every slot is filled

    def _solve(self, prompts: list[str]) -> list[Result]:
        """Left half before right: the prompts are answered in order, so `in_a_row` counts in row order."""
        self.calls += 1
        try:
            results = self.generate(prompts)
        except ROW_ERROR_TYPES as e:
            if len(prompts) > 1:
                mid = len(prompts) // 2
                return self._solve(prompts[:mid]) + self._solve(prompts[mid:])
            self._raised(e)
            return [Result(None, [], error=exception_reason(e))]
        if len(results) != len(prompts):
            raise EngineFailure(f"the engine answered {len(results)} results for {len(prompts)} prompts")
        if any(r.error is None for r in results):
            self.in_a_row = 0
        return results

    def _raised(self, exc: BaseException) -> None:
        self.in_a_row += 1
        if self.in_a_row > self.max_in_a_row:
            raise EngineFailure(
                f"the engine raised on {self.in_a_row} prompts in a row (last: {exception_reason(exc)}): "
                f"taken for an engine failure, not bad rows (--max-errors-in-a-row {self.max_in_a_row})"
            ) from exc
