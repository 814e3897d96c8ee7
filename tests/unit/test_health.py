"""[health]: the table's checks, log-line values, and each rule of the watch (time is passed in)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gputui.engine.rules.health import Break, HealthWatch, cuda_error_rule, may_retry
from gputui.engine.rules.log_values import parse_log_values, rounded_to_zero
from gputui.jobs.health_spec import HealthSpec, parse_health
from gputui.jobs.loader import job_checks, load_jobspec
from gputui.jobs.spec import JobSpecError

T0 = 1000.0  # started_at


def watch(**kw) -> HealthWatch:
    return HealthWatch(HealthSpec(**kw), started_at=T0)


# --------------------------------------------------------------------------------------------------
# parse_health


def parse(table: dict) -> HealthSpec:
    return parse_health(job_checks("job.toml", Path(".")), table)


def test_defaults():
    spec = parse({})
    assert spec == HealthSpec()
    assert (spec.window_s, spec.metric, spec.nan, spec.explode_above, spec.explode_ratio) == (
        300.0,
        "loss",
        True,
        None,
        10.0,
    )
    assert (spec.lr_zero, spec.stagnation_steps, spec.no_output_s, spec.retry_deterministic, spec.cuda_errors) == (
        True,
        0,
        600.0,
        False,
        True,
    )


def test_every_key():
    spec = parse(
        {
            "window_s": 60,
            "metric": "train/loss",
            "nan": False,
            "explode_above": 1e4,
            "explode_ratio": 4,
            "lr_zero": False,
            "stagnation_steps": 50,
            "no_output_s": 120.5,
            "retry_deterministic": True,
            "cuda_errors": False,
        }
    )
    assert spec == HealthSpec(60.0, "train/loss", False, 1e4, 4.0, False, 50, 120.5, True, False)
    assert isinstance(spec.window_s, float) and isinstance(spec.explode_ratio, float)


def test_false_turns_an_explode_rule_off():
    spec = parse({"explode_ratio": False, "explode_above": False})
    assert spec.explode_ratio is None and spec.explode_above is None


def test_unknown_key_gets_a_did_you_mean_hint():
    with pytest.raises(
        JobSpecError, match=r"^job.toml: \[health\]\.window: unknown key; did you mean 'window_s'\?"
    ):
        parse({"window": 10})
    with pytest.raises(JobSpecError, match=r"'max_attempts' belongs in \[retry\]"):
        parse({"max_attempts": 2})
    with pytest.raises(JobSpecError, match=r"unknown key; expected one of: window_s, metric"):
        parse({"zzz": 1})


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"window_s": -1}, "[health].window_s: expected a positive number, got -1 (int)"),
        ({"window_s": 0}, "[health].window_s: expected a positive number, got 0 (int)"),
        ({"window_s": "300"}, "[health].window_s: expected a positive number, got '300' (str)"),
        ({"nan": "yes"}, "[health].nan: expected true or false, got 'yes' (str)"),
        ({"metric": ""}, "[health].metric: expected a non-empty string, got '' (str)"),
        ({"metric": "lm  loss"}, "[health].metric: expected a metric name"),
        ({"metric": "loss "}, "[health].metric: expected a metric name"),
        ({"stagnation_steps": -3}, "[health].stagnation_steps: expected a non-negative integer, got -3 (int)"),
        ({"stagnation_steps": 2.5}, "[health].stagnation_steps: expected a non-negative integer, got 2.5"),
        ({"no_output_s": 0}, "[health].no_output_s: expected a positive number, got 0 (int)"),
        ({"explode_above": -5}, "[health].explode_above: expected a positive number (or false"),
        ({"explode_above": True}, "[health].explode_above: expected a positive number (or false"),
        ({"explode_above": math.inf}, "[health].explode_above: expected a positive number"),
        ({"explode_ratio": 0}, "[health].explode_ratio: expected a number above 1 (or false to turn it off)"),
        ({"explode_ratio": 1}, "[health].explode_ratio: expected a number above 1"),
        ({"explode_ratio": "10"}, "[health].explode_ratio: expected a number above 1"),
        ({"cuda_errors": 1}, "[health].cuda_errors: expected true or false, got 1 (int)"),
    ],
)
def test_bad_values_name_the_key_and_what_was_expected(table, message):
    with pytest.raises(JobSpecError) as e:
        parse(table)
    assert str(e.value).startswith(f"job.toml: {message}")


def test_a_job_file_with_health_loads(tmp_path):
    (tmp_path / "in.csv").write_text("data_id,x\n1,a\n")
    job = tmp_path / "job.toml"
    job.write_text(
        '[job]\nname = "t"\ncommand = "python w.py {low} {high}"\n'
        '[shards]\ninput = "in.csv"\nnum_workers = 1\n'
        "[health]\nwindow_s = 120\nexplode_above = 1e4\n"
    )
    spec = load_jobspec(job)
    assert spec.health == HealthSpec(window_s=120.0, explode_above=1e4)
    job.write_text(job.read_text() + "no_output = 60\n")
    with pytest.raises(JobSpecError, match=r"\[health\]\.no_output: unknown key; did you mean 'no_output_s'\?"):
        load_jobspec(job)


# --------------------------------------------------------------------------------------------------
# parse_log_values


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("step 10 loss=0.6931 lr=0.001", {"step": 10, "loss": 0.6931, "lr": 0.001}),
        ("loss=1.23", {"loss": 1.23}),
        ("loss: nan", {"loss": math.nan}),
        ("Loss 0.5", {"loss": 0.5}),
        ("lr 0.0", {"lr": 0.0}),
        ("lr 0", {"lr": 0.0}),
        ("lr=0.00e+00", {"lr": 0.0}),
        ("loss 2.31 lr 0.00", {"loss": 2.31}),  # f"{lr:.2f}" of 0.001: below the printed precision
        ("learning_rate: 0.0000", {}),
        ("lr=1e-3 grad_norm=inf", {"lr": 1e-3, "grad_norm": math.inf}),
        ("GRAD_NORM: -Inf", {"grad_norm": -math.inf}),
        ("epoch 1 | step 20/100 | loss 2.5E+01 | lr 3e-04", {"step": 20, "loss": 25.0, "lr": 3e-4}),
        (
            "{'loss': 2.3456, 'grad_norm': 1.23, 'learning_rate': 4.9e-05, 'epoch': 0.01}",
            {"loss": 2.3456, "grad_norm": 1.23, "lr": 4.9e-05},
        ),
        ('{"loss": NaN, "step": 7}', {"loss": math.nan, "step": 7}),
        (
            " iteration      427/    5000 | learning rate: 1.229919E-06 | lm loss: 8.567080E+00 | "
            "loss scale: 1.0 | grad norm: 35.518 | number of nan iterations: 0 |",
            {"step": 427, "lr": 1.229919e-06, "loss": 8.56708, "grad_norm": 35.518},
        ),
        ("iter 10: loss 4.2345, time 12.34ms, mfu 12.00%", {"step": 10, "loss": 4.2345}),
        ("32/32 [====] - 1s 10ms/step - loss: 0.6931 - accuracy: 0.5000", {"loss": 0.6931}),
        ("global_step=300 loss=.5", {"step": 300, "loss": 0.5}),
        ("step 1.5 loss 1", {"loss": 1.0}),  # a step is a whole number
        ("\x1b[32mloss\x1b[0m: 0.25 \x1b[1mlr\x1b[0m=2e-5", {"loss": 0.25, "lr": 2e-5}),
        ("Epoch 0:  10%| 1/10 [loss=9.1]\rEpoch 0:  20%| 2/10 [loss=0.693, v_num=0]\r\n", {"loss": 0.693}),
        # not values
        ("Loading weights...", {}),
        ("lrs=3", {}),
        ("val_loss=0.3 eval_loss: 0.2 train/loss 0.1", {}),
        ("loss_fn=mse lr_scheduler=cosine", {}),
        ("Loss function: CrossEntropyLoss", {}),
        ("loss=1.2.3", {}),
        ("lossy 3 steps=4 nanoseconds=5", {}),
        ("loss = nano", {}),
    ],
)
def test_parse_log_values(line, expected):
    got = parse_log_values(line)
    assert got.keys() == expected.keys()
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, nan_ok=True)


def test_parse_log_values_reads_the_configured_metric():
    assert parse_log_values("train/loss=0.25 val_loss=0.5", metric="train/loss") == {"train/loss": 0.25}
    assert parse_log_values("Val_Loss: 1e2", metric="val_loss") == {"val_loss": 100.0}


# --------------------------------------------------------------------------------------------------
# Rules on values


def test_nan_loss_breaks_and_is_deterministic():
    w = watch()
    assert w.metrics(1, {"loss": 2.0}, T0 + 1) is None
    brk = w.metrics(12, {"loss": math.nan}, T0 + 2)
    assert brk == Break("nan", "loss=nan at step 12", 12, brk.value, True)
    assert math.isnan(brk.value)
    assert brk.reason == "health check: loss=nan at step 12 (nan)"
    assert w.broken is brk
    assert w.metrics(13, {"loss": math.nan}, T0 + 3) is None  # the first break only
    assert w.broken is brk and not w.healthy(T0 + 1000)


def test_an_inf_grad_norm_with_a_finite_loss_is_a_skipped_fp16_step_not_a_break():
    w = watch()
    assert w.metrics(5, {"loss": 1.0, "grad_norm": math.inf}, T0 + 1) is None  # the loss scaler skips it
    assert w.metrics(6, {"loss": 0.9, "grad_norm": 2.0}, T0 + 2) is None
    brk = w.metrics(7, {"loss": math.inf, "grad_norm": math.nan}, T0 + 3)  # a divergence reaches the loss
    assert brk is not None and brk.rule == "nan" and brk.evidence == "loss=inf at step 7"
    brk = watch(metric="grad_norm").metrics(5, {"loss": 1.0, "grad_norm": math.inf}, T0 + 1)
    assert brk is not None and brk.evidence == "grad_norm=inf at step 5"  # unless it is the metric


def test_nan_rule_off():
    w = watch(nan=False)
    assert w.metrics(5, {"loss": math.nan, "grad_norm": math.inf}, T0 + 1) is None
    assert w.broken is None


def test_explode_above():
    w = watch(explode_above=1e4)
    assert w.metrics(39, {"loss": 9999.0}, T0 + 1) is None
    brk = w.metrics(40, {"loss": 3.1e5}, T0 + 2)
    assert brk is not None and brk.rule == "explode" and brk.deterministic
    assert brk.evidence == "loss=3.1e+05 at step 40 > explode_above 10000"
    assert (brk.step, brk.value) == (40, 3.1e5)


def test_explode_ratio_against_the_median_of_the_first_values():
    w = watch()  # explode_ratio = 10
    for step, loss in enumerate([6.0, 5.5, 0.05, 5.2, 5.1, 0.5, 40.0], start=1):
        # 0.05 is one lucky batch: the baseline is the median 5.2, so 5.5 or 40 is no explosion
        assert w.metrics(step, {"loss": loss}, T0 + step) is None
    brk = w.metrics(30, {"loss": 53.0}, T0 + 30)
    assert brk is not None and brk.rule == "explode" and brk.value == 53.0
    assert brk.evidence == "loss=53 at step 30 is 10.2x the median of its first values (5.2; explode_ratio = 10)"


def test_explode_ratio_early_and_off():
    assert watch().metrics(2, {"loss": 100.0}, T0 + 2) is None  # no baseline yet at the first value
    w = watch()
    w.metrics(1, {"loss": 2.0}, T0 + 1)
    assert w.metrics(2, {"loss": 25.0}, T0 + 2).rule == "explode"
    w = watch(explode_ratio=None)
    w.metrics(1, {"loss": 2.0}, T0 + 1)
    assert w.metrics(2, {"loss": 2000.0}, T0 + 2) is None


def test_explode_ratio_needs_a_positive_baseline():
    w = watch()
    w.metrics(1, {"loss": -3.0}, T0 + 1)
    assert w.metrics(2, {"loss": 500.0}, T0 + 2) is None


def test_lr_zero_after_the_first_step():
    w = watch()
    assert w.metrics(0, {"loss": 3.0, "lr": 0.0}, T0 + 1) is None  # warm-up starts at 0
    assert w.metrics(1, {"loss": 3.0, "lr": 1e-4}, T0 + 2) is None
    brk = w.metrics(20, {"loss": 2.0, "learning_rate": 0.0}, T0 + 3)
    assert brk == Break("lr_zero", "lr=0 at step 20", 20, 0.0, True)
    assert watch(lr_zero=False).metrics(5, {"lr": 0.0}, T0 + 1) is None


def test_lr_zero_twice_at_the_first_step_is_still_the_first_step():
    w = watch()
    assert w.metrics(1, {"lr": 0.0}, T0 + 1) is None
    assert w.log_line("step 1 lr=0.0", T0 + 2) is None  # the hook carried lr: the log is not read for it
    w2 = watch()
    assert w2.log_line("step 1 lr=0", T0 + 1) is None
    assert w2.log_line("step 1 lr=0", T0 + 2) is None
    assert w2.log_line("step 2 lr=0", T0 + 3).rule == "lr_zero"


@pytest.mark.parametrize(
    ("text", "rounded"),
    [
        ("0.00", True),
        ("0.0000", True),
        ("-0.000", True),
        ("0", False),
        ("0.", False),
        ("0.0", False),
        (".0", False),
        ("0e0", False),
        ("0.0e+00", False),
        ("0.00E-05", False),
        ("0.01", False),
        ("nan", False),
    ],
)
def test_rounded_to_zero(text, rounded):
    assert rounded_to_zero(text) is rounded


def test_lr_printed_as_zero_for_want_of_digits_does_not_stop_a_healthy_run():
    # AdamW at lr 0.001, logged with f"{lr:.2f}"
    w = watch()
    for step, loss in enumerate((2.31, 2.05, 1.87, 1.70), start=1):
        assert w.log_line(f"epoch 1 step {step} loss {loss:.2f} lr {0.001:.2f}", T0 + step) is None
    assert w.broken is None


def test_lr_zero_still_caught_when_printed_as_zero_or_exactly():
    for text in ("0", "0.0", "0.000e+00"):
        w = watch()
        assert w.log_line("step 1 loss 2.3 lr 0.001", T0 + 1) is None
        brk = w.log_line(f"step 2 loss 2.2 lr={text}", T0 + 2)
        assert brk is not None and brk.rule == "lr_zero", text
    w = watch()  # a hook's value is exact, whatever the log prints
    assert w.metrics(1, {"loss": 2.3, "lr": 1e-3}, T0 + 1) is None
    assert w.log_line("step 2 lr 0.00", T0 + 2) is None
    assert w.metrics(2, {"loss": 2.2, "lr": 0.0}, T0 + 3).rule == "lr_zero"


def test_stagnation():
    w = watch(stagnation_steps=3, explode_ratio=None)
    for step, loss in [(10, 1.0), (11, 0.9), (12, 0.95), (13, 0.9)]:
        assert w.metrics(step, {"loss": loss}, T0 + 1) is None
    brk = w.metrics(14, {"loss": 0.91}, T0 + 2)
    assert brk is not None and brk.rule == "stagnation" and brk.deterministic and brk.step == 14
    assert brk.evidence == "no new best loss for 3 steps (best 0.9 at step 11; stagnation_steps = 3)"


def test_stagnation_off_by_default():
    w = watch()
    for step in range(1, 200):
        assert w.metrics(step, {"loss": 1.0}, T0 + 1) is None


def test_configured_metric_is_the_one_watched():
    w = watch(metric="train_loss", explode_above=10.0)
    assert w.metrics(1, {"val_loss": 50.0}, T0 + 1) is None
    brk = w.metrics(2, {"train_loss": 50.0}, T0 + 2)
    assert brk is not None and brk.evidence.startswith("train_loss=50 at step 2")


# --------------------------------------------------------------------------------------------------
# The window


def test_window_expiry_makes_the_task_healthy_and_turns_lr_zero_and_stagnation_off():
    w = watch(window_s=300, stagnation_steps=5)
    assert w.metrics(1, {"loss": 5.0, "lr": 0.1}, T0 + 10) is None
    assert not w.healthy(T0 + 299.9)
    assert w.healthy(T0 + 300)
    assert w.metrics(50, {"loss": 6.0, "lr": 0.0}, T0 + 301) is None  # a schedule decayed to 0, a late plateau
    assert w.log_line("step 60 loss=7.0 lr=0", T0 + 302) is None
    assert w.broken is None and w.healthy(T0 + 303)


def test_hang_and_cuda_still_apply_after_the_window():
    w = watch(window_s=10, no_output_s=600)
    w.log_line("step 1 loss=1.0", T0 + 5)
    assert w.healthy(T0 + 20)
    brk = w.log_line("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", T0 + 30)
    assert brk is not None and brk.rule == "cuda_oom" and not w.healthy(T0 + 31)
    w = watch(window_s=10, no_output_s=600)
    w.log_line("step 1 loss=1.0", T0 + 5)
    assert w.healthy(T0 + 20)
    assert w.check(T0 + 606).rule == "hang"


# --------------------------------------------------------------------------------------------------
# Hang


def test_hang_before_any_output_is_measured_from_the_start():
    w = watch(no_output_s=600)
    assert w.check(T0 + 600) is None
    brk = w.check(T0 + 612)
    assert brk == Break("hang", "no log line or event for 612 s since it started (no_output_s = 600)", None, 612.0)
    assert not brk.deterministic and brk.reason.endswith("(hang)")
    assert w.check(T0 + 700) is None and w.broken is brk  # reported once


def test_hang_after_output_is_measured_from_the_last_output():
    w = watch(no_output_s=600)
    w.log_line("step 40 loss=1.0", T0 + 100)
    assert w.check(T0 + 650) is None  # 700 s after the start, 550 s after the line
    w.activity(T0 + 650)  # e.g. a progress event
    assert w.check(T0 + 1200) is None
    brk = w.check(T0 + 1262)
    assert brk is not None and brk.rule == "hang" and brk.step == 40
    assert brk.evidence == "no log line or event for 612 s after step 40 (no_output_s = 600)"


def test_any_event_counts_as_activity():
    class Ev:
        kind, step, values = "progress", None, {}

    w = watch(no_output_s=60)
    assert w.event(Ev(), T0 + 50) is None
    assert w.check(T0 + 100) is None and w.check(T0 + 111).rule == "hang"


# --------------------------------------------------------------------------------------------------
# CUDA / NCCL lines


def test_cuda_oom_line():
    line = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 79.15 GiB total)"
    w = watch()
    w.log_line("step 7 loss=1.0", T0 + 1)
    brk = w.log_line(line + "\n", T0 + 2)
    assert brk == Break("cuda_oom", line, 7, None, False)
    assert brk.reason == f"health check: {line} (cuda_oom)"


def test_nccl_error_line():
    line = "torch.distributed.DistBackendError: NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled system error"
    brk = watch().log_line(line, T0 + 1)
    assert brk is not None and brk.rule == "nccl_error" and not brk.deterministic


def test_cuda_error_lines_and_non_matches():
    assert cuda_error_rule("RuntimeError: CUDA error: an illegal memory access was encountered") == "cuda_error"
    assert cuda_error_rule("ncclInternalError: Internal check failed.") == "nccl_error"
    assert cuda_error_rule("host:1:2 [0] NCCL INFO Bootstrap : Using eth0") is None
    assert cuda_error_rule("host:1:2 [0] NCCL WARN NET/IB : No device found.") is None  # recoverable
    assert cuda_error_rule("step 10 loss=0.5") is None
    assert cuda_error_rule("slurmstepd: error: *** JOB 12 ON n1 CANCELLED AT 2026-12-02T16:55 ***") is None


def test_cuda_errors_off():
    w = watch(cuda_errors=False)
    assert w.log_line("RuntimeError: CUDA error: device-side assert triggered", T0 + 1) is None
    assert w.broken is None


# --------------------------------------------------------------------------------------------------
# Hook values and log values


def test_log_values_are_read_until_a_hook_event_carries_the_name():
    w = watch()
    brk = w.log_line("step 3 loss=nan", T0 + 1)
    assert brk is not None and brk.evidence == "loss=nan at step 3"

    w = watch(metric="val_acc")
    w.metrics(1, {"loss": 2.0}, T0 + 1)
    assert w.log_line("step 2 loss=nan", T0 + 2) is None  # the hook's loss wins
    brk = w.log_line("step 2 val_acc=nan", T0 + 3)  # the hooks never carried val_acc, the metric
    assert brk is not None and brk.evidence == "val_acc=nan at step 2"


def test_hook_metrics_event_through_event():
    class Ev:
        kind, step, values = "metrics", 9, {"loss": math.inf}

    brk = watch().event(Ev(), T0 + 1)
    assert brk is not None and brk.evidence == "loss=inf at step 9"


def test_may_retry():
    nan = Break("nan", "loss=nan", deterministic=True)
    oom = Break("cuda_oom", "CUDA out of memory")
    assert not may_retry(HealthSpec(), nan) and may_retry(HealthSpec(retry_deterministic=True), nan)
    assert may_retry(HealthSpec(), oom)


# --------------------------------------------------------------------------------------------------
# The clock the scheduler applies the rules with: a step of the wall clock is not silence


class _Clocks:
    """time.time, time.monotonic and CLOCK_BOOTTIME as the test sets them: `step` moves the wall clock alone
    (an NTP step, a VM resumed, `date -s`), `tick` lets real time pass on all three."""

    def __init__(self, monkeypatch):
        import time

        from gputui import clock

        self.wall, self.mono, self.boot = 1.8e9, 5000.0, 5000.0
        monkeypatch.setattr(time, "time", lambda: self.wall)
        monkeypatch.setattr(time, "monotonic", lambda: self.mono)
        monkeypatch.setattr(clock, "boottime", lambda: self.boot)

    def step(self, seconds: float) -> None:
        self.wall += seconds

    def tick(self, seconds: float) -> None:
        self.wall, self.mono, self.boot = self.wall + seconds, self.mono + seconds, self.boot + seconds


def _scheduler(tmp_path, spec: HealthSpec):
    """The scheduler's [health] checks (HealthChecks.check), around one attempt launched now and running."""
    from types import SimpleNamespace

    from gputui import clock
    from gputui.engine.attempt import Live
    from gputui.engine.health_checks import HealthChecks
    from gputui.engine.run_state import RunState
    from gputui.jobs.tasks import Status
    from gputui.rundir.paths import RunPaths

    events = []
    store = SimpleNamespace(add_event=lambda kind, message, task_id=None: events.append((kind, message)))
    state = RunState(store)
    state.tasks = {"t": SimpleNamespace(status=Status.RUNNING)}
    stops = SimpleNamespace(begin=lambda tasks: None)
    quiet = SimpleNamespace(info=lambda text: None)
    checks = HealthChecks(spec, RunPaths(tmp_path), state, store, stops, SimpleNamespace(unsynced=[]), quiet)
    log = tmp_path / "t.attempt1.log"
    log.write_text("")
    state.live = {"t": Live("t", 1, (), "t", str(log), clock.now())}
    checks.watch(state.live["t"])
    return SimpleNamespace(check=checks.check, events=events, live=state.live), log


