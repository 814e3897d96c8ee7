"""`gputui metrics`: GPUs and runs as Prometheus reads them, in its text exposition format (version 0.0.4, what
node_exporter's textfile collector reads) or in OpenMetrics 1.0 (what Prometheus asks a scrape for first).

Pure: snapshots in, text out. Every name starts `gputui_`, says its unit (`_bytes`, `_watts`, `_celsius`,
`_ratio`, `_seconds`, `_joules`) and carries HELP and TYPE lines; a counter's samples end `_total`. Label
values are escaped as both formats say (backslash, double quote, newline): a run directory or a job name may
hold any of them, and bytes a path holds that are not UTF-8 are written as `\\xNN` text.

The two formats differ only in how a counter's family is named (0.0.4 names it with `_total`, OpenMetrics
without), in OpenMetrics' UNIT lines, and in its closing `# EOF`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from gputui.gpus.probe import GpuSnapshot
from gputui.jobs.tasks import Status

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

GAUGE, COUNTER = "gauge", "counter"
QUEUED = (Status.PENDING, Status.RETRYING)  # a run's queue: tasks waiting for a slot


@dataclass(frozen=True)
class RunSample:
    """A run as one scrape read it. `readable` False: its state could not be read (only that is exported)."""

    run_dir: str
    job_name: str
    counts: Mapping[str, int] = field(default_factory=dict)  # tasks by status
    scheduler_live: bool = False
    gpu_seconds: float | None = None  # GPU time its attempts used so far; None: not measured
    gpus_simulated: bool = False
    max_parallel: int | None = None  # the one in force (`gputui set`'s, else the job file's); None: worked out
    readable: bool = True


@dataclass(frozen=True)
class Family:
    name: str  # without a counter's `_total`
    kind: str
    help: str
    unit: str = ""  # OpenMetrics' UNIT: the name's last word


@dataclass(frozen=True)
class Scrape:
    """What one scrape read: the GPUs (empty when none could be probed), the runs, and about the scrape."""

    gpus: Sequence[GpuSnapshot] = ()
    runs: Sequence[RunSample] = ()
    host: str = ""
    gpu_probe_ok: bool = True
    duration_s: float | None = None  # how long reading took


GPU_FAMILIES = {
    "memory_used": Family("gputui_gpu_memory_used_bytes", GAUGE, "GPU memory in use.", "bytes"),
    "memory_total": Family("gputui_gpu_memory_total_bytes", GAUGE, "GPU memory in all.", "bytes"),
    "utilization": Family(
        "gputui_gpu_utilization_ratio", GAUGE, "Fraction of the last sample period a kernel ran (0 to 1).", "ratio"
    ),
    "power": Family("gputui_gpu_power_watts", GAUGE, "Power drawn.", "watts"),
    "power_limit": Family("gputui_gpu_power_limit_watts", GAUGE, "Power limit enforced.", "watts"),
    "temperature": Family("gputui_gpu_temperature_celsius", GAUGE, "GPU core temperature.", "celsius"),
    "energy": Family(
        "gputui_gpu_energy_joules", COUNTER, "Energy used since the driver was loaded (NVML's counter).", "joules"
    ),
}
RUN_FAMILIES = {
    "readable": Family("gputui_run_readable", GAUGE, "1 when the run's state could be read, else 0."),
    "tasks": Family("gputui_run_tasks", GAUGE, "The run's tasks, by status."),
    "queued": Family("gputui_run_queued_tasks", GAUGE, "Tasks waiting for a slot (pending and retrying)."),
    "live": Family("gputui_run_scheduler_live", GAUGE, "1 while a scheduler drives the run, else 0."),
    "max_parallel": Family("gputui_run_max_parallel", GAUGE, "Tasks the run may run at once (its max_parallel)."),
    "gpu_seconds": Family(
        "gputui_run_gpu_seconds",
        COUNTER,
        "GPU time the run's attempts have used so far (GPU-seconds; divide by 3600 for GPU-hours).",
        "seconds",
    ),
}
SCRAPE_FAMILIES = {
    "probe": Family("gputui_gpu_probe_ok", GAUGE, "1 when the GPUs could be probed for this scrape, else 0."),
    "duration": Family(
        "gputui_scrape_duration_seconds", GAUGE, "Time this scrape took to read the GPUs and runs.", "seconds"
    ),
}

Labels = tuple[tuple[str, str], ...]
Sample = tuple[Labels, float]


def exposition(scrape: Scrape, *, openmetrics: bool = False) -> str:
    """The whole text of one scrape, every family's samples together, as the format says they must be."""
    out: list[str] = []
    for family, samples in _families(scrape):
        if samples:
            out += _family_lines(family, samples, openmetrics)
    if openmetrics:
        out.append("# EOF")
    return "\n".join(out) + "\n"


