"""A run mode turned into GPUs per worker and parallel workers, from the model's config.json and the GPUs'
memory as probed now (the pure arithmetic is jobs/gpu_plan.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from gputui.gpus.probe import GpuSnapshot
from gputui.jobs.gpu_plan import GB, Decision, Gpu, NoFit, choose, model_facts
from gputui.jobs.spec import JobSpec


def size_gpus(job: JobSpec, gpus: Sequence[GpuSnapshot]) -> Decision:
    """Raises NoFit, saying why (with the arithmetic), when the model fits nowhere here."""
    config_path = Path(job.model.path) / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as e:
        raise NoFit(
            f"{job.path}: [model].path: cannot read {config_path} ({e}); [resources].mode sizes GPUs from the "
            f"model's config.json: give a local model folder"
        ) from None
    facts = model_facts(config, job.model.dtype, job.model.max_model_len)
    sized = [Gpu(g.index, g.memory_total / GB, g.memory_free / GB) for g in gpus]
    return choose(facts, sized, job.resources.mode, job.resources.tensor_parallel_size)


def sized_values(job: JobSpec, decision: Decision | None) -> dict[str, object]:
    """The placeholders a [model] table fills: {model}, {dtype}, and the run mode's numbers once sized."""
    if job.model is None:
        return {}
    values: dict[str, object] = {"model": job.model.path, "dtype": job.model.dtype}
    if decision is not None:
        values |= {
            "tensor_parallel_size": decision.gpus_per_worker,
            "gpu_memory_utilization": decision.gpu_memory_utilization,
        }
    else:  # no run mode: the job's own GPUs per worker, vLLM's default fraction
        values |= {"tensor_parallel_size": max(1, job.resources.gpus_per_worker), "gpu_memory_utilization": 0.9}
    return values