def test_a_step_of_the_wall_clock_does_not_fire_the_hang_rule(tmp_path, monkeypatch):
    clocks = _Clocks(monkeypatch)
    host, log = _scheduler(tmp_path, HealthSpec(no_output_s=30))
    for step, jump in ((1, 0), (2, 7200), (3, 0), (4, -10800), (5, 0)):  # +2 h, then back to -1 h
        clocks.step(jump)
        host.check()  # the scheduler looks every second: between a step and the next line too
        clocks.tick(2)
        with log.open("a") as f:
            f.write(f"step {step} loss={1 / step:.3f}\n")
        host.check()
    clocks.tick(20)  # 20 s of real silence: under no_output_s
    host.check()
    assert host.events == [] and host.live["t"].health_break is None  # nor did 2 h of its window pass


def test_a_real_silence_of_no_output_s_fires_the_hang_rule_whatever_the_wall_clock(tmp_path, monkeypatch):
    clocks = _Clocks(monkeypatch)
    host, log = _scheduler(tmp_path, HealthSpec(no_output_s=30))
    log.write_text("step 1 loss=1.0\n")
    host.check()
    clocks.step(-3600)  # the wall clock going back must not hide the silence either
    clocks.tick(29)
    host.check()
    assert host.events == []
    clocks.tick(2)
    host.check()
    ((kind, message),) = host.events
    assert kind == "health" and "no log line or event for 31 s after step 1" in message
