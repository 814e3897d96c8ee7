"""`gputui metrics`' text, read back as Prometheus reads it: both parsers of prometheus_client (the 0.0.4 text
format and OpenMetrics) recover every value and label, however a run directory or job name is spelled."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gputui.gpus.probe import GpuSnapshot
from gputui.views.openmetrics import (
    OPENMETRICS_TYPE,
    PROMETHEUS_TYPE,
    RunSample,
    Scrape,
    escape_label_value,
    exposition,
    number,
    wants_openmetrics,
)

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.openmetrics.parser import (  # noqa: E402
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus  # noqa: E402

GIB = 1024**3
PARSERS = {"prometheus": (parse_prometheus, False), "openmetrics": (parse_openmetrics, True)}


@dataclass(frozen=True)
class MeteredGpu(GpuSnapshot):
    energy_mj: float | None = None  # NVML's total energy counter, as the probe reads it where it can


def gpu(index: int = 0, **kw) -> MeteredGpu:
    values = dict(
        index=index,
        name="NVIDIA H100 80GB HBM3",
        uuid=f"GPU-{index:08d}",
        memory_total=80 * GIB,
        memory_used=12 * GIB,
        utilization=87.0,
        temperature=61.0,
        power=412.5,
        power_limit=700.0,
    )
    return MeteredGpu(**{**values, **kw})


def run(run_dir: str = "/runs/a", job_name: str = "sweep", **kw) -> RunSample:
    values = dict(
        counts={"pending": 3, "retrying": 1, "running": 2, "done": 10},
        scheduler_live=True,
        gpu_seconds=7200.5,
        max_parallel=4,
    )
    return RunSample(run_dir, job_name, **{**values, **kw})


def families(text: str, fmt: str) -> dict:
    parse, _ = PARSERS[fmt]
    return {f.name: f for f in parse(text)}


def samples(family) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}


@pytest.mark.parametrize("fmt", PARSERS)
def test_each_gpu_is_read_back_with_its_labels_and_units(fmt):
    openmetrics = PARSERS[fmt][1]
    scrape = Scrape([gpu(0, energy_mj=3_600_000.0), gpu(1, utilization=None, power=None)], [], host="node-1")
    found = families(exposition(scrape, openmetrics=openmetrics), fmt)

    labels0 = {"gpu": "0", "uuid": "GPU-00000000", "name": "NVIDIA H100 80GB HBM3", "host": "node-1"}
    used = found["gputui_gpu_memory_used_bytes"]
    assert used.type == "gauge"
    assert {s.labels["gpu"]: s.value for s in used.samples} == {"0": 12 * GIB, "1": 12 * GIB}
    assert used.samples[0].labels == labels0  # real GPUs carry no `simulated` label
    assert found["gputui_gpu_memory_total_bytes"].samples[0].value == 80 * GIB
    (util,) = found["gputui_gpu_utilization_ratio"].samples  # GPU 1 cannot tell: no sample, never 0
    assert util.value == pytest.approx(0.87) and util.labels["gpu"] == "0"
    assert [s.labels["gpu"] for s in found["gputui_gpu_power_watts"].samples] == ["0"]
    assert found["gputui_gpu_temperature_celsius"].samples[1].value == 61.0
    assert found["gputui_gpu_power_limit_watts"].samples[0].value == 700.0
    energy = found["gputui_gpu_energy_joules"]  # a counter: its family named without `_total`, its sample with
    assert energy.type == "counter"
    (joules,) = energy.samples
    assert joules.name == "gputui_gpu_energy_joules_total" and joules.value == 3600.0 and joules.labels == labels0
    assert found["gputui_gpu_probe_ok"].samples[0].value == 1
    if openmetrics:
        assert used.unit == "bytes" and energy.unit == "joules"
        assert found["gputui_gpu_utilization_ratio"].unit == "ratio"


def test_a_gpu_without_an_energy_counter_has_no_energy_series():
    text = exposition(Scrape([gpu(0), GpuSnapshot(1, "old", "GPU-old", GIB, 0)], [], host="h"))
    assert "energy" not in text
    plain = GpuSnapshot(0, "x", "GPU-x", GIB, 0)  # before the probe reads energy at all: no attribute
    assert "energy" not in exposition(Scrape([plain], [], host="h"))


def test_simulated_gpus_say_so_in_a_label():
    text = exposition(Scrape([gpu(0, simulated=True)], [], host="h"))
    (sample,) = families(text, "prometheus")["gputui_gpu_memory_used_bytes"].samples
    assert sample.labels["simulated"] == "true"


@pytest.mark.parametrize("fmt", PARSERS)
def test_each_run_is_read_back_by_status_queue_gpu_time_and_scheduler(fmt):
    openmetrics = PARSERS[fmt][1]
    idle = run("/runs/b", "shards", scheduler_live=False, max_parallel=None, gpu_seconds=None)
    scrape = Scrape([], [run(), idle])
    found = families(exposition(scrape, openmetrics=openmetrics), fmt)
    a = {"run_dir": "/runs/a", "job_name": "sweep"}
    b = {"run_dir": "/runs/b", "job_name": "shards"}

    tasks = {(s.labels["run_dir"], s.labels["status"]): s.value for s in found["gputui_run_tasks"].samples}
    assert tasks[("/runs/a", "running")] == 2 and tasks[("/runs/a", "done")] == 10
    assert tasks[("/runs/a", "failed")] == 0  # every status, so a series never vanishes when it empties
    assert len(tasks) == 2 * 8
    queued = {s.labels["run_dir"]: s.value for s in found["gputui_run_queued_tasks"].samples}
    assert queued == {"/runs/a": 4, "/runs/b": 4}  # pending and retrying
    live = {s.labels["run_dir"]: s.value for s in found["gputui_run_scheduler_live"].samples}
    assert live == {"/runs/a": 1, "/runs/b": 0}
    assert [(s.labels, s.value) for s in found["gputui_run_max_parallel"].samples] == [(a, 4)]
    gpu_time = found["gputui_run_gpu_seconds"]
    assert gpu_time.type == "counter"
    assert [(s.name, s.labels, s.value) for s in gpu_time.samples] == [("gputui_run_gpu_seconds_total", a, 7200.5)]
    assert [(s.labels, s.value) for s in found["gputui_run_readable"].samples] == [(a, 1), (b, 1)]


def test_a_run_that_cannot_be_read_is_exported_as_such_and_nothing_else():
    text = exposition(Scrape([], [RunSample("/runs/gone", "x", readable=False)]))
    found = families(text, "prometheus")
    assert [(s.labels, s.value) for s in found["gputui_run_readable"].samples] == [
        ({"run_dir": "/runs/gone", "job_name": "x"}, 0)
    ]
    assert "gputui_run_tasks" not in found and "gputui_run_scheduler_live" not in found


def test_openmetrics_ends_with_eof_and_names_counters_without_total():
    text = exposition(Scrape([gpu(0, energy_mj=1.0)], [run()], host="h"), openmetrics=True)
    assert text.endswith("\n# EOF\n")
    assert "# TYPE gputui_run_gpu_seconds counter\n# UNIT gputui_run_gpu_seconds seconds\n" in text
    assert "# TYPE gputui_gpu_energy_joules counter\n" in text
    plain = exposition(Scrape([gpu(0, energy_mj=1.0)], [run()], host="h"))
    assert "# EOF" not in plain and "# UNIT" not in plain
    assert "# TYPE gputui_run_gpu_seconds_total counter\n" in plain  # as prometheus_client writes 0.0.4
    for line in plain.splitlines():
        if not line.startswith("#"):
            assert line.split("{")[0].split(" ")[0].startswith("gputui_"), line


def test_an_empty_scrape_is_still_a_valid_exposition():
    for fmt, (parse, openmetrics) in PARSERS.items():
        found = {f.name for f in parse(exposition(Scrape(gpu_probe_ok=False), openmetrics=openmetrics))}
        assert found == {"gputui_gpu_probe_ok"}, fmt


# -- escaping: whatever a run directory or job name holds comes back as it was ------------------------------
awkward = st.text(
    alphabet=st.one_of(st.sampled_from('\\"\n{}=,# \t'), st.characters(exclude_categories=("Cs",))), max_size=40
)


@settings(max_examples=200, deadline=None)
@given(run_dir=awkward, job_name=awkward)
def test_any_run_dir_and_job_name_are_read_back_exactly(run_dir, job_name):
    scrape = Scrape([], [run(run_dir, job_name), run("/other", "plain")])
    for fmt, (parse, openmetrics) in PARSERS.items():
        found = {f.name: f for f in parse(exposition(scrape, openmetrics=openmetrics))}
        got = [s.labels for s in found["gputui_run_scheduler_live"].samples]
        assert got == [{"run_dir": run_dir, "job_name": job_name}, {"run_dir": "/other", "job_name": "plain"}], fmt
        tasks = [s for s in found["gputui_run_tasks"].samples if s.labels["job_name"] == job_name]
        assert {s.labels["status"]: s.value for s in tasks if s.labels["run_dir"] == run_dir}["done"] == 10


@settings(max_examples=100, deadline=None)
@given(name=awkward)
def test_any_gpu_name_is_read_back_exactly(name):
    text = exposition(Scrape([gpu(0, name=name)], [], host=name), openmetrics=True)
    (sample,) = parse_openmetrics(text).__next__().samples
    assert sample.labels["name"] == name and sample.labels["host"] == name


def test_escapes_are_the_three_the_formats_name():
    assert escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    assert escape_label_value("tab\tand é") == "tab\tand é"  # the rest as it is, UTF-8


def test_a_path_that_is_not_utf8_is_written_as_its_bytes_escapes():
    import os

    path = os.fsdecode(b"/runs/caf\xe9")  # a Latin-1 name: a surrogate escape in Python
    text = exposition(Scrape([], [run(path, "j")]))
    text.encode("utf-8")  # writable
    (sample,) = families(text, "prometheus")["gputui_run_scheduler_live"].samples
    assert sample.labels["run_dir"] == "/runs/caf\\xe9"


def test_numbers_are_written_as_both_formats_read_them():
    assert number(3) == "3" and number(True) == "1" and number(0.1) == "0.1"
    assert number(float("nan")) == "NaN" and number(float("inf")) == "+Inf" and number(float("-inf")) == "-Inf"
    assert number(2**40) == str(2**40)


def test_openmetrics_is_served_only_to_a_scraper_that_asks_for_it():
    prometheus = (
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
        "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    )
    assert wants_openmetrics(prometheus)
    assert wants_openmetrics("Application/OpenMetrics-Text; version=1.0.0")
    assert not wants_openmetrics("text/plain;version=0.0.4")
    assert not wants_openmetrics("application/openmetrics-text;q=0, text/plain")
    assert not wants_openmetrics(None) and not wants_openmetrics("*/*")
    assert OPENMETRICS_TYPE == "application/openmetrics-text; version=1.0.0; charset=utf-8"
    assert PROMETHEUS_TYPE == "text/plain; version=0.0.4; charset=utf-8"
