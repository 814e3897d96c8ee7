"""What a training callback reports beyond what the model logged: the returned loss, the optimizers' lr."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gputui.hooks.step_values import LR_NAMES, optimizer_lrs, step_values


class SGD:
    def __init__(self, *groups: dict):
        self.param_groups = list(groups)


class Adam(SGD):
    pass


class Wrapper:  # DeepSpeed's optimizer holds the real one
    def __init__(self, optimizer):
        self.optimizer = optimizer


def test_a_model_that_logs_nothing_reports_its_returned_loss_and_its_lr():
    assert step_values({}, loss=0.5, lrs=[("lr-SGD", 0.1)]) == {"loss": 0.5, "lr": 0.1}
    assert step_values({}, loss=None, lrs=[]) == {}


def test_what_the_model_logged_wins():
    assert step_values({"Loss": 2.0}, loss=0.5, lrs=[]) == {"Loss": 2.0}  # the rules read it as loss
    assert step_values({"train_loss": 2.0}, loss=0.5, lrs=[]) == {"train_loss": 2.0, "loss": 0.5}
    for name in ("lr", "learning_rate", "Learning Rate"):
        assert step_values({name: 0.3}, lrs=[("lr-SGD", 0.1), ("lr-Adam", 0.2)]) == {name: 0.3}


def test_the_first_group_is_lr_the_others_keep_their_names_and_a_logged_name_its_value():
    lrs = [("lr-SGD/pg1", 0.1), ("lr-SGD/pg2", 0.01), ("lr-Adam", 0.001)]
    assert step_values({}, lrs=lrs) == {"lr": 0.1, "lr-SGD/pg2": 0.01, "lr-Adam": 0.001}
    # LearningRateMonitor's names, as it logged them (a float32 copy, maybe steps old), are left as they are
    logged = {"lr-SGD/pg1": 0.25, "lr-SGD/pg2": 0.025}
    assert step_values(logged, lrs=lrs) == {**logged, "lr": 0.1, "lr-Adam": 0.001}


def test_optimizer_lrs_are_named_as_lightnings_learning_rate_monitor_names_them():
    optimizers = [
        SGD({"lr": 0.1}),
        SGD({"lr": 0.2}, {"lr": 0.02}),
        Wrapper(Adam({"lr": 0.003, "name": "head"})),
        Adam({"lr": 0.004, "name": "backbone"}, {"lr": 0.0004}),
        SGD({"momentum": 0.9}),  # no lr: nothing to report
    ]
    assert optimizer_lrs(optimizers) == [
        ("lr-SGD", 0.1),
        ("lr-SGD-1/pg1", 0.2),
        ("lr-SGD-1/pg2", 0.02),
        ("lr-Adam/head", 0.003),
        ("lr-Adam-1/backbone", 0.004),
        ("lr-Adam-1/pg2", 0.0004),
    ]
    assert optimizer_lrs([]) == []


names = st.text(st.characters(codec="ascii", categories=("L", "N", "P")), min_size=1, max_size=12)
values = st.floats(allow_nan=True)


@given(
    logged=st.dictionaries(st.one_of(names, st.sampled_from(["loss", "lr", "learning_rate", "lr-SGD"])), values),
    loss=st.none() | values,
    lrs=st.lists(st.tuples(st.sampled_from(["lr-SGD", "lr-SGD/pg2", "lr-Adam", "lr-Adam-1"]), values), max_size=4),
)
def test_logged_values_are_never_changed_and_loss_and_lr_appear_when_known(logged, loss, lrs):
    out = step_values(logged, loss=loss, lrs=lrs)
    assert all(out[k] is v for k, v in logged.items())
    lowered = {k.strip().lower() for k in logged}
    assert ("loss" in out) == ("loss" in logged or (loss is not None and "loss" not in lowered))
    logs_lr = bool(lowered & LR_NAMES)
    assert ("lr" in out) == ("lr" in logged or (not logs_lr and bool(lrs)))
    if not logs_lr and lrs and "lr" not in logged:
        assert out["lr"] is lrs[0][1]
