"""Energy per attempt: a GPU's energy between two samples (its counter; power x time where it has none) shared
among the attempts that held it, as the meter adds it up sample after sample and writes it."""

from __future__ import annotations

import pytest

from gputui.engine.accounting import Meter
from gputui.engine.rules.energy import Reading, Used, interval_energy, share
from gputui.executors.ownership import AttemptProcesses
from gputui.gpus.probe import GIB, GpuSnapshot
from gputui.gpus.simulated import SimulatedProbe
from gputui.results.report import energy_text, gpu_totals, render_report
from gputui.rundir.records import AttemptRecord
from gputui.views.status_view import totals_line

NOBODY = AttemptProcesses(None, None, None)


def test_the_counter_gives_the_joules_between_two_samples():
    assert interval_energy(Reading(0.0, 5_000.0, 100.0), Reading(2.0, 605_000.0, 100.0), 2.0) == Used(600.0, False)


def test_a_counter_that_went_down_was_reset_and_that_interval_is_not_counted():
    # The driver reloaded: the counter starts again from 0. Not a negative energy, not power x time either.
    assert interval_energy(Reading(0.0, 9_000_000.0, 300.0), Reading(1.0, 200.0, 300.0), 1.0) is None


def test_a_missing_counter_falls_back_to_power_times_time_marked_estimated():
    assert interval_energy(Reading(0.0, None, 100.0), Reading(4.0, None, 300.0), 4.0) == Used(800.0, True)
    assert interval_energy(Reading(0.0, 1000.0, None), Reading(4.0, None, 250.0), 4.0) == Used(1000.0, True)
    assert interval_energy(Reading(0.0, None, None), Reading(4.0, None, None), 4.0) is None  # nothing known


def test_a_gpu_held_by_one_attempt_all_the_interval_gives_it_all():
    assert share(600.0, 2.0, {"a": (0.0, 2.0)}) == {"a": 600.0}


def test_two_attempts_on_one_gpu_for_different_parts_of_an_interval_share_by_their_time():
    # a held it for the first 4 s of 10, b for the last 6: at the interval's mean rate (100 J/s), 400 and 600.
    assert share(1000.0, 10.0, {"a": (0.0, 4.0), "b": (4.0, 10.0)}) == pytest.approx({"a": 400.0, "b": 600.0})
    # With the GPU idle between them (4 s to 6 s), that piece is nobody's.
    assert share(1000.0, 10.0, {"a": (0.0, 4.0), "b": (6.0, 10.0)}) == pytest.approx({"a": 400.0, "b": 400.0})


def test_attempts_on_one_gpu_at_once_share_each_piece_equally():
    # Both for 0-5 s (250 J each), b alone for 5-10 s (500 J).
    assert share(1000.0, 10.0, {"a": (0.0, 5.0), "b": (0.0, 10.0)}) == pytest.approx({"a": 250.0, "b": 750.0})
    assert share(90.0, 0.0, {"a": (0.0, 0.0), "b": (0.0, 0.0)}) == {"a": 45.0, "b": 45.0}  # no time: equally
    assert share(90.0, 3.0, {"a": (-1.0, 9.0)}) == {"a": 90.0}  # a span beyond the interval is cut to it


def _gpu(index: int, energy_mj: float | None, power: float | None = None) -> GpuSnapshot:
    return GpuSnapshot(index, "GPU", f"GPU-{index}", 80 * GIB, GIB, 90.0, power=power, energy_mj=energy_mj)


