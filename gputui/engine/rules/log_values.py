"""The training values in one line of a worker's log, for the [health] rules. Pure.

Only training values are read: a value that a word such as test, valid or eval qualifies on its line
(`| valid loss  5.81 |`, `Test set: Average loss: 0.0496`, fairseq's `valid on 'valid' subset | loss 9.52`)
is an evaluation's and is not the training loss, unless the job's [health] metric names it
(metric = "valid loss").
"""

from __future__ import annotations

import functools
import math
import re

from gputui.text_safety import log_line

_NUMBER = r"[-+]?(?:nan|inf(?:inity)?|(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)"
# The names a log may use for each value we read (Megatron-LM writes "learning rate", "grad norm",
# "iteration"; nanoGPT "iter"; Hugging Face prints a dict with 'learning_rate' and 'grad_norm').
_KNOWN_NAMES = (
    r"loss",
    r"lr",
    r"learning[ _]rate",
    r"grad(?:ient)?[ _]norm",
    r"global_step",
    r"step",
    r"iteration",
    r"iter",
)
_ALIASES = {
    "learning_rate": "lr",
    "learning rate": "lr",
    "grad norm": "grad_norm",
    "gradient_norm": "grad_norm",
    "gradient norm": "grad_norm",
    "global_step": "step",
    "iteration": "step",
    "iter": "step",
}
# A name is a whole word: not part of val_loss, train/loss, lrs or 10ms/step.
_NAME_CHAR = r"[\w/.\-]"
# Words that make the values after them an evaluation's, up to the next value they qualify: "valid loss 5.8",
# "Test set: Average loss: 0.05", "eval step 3: loss 2.1". Whole words only ("interval", "latest", "device"
# are not), case-insensitive. Hugging Face's eval_loss and Keras' val_loss are not "loss" to begin with.
_QUALIFIER = re.compile(r"\b(?:test(?:ing)?|val(?:id(?:ation|ating)?)?|eval(?:uation|uating)?|dev)\b", re.I)


@functools.lru_cache(maxsize=32)
def _values_re(metric: str) -> re.Pattern[str]:
    # The metric may hold spaces ("valid loss"): any run of blanks in the log matches one.
    own = r"\s+".join(re.escape(part) for part in metric.lower().split())
    names = [own, *_KNOWN_NAMES]
    return re.compile(
        rf"(?<!{_NAME_CHAR})(?P<q>['\"]?)(?P<name>{'|'.join(names)})(?P=q)"  # loss, 'loss' or "loss"
        rf"(?:\s*[=:]\s*|\s+)"  # loss=1, loss: 1, loss 1
        rf"(?P<vq>['\"]?)(?P<value>{_NUMBER})(?P=vq)(?!\w|\.\d)",
        re.I,
    )


@functools.lru_cache(maxsize=32)
def _evaluation_metric(metric: str) -> str | None:
    """The metric's canonical name when it names an evaluation's value itself ('val_loss', 'valid loss',
    'eval/accuracy'): no qualifier before it makes it someone else's. None for 'loss', 'ppl'..."""
    words = re.split(r"[^a-z]+", metric.lower())
    return canonical_name(metric) if any(_QUALIFIER.fullmatch(w) for w in words) else None


@functools.lru_cache(maxsize=256)  # called for each value of each line: the same few names again and again
def canonical_name(name: str) -> str:
    """'Learning_Rate' -> 'lr', 'grad norm' -> 'grad_norm', 'iter' -> 'step'; other names lower-cased, with
    their blanks as single spaces ('valid  loss' -> 'valid loss')."""
    name = " ".join(name.split()).lower()
    return _ALIASES.get(name, name)


def rounded_to_zero(text: str) -> bool:
    """Whether a printed number reads 0 only because it was printed with too few digits.

    A fixed-point zero with two or more decimals ('0.00', '0.0000': f"{lr:.2f}" of 0.001) is a value
    below the printed precision, not 0. A zero written as an integer ('0'), with one decimal ('0.0',
    Python's str(0.0)) or in exponent form ('0e0', '0.00e+00': a mantissa of 0 is exactly 0) is a 0.
    """
    digits = text.lstrip("+-").lower()
    if "e" in digits or float(digits) != 0:
        return False
    _, _, decimals = digits.partition(".")
    return len(decimals) >= 2


def parse_log_values(line: str, metric: str = "loss") -> dict[str, float]:
    """The known training values in one log line: loss, lr, grad_norm, step and `metric`, by canonical name.

    'step 10 loss=0.6931 lr=0.001' -> {'step': 10.0, 'loss': 0.6931, 'lr': 0.001}. Names are matched
    case-insensitively as whole words; numbers may be nan, inf, -inf or use exponents. The first value of
    a name in the line wins ('lm loss: 8.5 | loss scale: 1.0' gives loss 8.5). A step must be a
    non-negative integer or it is left out, and so is an lr that reads 0 only for want of digits
    (rounded_to_zero: 'lr 0.00' is a small lr, not lr = 0; 'lr 0' and 'lr=0.0' are 0). A value after a
    test / valid / val / eval / dev word (and before the next value) is an evaluation's and left out,
    unless `metric` names an evaluation's value itself ('val_loss', 'valid loss'). Terminal colour codes
    are ignored, and of a line that a progress bar rewrote with carriage returns only the last (the
    visible) part is read.
    """
    line = log_line(line, colour=False)
    out: dict[str, float] = {}
    exempt = _evaluation_metric(metric)
    scope = 0  # where the text that may qualify the next value starts
    for m in _values_re(metric).finditer(line):
        name = canonical_name(m["name"])
        start, scope_was = m.start(), scope
        if name != "step":
            scope = m.end()  # a qualifier reaches the next value it qualifies, across steps on the way
        if name in out or (name != exempt and _QUALIFIER.search(line, scope_was, start)):
            continue
        value = float(m["value"])
        if name == "step" and not (math.isfinite(value) and value >= 0 and value.is_integer()):
            continue
        if name == "lr" and rounded_to_zero(m["value"]):
            continue
        out[name] = value
    return out
