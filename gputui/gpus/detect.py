"""Pick a GPU backend: NVML first, torch as a fallback, simulated only when asked for.

Simulation is never chosen silently: without `--simulate` a machine with no visible GPU is an error
that explains why each backend failed, because scheduling onto imaginary GPUs by accident is worse
than refusing to start.
"""

from __future__ import annotations

from gputui.gpus.probe import GpuProbe, NoGpuError
from gputui.gpus.simulated import LoadFn, SimulatedProbe, parse_simulate_spec, split_shared

DEFAULT_AUTO_SPEC = "4x24"


def _open_real() -> GpuProbe:
    from gputui.gpus.nvml import NvmlProbe
    from gputui.gpus.torch_probe import TorchProbe

    reasons = []
    for backend in (NvmlProbe, TorchProbe):
        try:
            return backend()
        except Exception as exc:  # a crashing backend must not hide the next one
            reason = str(exc) if isinstance(exc, NoGpuError) else f"{type(exc).__name__}: {exc}"
            reasons.append(f"  {backend.name}: {reason}")
    raise NoGpuError(
        "No GPU could be probed:\n"
        + "\n".join(reasons)
        + f"\nUse --simulate {DEFAULT_AUTO_SPEC} to run with simulated GPUs"
        " (or --simulate auto to fall back to them when no GPU is found)."
    )


def open_probe(simulate: str | None = None, *, load: LoadFn | None = None) -> GpuProbe:
    """Open a probe for `--simulate` semantics: None (real only), "auto[:NxGB]", or "N"/"NxGB"; "shared:" before
    the size (`shared:2x24`, `auto:shared:2x24`) makes simulated GPUs the machine's, shared with other runs.

    `load` feeds simulated GPUs with what gputui runs on them; real backends ignore it.
    Raises NoGpuError (real only, nothing found) or ValueError (bad spec).
    """
    if simulate is None:
        return _open_real()
    auto, count, memory_gb, shared = read_simulate_spec(simulate)
    if auto:
        try:
            return _open_real()
        except NoGpuError:
            pass
    return SimulatedProbe(count, memory_gb, load=load, shared=shared)


def read_simulate_spec(simulate: str) -> tuple[bool, int, float, bool]:
    """(auto: real GPUs first, count, GiB per GPU, shared) of a `--simulate` value; ValueError for a bad one
    (checked before probing, so a typo fails the same on every machine)."""
    if not isinstance(simulate, str):
        raise ValueError(f"--simulate: expected a string, got {simulate!r}")
    shared, spec = split_shared(simulate)
    head, sep, rest = spec.partition(":")
    auto = head.strip().lower() == "auto"
    if auto:
        spec = rest if sep else DEFAULT_AUTO_SPEC
    try:
        count, memory_gb = parse_simulate_spec(spec)
    except ValueError as e:
        raise ValueError(f"{e} (in {simulate!r})" if spec.strip() != simulate.strip() else str(e)) from None
    return auto, count, memory_gb, shared


def check_simulate_spec(simulate: str | None) -> None:
    """Raise ValueError for a `--simulate` value `open_probe` would refuse, without probing anything."""
    if simulate is not None:
        read_simulate_spec(simulate)


def describe(probe: GpuProbe) -> str:
    """A short backend label for headers and logs."""
    if isinstance(probe, SimulatedProbe):
        shared = ", shared" if probe.shared else ""
        return f"SIMULATED ({probe.count} x {probe.memory_gb:g} GB{shared})"
    if probe.simulated:
        return "SIMULATED"
    return {"nvml": "NVML", "torch": "torch (fallback)"}.get(probe.name, probe.name)