def test_the_meter_adds_each_interval_and_counts_the_last_stretch_at_the_last_rate():
    meter = Meter(simulated=False)
    a, b = ("shard-0", 1), ("shard-1", 1)
    meter.sample([_gpu(0, 1_000.0), _gpu(1, 0.0)], [], now=100.0)  # before any launch: the first readings
    meter.start(a, 1, started_at=101.0)
    meter.start(b, 1, started_at=101.0)
    held = [(a, (0,), NOBODY), (b, (1,), NOBODY)]
    meter.sample([_gpu(0, 401_000.0), _gpu(1, 150_000.0)], held, now=102.0)  # 400 J over 2 s: 200 J/s
    assert meter.due(now=0.0) == {
        a: {
            "gpu_seconds": 1.0,
            "peak_memory": None,
            "gpus_simulated": 0,
            "energy_j": 200.0,
            "energy_estimated": 0,
        },
        b: {"gpu_seconds": 1.0, "peak_memory": None, "gpus_simulated": 0, "energy_j": 75.0, "energy_estimated": 0},
    }
    meter.sample([_gpu(0, 801_000.0), _gpu(1, 300_000.0)], held, now=104.0)  # 200 J/s again; gpu 1 75 J/s
    final = meter.finish(a, ended_at=105.0)  # 1 s after the last sample, at 200 J/s
    assert final["energy_j"] == 800.0 and final["energy_estimated"] == 0
    assert meter.finish(a, ended_at=105.0)["energy_j"] == 800.0  # settled again (a rolled-back turn): the same
    meter.keep([b])
    # The next interval on GPU 0 holds nobody's but a's first second, counted already: no one gets it.
    meter.sample([_gpu(0, 1_001_000.0), _gpu(1, 450_000.0)], [(b, (1,), NOBODY)], now=106.0)
    assert meter.finish(b, ended_at=106.0)["energy_j"] == 75.0 + 150.0 + 150.0


def test_two_attempts_on_one_gpu_in_the_meter_and_one_leaving_between_samples():
    meter = Meter(simulated=False)
    a, b = ("t-a", 1), ("t-b", 1)
    meter.sample([_gpu(0, 0.0)], [], now=0.0)
    meter.start(a, 1, started_at=0.0)
    meter.start(b, 1, started_at=0.0)
    both = [(a, (0,), NOBODY), (b, (0,), NOBODY)]
    meter.sample([_gpu(0, 1_000_000.0)], both, now=10.0)  # 1000 J: 500 each
    final_a = meter.finish(a, ended_at=14.0)  # 4 s at 100 J/s, shared with b: 200
    assert final_a["energy_j"] == 700.0
    meter.sample([_gpu(0, 2_000_000.0)], [(b, (0,), NOBODY)], now=20.0)  # 1000 J: a's 4 s piece halved out
    assert meter.finish(b, ended_at=20.0)["energy_j"] == pytest.approx(500.0 + 200.0 + 600.0)


def test_an_attempt_that_ended_before_any_sample_saw_it_gets_its_time_at_the_gpus_last_rate():
    meter = Meter(simulated=False)
    a = ("shard-0", 1)
    meter.sample([_gpu(0, 0.0), _gpu(1, 0.0)], [], now=0.0)
    meter.sample([_gpu(0, 100_000.0), _gpu(1, 50_000.0)], [], now=1.0)  # 100 J/s and 50 J/s, nobody's
    meter.start(a, 2, started_at=1.2)
    assert meter.finish(a, ended_at=1.6, gpus=(0, 1))["energy_j"] == pytest.approx(0.4 * 150.0)
    meter.keep([])
    meter.sample([_gpu(0, 200_000.0), _gpu(1, 100_000.0)], [], now=2.0)  # its piece is its own: nobody's else


def test_a_counter_reset_leaves_that_interval_out_and_counting_goes_on_after_it():
    meter = Meter(simulated=False)
    a = ("shard-0", 1)
    meter.sample([_gpu(0, 7_000_000.0)], [], now=0.0)
    meter.start(a, 1, started_at=0.0)
    meter.sample([_gpu(0, 7_100_000.0)], [(a, (0,), NOBODY)], now=1.0)  # 100 J
    meter.sample([_gpu(0, 50_000.0)], [(a, (0,), NOBODY)], now=2.0)  # the driver reloaded: not counted
    meter.sample([_gpu(0, 150_000.0)], [(a, (0,), NOBODY)], now=3.0)  # 100 J
    assert meter.finish(a, ended_at=3.0)["energy_j"] == 200.0


