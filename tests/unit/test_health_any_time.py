"""[health] rules that matter at any time: NaN/Inf and explosion after the window, and the stall rule (no new
step for stall_factor times the task's own pace), paused by phases and by gputui's own pause."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from gputui.engine.rules.health import HealthWatch, may_retry
from gputui.jobs.health_spec import HealthSpec, parse_health
from gputui.jobs.loader import job_checks
from gputui.jobs.spec import JobSpecError

T0 = 1000.0  # started_at


def watch(**kw) -> HealthWatch:
    return HealthWatch(HealthSpec(**kw), started_at=T0)


def event(kind: str, **kw):
    return SimpleNamespace(kind=kind, step=kw.pop("step", None), values=kw.pop("values", {}), **kw)


# --------------------------------------------------------------------------------------------------
# Whole run


def test_a_nan_after_the_window_still_breaks_after_the_task_was_marked_healthy():
    w = watch(window_s=300)
    assert w.log_line("step 1 loss=2.0", T0 + 10) is None
    assert w.healthy(T0 + 300)  # .healthy is written at the window's end, as before
    brk = w.log_line("step 9000 loss=nan lr=0.001", T0 + 3600)
    assert brk is not None and brk.rule == "nan" and brk.evidence == "loss=nan at step 9000"
    assert not w.healthy(T0 + 3601)
    w = watch(window_s=300)
    assert w.metrics(9000, {"loss": math.inf}, T0 + 3600).rule == "nan"


def test_an_explosion_after_the_window_still_breaks():
    w = watch(window_s=300, explode_above=1e4)
    assert w.metrics(1, {"loss": 5.0}, T0 + 1) is None
    brk = w.metrics(5000, {"loss": 2e4}, T0 + 900)
    assert brk is not None and brk.rule == "explode" and brk.evidence.startswith("loss=2e+04 at step 5000")
    w = watch(window_s=300)  # explode_ratio 10 against the first values, read inside the window
    for step, loss in enumerate([3.0, 2.9, 2.8, 2.7, 2.6], 1):
        assert w.metrics(step, {"loss": loss}, T0 + step) is None
    assert w.metrics(4000, {"loss": 0.5}, T0 + 800) is None
    brk = w.metrics(4001, {"loss": 30.0}, T0 + 801)
    assert brk is not None and brk.rule == "explode" and "explode_ratio = 10" in brk.evidence


def test_an_evaluation_line_is_not_the_training_loss():
    w = watch(explode_ratio=2.0)
    for step in range(1, 6):
        assert w.log_line(f"step {step} loss={1.0 / step:.3f}", T0 + step) is None
    assert w.log_line("| end of epoch   1 | time: 150.30s | valid loss   nan | valid ppl   nan", T0 + 7) is None
    assert w.log_line("Test set: Average loss: 50.0000, Accuracy: 10/10000 (0%)", T0 + 8) is None
    assert w.broken is None


# --------------------------------------------------------------------------------------------------
# stall_factor


def parse(table: dict) -> HealthSpec:
    return parse_health(job_checks("job.toml", Path(".")), table)


def test_stall_factor_is_off_by_default_and_checked():
    assert HealthSpec().stall_factor is None and parse({}).stall_factor is None
    assert parse({"stall_factor": 10}).stall_factor == 10.0
    assert parse({"stall_factor": False}).stall_factor is None
    for bad in (1, 0.5, "10", True, math.inf):
        with pytest.raises(JobSpecError, match=r"\[health\]\.stall_factor: expected a number above 1"):
            parse({"stall_factor": bad})


def steps_every_10_s(w: HealthWatch, n: int = 6, line: str = "step {step} loss=1.0") -> float:
    """n new steps at T0 + 10, 20, ...: a median step interval of 10 s. Returns the time of the last."""
    for step in range(1, n + 1):
        assert w.log_line(line.format(step=step), T0 + 10 * step) is None
        assert w.check(T0 + 10 * step) is None
    return T0 + 10 * n


def test_a_task_that_prints_but_makes_no_new_step_is_stalled():
    w = watch(stall_factor=9, no_output_s=600)
    last = steps_every_10_s(w)
    for t in range(1, 90):  # still printing, the same step again and a heartbeat: no new step
        assert w.log_line("step 6 loss=1.0" if t % 2 else "waiting for the data loader...", last + t) is None
        assert w.check(last + t) is None
    brk = w.check(last + 95)
    assert brk is not None and brk.rule == "stall" and not brk.deterministic and brk.step == 6
    assert brk.evidence == "stalled: no new step for 95 s after step 6 (median step 10 s, stall_factor = 9)"
    assert brk.reason.endswith("(stall)") and brk.value == 95
    assert may_retry(w.spec, brk)  # retried like a hang: a stuck loader or collective may not come back


def test_stall_is_off_by_default_and_needs_a_warm_up():
    w = watch(no_output_s=600)
    last = steps_every_10_s(w)
    w.log_line("heartbeat", last + 500)
    assert w.check(last + 550) is None
    w = watch(stall_factor=2, no_output_s=600)
    last = steps_every_10_s(w, n=4)  # three intervals: not yet its pace
    w.log_line("heartbeat", last + 100)
    assert w.check(last + 100) is None
    assert w.log_line("step 5 loss=1.0", last + 110) is None
    assert w.check(last + 131).rule == "stall"  # four intervals (10, 10, 10, 120): median 10


def test_a_count_that_restarts_each_epoch_still_advances():
    w = watch(stall_factor=3, no_output_s=600)
    for i, step in enumerate([1, 2, 3, 1, 2, 3, 1, 2], 1):
        w.log_line(f"epoch {i // 3} iter {step} loss 1.0", T0 + 10 * i)
        assert w.check(T0 + 10 * i + 9) is None


def test_eval_phase_pauses_the_rule_and_train_measures_from_its_return():
    w = watch(stall_factor=3, no_output_s=600)
    last = steps_every_10_s(w)
    assert w.event(event("phase", phase="eval"), last + 5) is None
    for t in range(10, 1000, 10):  # a long validation, printing its own progress
        w.log_line(f"Validation: {t // 10}/100 val loss 2.0", last + t)
        assert w.check(last + t) is None
    back = last + 1000
    assert w.event(event("phase", phase="train"), back) is None
    assert w.check(back + 29) is None
    brk = w.check(back + 31)
    assert brk is not None and brk.rule == "stall" and "median step 10 s" in brk.evidence


def test_gputui_pausing_the_task_is_not_a_stall():
    w = watch(stall_factor=3, no_output_s=600)
    last = steps_every_10_s(w)
    for t in range(0, 500, 5):
        w.hold(last + t)  # the scheduler, every poll while the task is paused
    assert w.check(last + 520) is None
    assert w.check(last + 526).rule == "stall"  # measured from the end of the pause


def test_hooks_progress_is_the_pace_and_the_same_steps_in_the_log_do_not_halve_it():
    w = watch(stall_factor=3, no_output_s=600)
    for step in range(1, 7):
        w.event(event("progress", done=float(step), total=100.0), T0 + 10 * step)
        w.log_line(f"step {step} loss 1.0", T0 + 10 * step + 1)  # the same step, read a poll later
    last = T0 + 60
    assert w.check(last + 29) is None
    brk = w.check(last + 31)
    assert brk is not None and "median step 10 s" in brk.evidence


def test_hooks_metrics_steps_and_lines_without_a_step_count_as_steps():
    w = watch(stall_factor=3, no_output_s=600)
    for step in range(1, 7):
        w.metrics(step, {"loss": 1.0}, T0 + 10 * step)
    assert w.check(T0 + 89) is None and w.check(T0 + 91).rule == "stall"
    w = watch(stall_factor=3, no_output_s=600)
    last = steps_every_10_s(w, line="Train Epoch: 1 [{step}0/60000 (0%)]\tLoss: 2.305000")  # mnist: no step
    w.log_line("Test set: Average loss: 0.0496, Accuracy: 9842/10000 (98%)", last + 5)  # not a training line
    assert w.check(last + 29) is None and w.check(last + 31).rule == "stall"


def test_a_silent_task_is_a_hang_first():
    w = watch(stall_factor=3, no_output_s=20)
    last = steps_every_10_s(w)
    brk = w.check(last + 31)
    assert brk is not None and brk.rule == "hang"
