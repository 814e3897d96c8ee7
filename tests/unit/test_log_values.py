"""Log lines as real training scripts print them: only the training values feed the [health] rules, an
evaluation's loss does not (unless the job's metric names it)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gputui.engine.rules.log_values import parse_log_values

# PyTorch examples' word_language_model/main.py
WLM_TRAIN = "| epoch   1 |   200/ 2983 batches | lr 20.00 | ms/batch 45.67 | loss  7.63 | ppl  2065.43"
WLM_VALID = "| end of epoch   1 | time: 150.30s | valid loss  5.81 | valid ppl   334.23"
WLM_TEST = "| End of training | test loss  5.70 | test ppl   298.67"
# PyTorch examples' mnist/main.py
MNIST_TRAIN = "Train Epoch: 1 [0/60000 (0%)]\tLoss: 2.305000"
MNIST_TEST = "Test set: Average loss: 0.0496, Accuracy: 9842/10000 (98%)"
# Hugging Face Trainer
HF_TRAIN = "{'loss': 2.1, 'grad_norm': 1.8312, 'learning_rate': 4.9e-05, 'epoch': 0.1}"
HF_EVAL = "{'eval_loss': 1.9, 'eval_runtime': 2.13, 'eval_samples_per_second': 50.1, 'epoch': 1.0}"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (WLM_TRAIN, {"lr": 20.0, "loss": 7.63}),
        (WLM_VALID, {}),
        (WLM_TEST, {}),
        (MNIST_TRAIN, {"loss": 2.305}),
        (MNIST_TEST, {}),
        (HF_TRAIN, {"loss": 2.1, "grad_norm": 1.8312, "lr": 4.9e-05}),
        (HF_EVAL, {}),
        # fairseq: the qualifier is a few words and a separator before the value
        ("epoch 001 | valid on 'valid' subset | loss 9.52 | nll_loss 9.2 | ppl 736.4 | num_updates 100", {}),
        # nanoGPT: the training value first, the evaluation's after it
        ("step 2000: train loss 1.0123, val loss 1.2345", {"step": 2000, "loss": 1.0123}),
        # a qualifier reaches the next value only: the training loss after an evaluation's is read
        ("step 100 | val loss 2.5 | loss 2.3", {"step": 100, "loss": 2.3}),
        # ... across a step on the way, which it qualifies too (an evaluation's own count)
        ("eval step 10: loss 2.3", {}),
        ("Validation at iteration 500: loss 2.31", {}),
        ("Evaluating: loss=nan", {}),
        # whole words only
        ("interval 5 latest loss 2.0 device cuda:0 retrieval", {"loss": 2.0}),
    ],
)
def test_only_training_values_are_read(line, expected):
    got = parse_log_values(line)
    assert got.keys() == expected.keys(), got
    for k, v in expected.items():
        assert got[k] == pytest.approx(v)


def test_a_metric_that_names_the_evaluation_reads_it():
    assert parse_log_values(WLM_VALID, metric="valid loss") == {"valid loss": 5.81}
    assert parse_log_values(WLM_TRAIN, metric="valid loss") == {"lr": 20.0, "loss": 7.63}
    assert parse_log_values("epoch 3 validation: val_loss=0.31", metric="val_loss") == {"val_loss": 0.31}
    assert parse_log_values(WLM_TEST, metric="test loss") == {"test loss": 5.70}


def test_a_metric_that_does_not_name_the_evaluation_reads_the_training_value_only():
    assert parse_log_values(WLM_TRAIN, metric="ppl") == {"lr": 20.0, "loss": 7.63, "ppl": 2065.43}
    assert parse_log_values(WLM_VALID, metric="ppl") == {}


_QUALIFIERS = st.sampled_from(["test", "Test set: Average", "valid", "val", "Validation", "eval", "EVALUATION"])
_VALUES = st.floats(allow_nan=True, allow_infinity=True, width=32)


@given(_QUALIFIERS, _VALUES, _VALUES)
def test_a_qualified_value_never_reads_as_the_training_loss(qualifier, eval_value, train_value):
    got = parse_log_values(f"{qualifier} loss {eval_value!r}")
    assert "loss" not in got
    got = parse_log_values(f"step 7 | {qualifier} loss {eval_value!r} | loss {train_value!r}")
    assert got["step"] == 7 and (got["loss"] == train_value or math.isnan(train_value) and math.isnan(got["loss"]))