def test_without_a_counter_the_meter_counts_power_times_time_and_says_so():
    meter = Meter(simulated=False)
    a = ("shard-0", 1)
    meter.sample([_gpu(0, None, 200.0)], [], now=0.0)
    meter.start(a, 1, started_at=0.0)
    meter.sample([_gpu(0, None, 300.0)], [(a, (0,), NOBODY)], now=2.0)
    final = meter.finish(a, ended_at=3.0)  # 2 s at 250 W, then 1 s at that rate
    assert (final["energy_j"], final["energy_estimated"]) == (750.0, 1)


def test_no_counter_and_no_power_writes_no_energy_and_an_adopted_attempt_keeps_what_it_had():
    meter = Meter(simulated=False)
    a = ("shard-0", 1)
    meter.sample([_gpu(0, None)], [], now=0.0)
    meter.start(a, 1, started_at=0.0)
    meter.sample([_gpu(0, None)], [(a, (0,), NOBODY)], now=2.0)
    assert "energy_j" not in meter.finish(a, ended_at=3.0)
    again = Meter(simulated=False)  # a new scheduler re-adopts an attempt with 500 J recorded
    again.start(("shard-1", 2), 1, started_at=0.0, energy=500.0, estimated=True)
    again.sample([_gpu(0, 1_000.0)], [(("shard-1", 2), (0,), NOBODY)], now=10.0)
    again.sample([_gpu(0, 101_000.0)], [(("shard-1", 2), (0,), NOBODY)], now=11.0)
    assert again.finish(("shard-1", 2), ended_at=11.0)["energy_j"] == 600.0
    assert again.finish(("shard-1", 2), ended_at=11.0)["energy_estimated"] == 1


def test_simulated_gpus_integrate_their_power_into_a_counter_that_grows():
    now = [0.0]
    busy = {0: [(0, GIB, True)]}  # GPU 0 at work, GPU 1 idle
    probe = SimulatedProbe(2, 24, load=lambda: busy, clock=lambda: now[0])
    first = probe.snapshot()
    assert [g.energy_mj for g in first] == [0.0, 0.0] and all(g.simulated for g in first)
    now[0] = 10.0
    second = probe.snapshot()
    # 10 s at the mean of the two powers shown: 280..322 W while at work, 60 W idle.
    assert second[0].energy_mj == pytest.approx((first[0].power + second[0].power) / 2 * 10 * 1000)
    assert 2_800_000 <= second[0].energy_mj <= 3_220_000 and second[1].energy_mj == 600_000.0
    now[0] = 5.0  # a clock that went back adds nothing
    assert [g.energy_mj for g in probe.snapshot()] == [g.energy_mj for g in second]


def test_energy_is_said_in_wh_or_kwh_estimated_marked_and_beside_gpu_hours():
    wh = 3600.0
    assert [energy_text(j) for j in (612.0, 45.6 * wh, 1234 * wh)] == ["0.17 Wh", "45.6 Wh", "1.23 kWh"]
    assert energy_text(None) == "-" and energy_text(3600.0, estimated=True) == "~1.00 Wh"

    def attempt(number: int, joules: float | None, estimated: bool) -> AttemptRecord:
        return AttemptRecord(
            "shard-0", number, "done", (0,), ("w",), "/l", 0.0, 10.0, 0, None, None, None, None, None,
            gpu_seconds=10.0, energy_j=joules, energy_estimated=estimated,
        )  # fmt: skip

    totals = gpu_totals([attempt(1, 1800.0, False), attempt(2, 5400.0, True), attempt(3, None, False)])
    assert (totals["energy_j"], totals["energy_kwh"], totals["energy_estimated"]) == (7200.0, 0.002, True)
    line = totals_line(totals)
    assert line.startswith("GPU-hours 0.01, energy ~2.00 Wh, largest") and "estimated from power x time" in line
    assert gpu_totals([attempt(1, None, True)])["energy_j"] is None  # not measured: no energy, not 0
    assert "energy" not in totals_line(gpu_totals([attempt(1, None, False)]))
    report = render_report({"gpu_seconds": 30.0, "gpu_hours": 0.01, **totals, "tasks": []})
    assert "**GPU time:** 0.01 GPU-hours; energy ~2.00 Wh (~: estimated from power x time" in report
