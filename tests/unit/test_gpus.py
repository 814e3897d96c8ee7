"""GPU backends, backend selection and the one-shot views."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import replace
from types import SimpleNamespace

import pytest
from rich.console import Console

from gputui.gpus.detect import check_simulate_spec, describe, open_probe, read_simulate_spec
from gputui.gpus.nvml import NvmlProbe
from gputui.gpus.probe import GIB, GpuProbe, GpuProcess, GpuSnapshot, NoGpuError
from gputui.gpus.simulated import BASELINE_USED, SimulatedProbe, parse_simulate_spec
from gputui.gpus.table import gpu_table, snapshots_to_json
from gputui.gpus.torch_probe import TorchProbe


def _nvml_works() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return False
    try:
        return pynvml.nvmlDeviceGetCount() > 0
    except Exception:
        return False
    finally:
        pynvml.nvmlShutdown()


def _render(table) -> str:
    console = Console(record=True, width=120)
    console.print(table)
    return console.export_text()


# --- parse_simulate_spec ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("4", (4, 24.0)), ("8x24", (8, 24.0)), ("2x80.5", (2, 80.5)), ("1", (1, 24.0)), ("64X16", (64, 16.0))],
)
def test_parse_simulate_spec_good(spec, expected):
    assert parse_simulate_spec(spec) == expected


@pytest.mark.parametrize("spec", ["abc", "", "4x", "x24", "4x24x2", "-1", "4 GB", "4xabc"])
def test_parse_simulate_spec_bad_format(spec):
    with pytest.raises(ValueError) as info:
        parse_simulate_spec(spec)
    assert str(info.value) == (
        "--simulate: expected N or NxGB (e.g. 4 or 8x24), 'shared:' before it for GPUs shared with other runs "
        f"(shared:2x24), or auto[:NxGB], got {spec!r}"
    )


@pytest.mark.parametrize("spec", ["0", "65", "0x24", "4x0"])
def test_parse_simulate_spec_out_of_range(spec):
    with pytest.raises(ValueError, match="--simulate") as info:
        parse_simulate_spec(spec)
    assert repr(spec) in str(info.value)


# --- SimulatedProbe ---------------------------------------------------------------------------


def test_simulated_idle_snapshot():
    probe = SimulatedProbe(4, 24.0)
    assert isinstance(probe, GpuProbe)
    assert probe.simulated and probe.name == "simulated"
    snaps = probe.snapshot()
    assert [s.index for s in snaps] == [0, 1, 2, 3]
    for s in snaps:
        assert s.simulated
        assert s.name == "Simulated GPU 24GB"
        assert s.uuid == f"SIM-GPU-{s.index}"
        assert s.memory_total == 24 * GIB
        assert s.memory_used == BASELINE_USED
        assert s.utilization == 0
        assert s.temperature == 35
        assert s.power == pytest.approx(60)
        assert s.power_limit == 350
        assert s.processes == ()
    probe.close()


def test_simulated_load_shows_on_its_gpu_only():
    load = {1: [(4242, 12 * GIB)]}
    probe = SimulatedProbe(4, 24.0, load=lambda: load)
    idle = SimulatedProbe(4, 24.0).snapshot()
    for t in range(50):  # the busy wobble stays in range over time
        probe._clock = lambda t=t: t * 0.37
        snaps = probe.snapshot()
        busy = snaps[1]
        assert idle[1].memory_free - busy.memory_free == 12 * GIB
        assert 85 <= busy.utilization <= 99
        assert 35 < busy.temperature <= 76
        assert busy.power > 200
        assert busy.processes == (GpuProcess(4242, 12 * GIB),)
        for other in (0, 2, 3):
            assert replace(snaps[other], energy_mj=0.0) == idle[other]  # its energy counter grows apart
    utils = set()
    for t in range(50):
        probe._clock = lambda t=t: t * 0.37
        utils.add(probe.snapshot()[1].utilization)
    assert len(utils) > 1


def test_simulated_unknown_pid_counts_memory_but_no_process():
    probe = SimulatedProbe(2, 24.0, load=lambda: {0: [(0, 2 * GIB), (7, GIB)]})
    s = probe.snapshot()[0]
    assert s.memory_used == BASELINE_USED + 3 * GIB
    assert s.processes == (GpuProcess(7, GIB),)


def test_simulated_memory_capped_at_total():
    probe = SimulatedProbe(1, 8.0, load=lambda: {0: [(1, 6 * GIB), (2, 6 * GIB)]})
    s = probe.snapshot()[0]
    assert s.memory_used == s.memory_total == 8 * GIB
    assert s.memory_free == 0


def test_simulated_rejects_bad_count():
    with pytest.raises(ValueError):
        SimulatedProbe(0)


# --- detection --------------------------------------------------------------------------------


def test_open_probe_none_without_gpu_says_simulate():
    if _nvml_works():
        probe = open_probe(None)
        try:
            assert isinstance(probe, NvmlProbe)
        finally:
            probe.close()
        return
    with pytest.raises(NoGpuError) as info:
        open_probe(None)
    msg = str(info.value)
    assert "No GPU could be probed" in msg
    assert "--simulate" in msg
    assert "nvml:" in msg and "torch:" in msg


def test_open_probe_auto_always_works():
    probe = open_probe("auto")
    try:
        snaps = probe.snapshot()
        assert snaps and all(s.memory_total > 0 for s in snaps)
        if probe.simulated:
            assert describe(probe) == "SIMULATED (4 x 24 GB)"
    finally:
        probe.close()


def test_open_probe_auto_with_spec_and_explicit_spec(monkeypatch):
    def fail():
        raise NoGpuError("none here")

    monkeypatch.setattr("gputui.gpus.detect._open_real", fail)
    probe = open_probe("auto:2x80")
    assert isinstance(probe, SimulatedProbe) and describe(probe) == "SIMULATED (2 x 80 GB)"
    probe = open_probe("8x24", load=lambda: {3: [(9, GIB)]})
    assert describe(probe) == "SIMULATED (8 x 24 GB)"
    assert probe.snapshot()[3].processes == (GpuProcess(9, GIB),)
    with pytest.raises(ValueError, match="got 'nope'"):
        open_probe("auto:nope")
    with pytest.raises(ValueError, match="got 'abc'"):
        open_probe("abc")


def test_describe_real_backends():
    assert describe(SimpleNamespace(name="nvml", simulated=False)) == "NVML"
    assert describe(SimpleNamespace(name="torch", simulated=False)) == "torch (fallback)"


# --- NVML through a fake pynvml ---------------------------------------------------------------


def _fake_pynvml(*, count=2, byte_names=False, power_fails_on=frozenset()):
    fake = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):
        pass

    fake.NVMLError = NVMLError
    fake.NVMLError_NotSupported = NVMLError_NotSupported
    fake.NVML_TEMPERATURE_GPU = 0
    fake.calls = {"init": 0, "shutdown": 0}

    def name(s):
        return s.encode() if byte_names else s

    def nvmlInit():
        fake.calls["init"] += 1

    def nvmlShutdown():
        fake.calls["shutdown"] += 1

    def nvmlDeviceGetPowerUsage(h):
        if h in power_fails_on:
            raise NVMLError_NotSupported("Not Supported")
        return 123_456

    def nvmlDeviceGetComputeRunningProcesses(h):
        if h == 0:
            return [
                SimpleNamespace(pid=11, usedGpuMemory=3 * GIB),
                SimpleNamespace(pid=12, usedGpuMemory=None),
            ]
        return []

    fake.nvmlInit = nvmlInit
    fake.nvmlShutdown = nvmlShutdown
    fake.nvmlDeviceGetCount = lambda: count
    fake.nvmlDeviceGetHandleByIndex = lambda i: i
    fake.nvmlDeviceGetName = lambda h: name(f"Fake GPU {h}")
    fake.nvmlDeviceGetUUID = lambda h: name(f"GPU-fake-{h}")
    fake.nvmlDeviceGetMemoryInfo = lambda h: SimpleNamespace(total=80 * GIB, used=(h + 1) * GIB, free=0)
    fake.nvmlDeviceGetEnforcedPowerLimit = lambda h: 700_000
    fake.nvmlDeviceGetUtilizationRates = lambda h: SimpleNamespace(gpu=42, memory=10)
    fake.nvmlDeviceGetTemperature = lambda h, sensor: 55
    fake.nvmlDeviceGetPowerUsage = nvmlDeviceGetPowerUsage
    fake.nvmlDeviceGetComputeRunningProcesses = nvmlDeviceGetComputeRunningProcesses

    def nvmlDeviceGetProcessUtilization(h, last_seen):
        """Samples newer than `last_seen` (µs); NVML raises NotFound when there are none."""
        fake.calls.setdefault("since", []).append(last_seen)
        if h != 0 or last_seen >= 2_000:
            raise NVMLError("Not Found")
        return [SimpleNamespace(pid=11, smUtil=73, memUtil=20, timeStamp=2_000)]

    fake.nvmlDeviceGetProcessUtilization = nvmlDeviceGetProcessUtilization
    return fake


@pytest.mark.parametrize("byte_names", [False, True])
def test_nvml_probe_with_fake_pynvml(monkeypatch, byte_names):
    fake = _fake_pynvml(byte_names=byte_names, power_fails_on={1})
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    probe = NvmlProbe()
    assert isinstance(probe, GpuProbe) and probe.name == "nvml" and not probe.simulated
    snaps = probe.snapshot()
    assert len(snaps) == 2
    s0, s1 = snaps
    assert s0.name == "Fake GPU 0" and s0.uuid == "GPU-fake-0"
    assert s0.memory_total == 80 * GIB and s0.memory_used == GIB and s1.memory_used == 2 * GIB
    assert s0.utilization == 42 and s0.temperature == 55
    assert s0.power == pytest.approx(123.456) and s0.power_limit == pytest.approx(700)
    assert s0.processes == (GpuProcess(11, 3 * GIB, sm_util=73.0), GpuProcess(12, None))
    assert s1.power is None  # NVMLError on an optional field -> "cannot tell"
    assert s1.processes == () and not s0.simulated
    assert describe(probe) == "NVML"
    probe.snapshot()
    assert fake.calls["since"] == [0, 2_000], "the next read asks only for samples newer than the last one"
    probe.close()
    probe.close()
    assert (fake.calls["init"], fake.calls["shutdown"]) == (1, 1)
    assert probe.snapshot() == []


def test_nvml_probe_falls_back_to_power_management_limit(monkeypatch):
    fake = _fake_pynvml(count=1)

    def enforced(h):
        raise fake.NVMLError("Not Supported")

    fake.nvmlDeviceGetEnforcedPowerLimit = enforced
    fake.nvmlDeviceGetPowerManagementLimit = lambda h: 250_000
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    probe = NvmlProbe()
    assert probe.snapshot()[0].power_limit == pytest.approx(250)
    probe.close()


def test_nvml_probe_reads_each_gpus_energy_counter_none_where_not_supported(monkeypatch):
    fake = _fake_pynvml()
    counter = {0: 5_000}

    def energy(h):
        if h not in counter:
            raise fake.NVMLError_NotSupported("Not Supported")  # before Volta
        counter[h] += 300_000
        return counter[h]

    fake.nvmlDeviceGetTotalEnergyConsumption = energy
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    probe = NvmlProbe()
    assert [g.energy_mj for g in probe.snapshot()] == [305_000.0, None]
    assert [g.energy_mj for g in probe.snapshot()] == [605_000.0, None]  # read on each sample
    probe.close()
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml())  # a pynvml without the call: None too
    probe = NvmlProbe()
    assert [g.energy_mj for g in probe.snapshot()] == [None, None]
    probe.close()


def test_nvml_probe_init_failure_and_zero_gpus(monkeypatch):
    fake = _fake_pynvml()

    def init():
        raise fake.NVMLError("Driver Not Loaded")

    fake.nvmlInit = init
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with pytest.raises(NoGpuError, match="Driver Not Loaded"):
        NvmlProbe()

    fake = _fake_pynvml(count=0)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with pytest.raises(NoGpuError, match="0 GPUs"):
        NvmlProbe()
    assert fake.calls == {"init": 1, "shutdown": 1}  # init was balanced even though it failed


def test_nvml_probe_memory_failure_reads_as_full(monkeypatch):
    fake = _fake_pynvml(count=1)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    probe = NvmlProbe()

    def broken(h):
        raise fake.NVMLError("GPU is lost")

    fake.nvmlDeviceGetMemoryInfo = broken
    s = probe.snapshot()[0]
    assert s.memory_total == 80 * GIB and s.memory_free == 0
    probe.close()


@pytest.mark.skipif(not _nvml_works(), reason="no NVIDIA GPU on this machine")
def test_nvml_probe_real_hardware():
    probe = NvmlProbe()
    try:
        snaps = probe.snapshot()
        assert snaps
        for s in snaps:
            assert s.memory_total > 0
            assert 0 <= s.memory_used <= s.memory_total
            assert s.name and not s.simulated
            for proc in s.processes:  # %SM where the driver samples it
                assert proc.sm_util is None or 0 <= proc.sm_util <= 100
    finally:
        probe.close()


# --- torch --------------------------------------------------------------------------------------


def test_torch_probe_without_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(NoGpuError, match="torch"):
        TorchProbe()


def test_torch_probe_with_fake_torch(monkeypatch):
    props = SimpleNamespace(name="Fake H100", total_memory=80 * GIB, uuid="abc")
    cuda = SimpleNamespace(
        is_available=lambda: True,
        device_count=lambda: 1,
        get_device_properties=lambda i: props,
        mem_get_info=lambda i: (70 * GIB, 80 * GIB),
    )
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=cuda))
    probe = TorchProbe()
    (s,) = probe.snapshot()
    assert (s.name, s.uuid, s.memory_used, s.memory_total) == ("Fake H100", "GPU-abc", 10 * GIB, 80 * GIB)
    assert s.utilization is None and s.temperature is None and s.power is None and s.processes == ()
    assert describe(probe) == "torch (fallback)"

    cuda.is_available = lambda: False
    with pytest.raises(NoGpuError, match="is_available"):
        TorchProbe()


# --- table and JSON -----------------------------------------------------------------------------


def test_gpu_table_real_with_unknowns():
    snap = GpuSnapshot(index=0, name="A100 [test]", uuid="GPU-x", memory_total=40 * GIB, memory_used=10 * GIB)
    text = _render(gpu_table([snap], title="host1"))
    assert "host1" in text and "SIMULATED" not in text
    assert "A100 [test]" in text
    assert "10.0 / 40.0" in text and "25%" in text
    assert text.count("N/A") == 3  # utilisation, temperature, power


def test_gpu_table_simulated():
    probe = SimulatedProbe(2, 24.0, load=lambda: {0: [(5, 12 * GIB)]})
    text = _render(gpu_table(probe.snapshot()))
    assert "SIMULATED" in text
    assert "Simulated GPU 24GB" in text
    assert "/ 350 W" in text and "N/A" not in text


def test_snapshots_to_json():
    probe = SimulatedProbe(2, 24.0, load=lambda: {1: [(5, 12 * GIB)]})
    data = snapshots_to_json(probe.snapshot(), describe(probe))
    round_trip = json.loads(json.dumps(data))
    assert round_trip["simulated"] is True and round_trip["backend"] == "SIMULATED (2 x 24 GB)"
    gpu = round_trip["gpus"][1]
    assert gpu["processes"] == [{"pid": 5, "used_memory": 12 * GIB}]
    assert gpu["memory_free"] == gpu["memory_total"] - gpu["memory_used"]
    real = GpuSnapshot(index=0, name="x", uuid="u", memory_total=1, memory_used=0)
    data = snapshots_to_json([real], "nvml")
    assert data["simulated"] is False and data["gpus"][0]["utilization"] is None
    json.dumps(data)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("2x24", (False, 2, 24.0, False)),
        ("shared:2x24", (False, 2, 24.0, True)),
        ("Shared: 3", (False, 3, 24.0, True)),
        ("auto:shared:2x8", (True, 2, 8.0, True)),
        ("shared:auto:2x8", (True, 2, 8.0, True)),
        ("shared:auto", (True, 4, 24.0, True)),
        ("auto", (True, 4, 24.0, False)),
    ],
)
def test_simulated_gpus_are_private_unless_shared_is_asked_for(spec, expected):
    assert read_simulate_spec(spec) == expected
    check_simulate_spec(spec)


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ("shared:", "expected N or NxGB after 'shared:' (e.g. shared:2x24), got 'shared:'"),
        ("auto:shared:", "expected N or NxGB after 'shared:'"),
        ("shared:x", "got 'x' (in 'shared:x')"),
        ("private:2", "got 'private:2'"),
        ("shared:0", "GPU count must be 1..64"),
    ],
)
def test_a_bad_shared_spec_is_a_clear_error(spec, said):
    with pytest.raises(ValueError, match="--simulate") as info:
        check_simulate_spec(spec)
    assert said in str(info.value)