def _families(s: Scrape) -> Iterable[tuple[Family, list[Sample]]]:
    gpus = [(_gpu_labels(g, s.host), g) for g in s.gpus]

    def per_gpu(value) -> list[Sample]:
        return [(labels, v) for labels, g in gpus if (v := value(g)) is not None]

    yield GPU_FAMILIES["memory_used"], per_gpu(lambda g: g.memory_used)
    yield GPU_FAMILIES["memory_total"], per_gpu(lambda g: g.memory_total)
    yield GPU_FAMILIES["utilization"], per_gpu(lambda g: None if g.utilization is None else g.utilization / 100)
    yield GPU_FAMILIES["power"], per_gpu(lambda g: g.power)
    yield GPU_FAMILIES["power_limit"], per_gpu(lambda g: g.power_limit)
    yield GPU_FAMILIES["temperature"], per_gpu(lambda g: g.temperature)
    yield GPU_FAMILIES["energy"], per_gpu(_energy_joules)

    runs = [(_run_labels(r), r) for r in s.runs]
    readable = [(labels, r) for labels, r in runs if r.readable]

    def per_run(value) -> list[Sample]:
        return [(labels, v) for labels, r in readable if (v := value(r)) is not None]

    yield RUN_FAMILIES["readable"], [(labels, int(r.readable)) for labels, r in runs]
    yield (
        RUN_FAMILIES["tasks"],
        [
            ((*labels, ("status", status)), r.counts.get(status, 0))
            for labels, r in readable
            for status in Status.ALL
        ],
    )
    yield RUN_FAMILIES["queued"], per_run(lambda r: sum(r.counts.get(q, 0) for q in QUEUED))
    yield RUN_FAMILIES["live"], per_run(lambda r: int(r.scheduler_live))
    yield RUN_FAMILIES["max_parallel"], per_run(lambda r: r.max_parallel)
    used = [((*labels, *_simulated(r.gpus_simulated)), r) for labels, r in readable if r.gpu_seconds is not None]
    yield RUN_FAMILIES["gpu_seconds"], [(labels, r.gpu_seconds) for labels, r in used]
    yield SCRAPE_FAMILIES["probe"], [((), int(s.gpu_probe_ok))]
    if s.duration_s is not None:
        yield SCRAPE_FAMILIES["duration"], [((), s.duration_s)]


def _energy_joules(g: GpuSnapshot) -> float | None:
    mj = getattr(g, "energy_mj", None)  # NVML's total energy counter, where the probe reads it
    return None if mj is None else mj / 1000


def _gpu_labels(g: GpuSnapshot, host: str) -> Labels:
    return (("gpu", str(g.index)), ("uuid", g.uuid), ("name", g.name), ("host", host), *_simulated(g.simulated))


def _run_labels(r: RunSample) -> Labels:
    # `job_name`, not `job`: Prometheus sets `job` (the scrape's) on every series, and would rename ours
    return (("run_dir", r.run_dir), ("job_name", r.job_name))


def _simulated(simulated: bool) -> Labels:
    return (("simulated", "true"),) if simulated else ()


def _family_lines(family: Family, samples: list[Sample], openmetrics: bool) -> list[str]:
    counter = family.kind == COUNTER
    sample_name = f"{family.name}_total" if counter else family.name
    named = family.name if openmetrics else sample_name  # 0.0.4 names a counter's family as its samples
    lines = [f"# HELP {named} {escape_help(family.help, openmetrics)}", f"# TYPE {named} {family.kind}"]
    if openmetrics and family.unit:
        lines.append(f"# UNIT {named} {family.unit}")
    for labels, value in samples:
        lines.append(f"{sample_name}{label_text(labels)} {number(value)}")
    return lines


def label_text(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{escape_label_value(value)}"' for name, value in labels) + "}"


def escape_label_value(value: str) -> str:
    """Backslash, double quote and line feed escaped, as both formats say; the rest as it is (UTF-8)."""
    return _utf8(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str, openmetrics: bool) -> str:
    """0.0.4 escapes backslash and line feed in HELP; OpenMetrics also the double quote."""
    text = _utf8(text).replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if openmetrics else text


def _utf8(text: str) -> str:
    """Text that encodes as UTF-8: a path's bytes that are not (surrogate escapes) become `\\xNN` text."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        try:
            raw = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a lone surrogate no path decoding made
            raw = text.encode("utf-8", "backslashreplace")
        return raw.decode("utf-8", "backslashreplace")


def number(value: float) -> str:
    """A sample value: integers as such, floats as Python writes them back exactly, NaN and infinities as the
    formats spell them."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def wants_openmetrics(accept: str | None) -> bool:
    """Whether a scraper's Accept header asks for OpenMetrics (Prometheus asks for it first, with q values)."""
    for part in (accept or "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media.lower() != "application/openmetrics-text":
            continue
        q = next((p.partition("=")[2] for p in params if p.lower().startswith("q=")), "1")
        try:
            if float(q) > 0:
                return True
        except ValueError:
            continue
    return False
