"""What gputui says of a real NVIDIA GPU, against what the GPU's own tools and the work itself say: one prepared
script for a machine with a GPU, under 8 minutes. Each step is timed and guarded (one that fails says why, and
the next runs); figures are printed side by side and written to --out as JSON. Nothing is asserted: a step's
`ok` is the figures' agreement within the tolerance printed beside them.

    python bench/gpu_check.py [--out gpu_check.json] [--gib 2] [--skip vllm,...]

Steps: panels (`gputui gpus --json` against nvidia-smi), memory (a torch worker under `gputui run`: the task's
peak_memory against what torch allocated), continuation (the repo's tiny model, a transformers shard under gputui
against one plain process; a vLLM shard too where vLLM is installed), kill (no GPU memory held afterwards, as
NVML's process list says), pause (its memory kept; `pause --free-memory` where cuda-checkpoint can: freed, then
back on resume). Elsewhere it says why it cannot run, and exits 2.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIB, GIB = 2**20, 2**30
SMI_FIELDS = "index,name,uuid,memory.total,memory.used,utilization.gpu,temperature.gpu,power.draw"
TINY = f"tiny:{REPO / 'models' / 'tiny-llama'}"
PROMPTS = REPO / "sample_jobs" / "data" / "prompts.csv"

# A worker that takes GPU memory with torch, says what it took (and its pid), holds it, then checks it kept it.
HOLDER = """
import json, os, sys, time
import torch
gib, hold, out, info = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]
x = torch.empty(int(gib * 2**30), dtype=torch.uint8, device="cuda")
x.fill_(7)
torch.cuda.synchronize()
said = {"pid": os.getpid(), "allocated": torch.cuda.memory_allocated(), "reserved": torch.cuda.memory_reserved()}
with open(info + ".tmp", "w") as f:
    json.dump(said, f)
os.replace(info + ".tmp", info)
end = time.time() + hold
while time.time() < end:
    time.sleep(0.2)
kept = int(x[:: 2**20].sum().item()) == 7 * x[:: 2**20].numel()
with open(out, "w") as f:
    f.write("data_id,kept\\n0,%d\\n" % kept)
"""

JOB = """
[job]
name = "{name}"
command = "{command}"
stop_grace_s = 3
[shards]
input = "{input}"
id_column = "data_id"
num_workers = 1
[resources]
gpus_per_worker = 1
max_parallel = 1
[retry]
max_attempts = 1
[outputs]
pattern = "{pattern}"
"""

report: dict = {"steps": {}}


class Step:
    """`with Step("name") as s:` times the step, keeps `s.figures`, and turns an exception into its reason."""

    def __init__(self, name: str) -> None:
        self.name, self.figures, self.ok, self.why = name, {}, None, ""

    def __enter__(self) -> Step:
        print(f"\n== {self.name}", flush=True)
        self.t0 = time.monotonic()
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        took = time.monotonic() - self.t0
        if isinstance(exc, Skip):
            self.ok, self.why = None, str(exc)
        elif exc is not None:
            self.ok, self.why = False, f"{kind.__name__}: {exc}"
            print(f"   FAILED: {self.why}")
            if not isinstance(exc, subprocess.TimeoutExpired | CheckFailed):
                traceback.print_exception(kind, exc, tb, limit=3)
        verdict = {True: "ok", False: "NOT OK", None: "skipped"}[self.ok]
        print(f"   -> {verdict} ({took:.1f}s)" + (f": {self.why}" if self.why and self.ok is not False else ""))
        report["steps"][self.name] = {"ok": self.ok, "why": self.why, "seconds": round(took, 1), **self.figures}
        return not isinstance(exc, KeyboardInterrupt)

    def row(self, what: str, gputui, other, ok: bool | None = None, note: str = "") -> None:
        mark = "" if ok is None else (" ok" if ok else " DIFFERS")
        print(f"   {what:<28} gputui {gputui!s:<24} other {other!s:<24}{mark} {note}")
        self.figures.setdefault("rows", []).append({"what": what, "gputui": gputui, "other": other, "ok": ok})
        if ok is False:
            self.ok = False
        elif ok and self.ok is None:
            self.ok = True


class Skip(Exception):
    pass


class CheckFailed(Exception):
    pass


def sh(*argv, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, **kw)


def gputui(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    return sh(sys.executable, "-m", "gputui", *args, timeout=timeout, cwd=REPO)


def gputui_bg(*args, log: Path) -> subprocess.Popen:
    out = open(log, "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "gputui", *map(str, args)], stdout=out, stderr=subprocess.STDOUT
    )


def wait(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise CheckFailed(f"timed out after {timeout:g}s waiting for {what}")


def nvml_processes() -> dict[int, int | None]:
    """pid -> GPU memory (bytes; None: not reported) of every compute process on any GPU, from NVML."""
    import pynvml

    pynvml.nvmlInit()
    try:
        out: dict[int, int | None] = {}
        for i in range(pynvml.nvmlDeviceGetCount()):
            for p in pynvml.nvmlDeviceGetComputeRunningProcesses(pynvml.nvmlDeviceGetHandleByIndex(i)):
                used = getattr(p, "usedGpuMemory", None)
                out[int(p.pid)] = None if used is None or used >= 2**63 else int(used)
        return out
    finally:
        pynvml.nvmlShutdown()


def preflight() -> str | None:
    """Why this machine cannot run the check, or None."""
    if shutil.which("nvidia-smi") is None:
        return "nvidia-smi not found"
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
    except Exception as e:  # ImportError, NVMLError
        return f"NVML init failed: {e}"
    return None


def torch_cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def holder_job(work: Path, name: str, gib: float, hold: float) -> tuple[Path, Path]:
    """A job of one task running HOLDER; (the job file, the file where the worker says what it took)."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "holder.py").write_text(HOLDER)
    (work / "ids.csv").write_text("data_id\n0\n")
    info = work / f"{name}.info.json"
    command = f"{sys.executable} {work / 'holder.py'} {gib} {hold} {{output}} {info}"
    job = work / f"{name}.toml"
    job.write_text(JOB.format(name=name, command=command, input=work / "ids.csv", pattern="out_{low}_{high}.csv"))
    return job, info


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def status(run_dir: Path) -> dict:
    r = gputui("status", "--run-dir", run_dir, "--json")
    return json.loads(r.stdout)


# -- steps ------------------------------------------------------------------------------------------------------
def panels(s: Step) -> None:
    r = gputui("gpus", "--json")
    if r.returncode != 0:
        raise CheckFailed(f"gputui gpus --json: exit {r.returncode}: {r.stderr.strip()[-300:]}")
    ours = {g["index"]: g for g in json.loads(r.stdout)["gpus"]}
    q = sh("nvidia-smi", f"--query-gpu={SMI_FIELDS}", "--format=csv,noheader,nounits")
    if q.returncode != 0:
        raise CheckFailed(f"nvidia-smi: exit {q.returncode}: {q.stderr.strip()[-300:]}")
    s.figures["backend"] = json.loads(r.stdout).get("backend")
    for line in csv.reader(q.stdout.strip().splitlines(), skipinitialspace=True):
        index, name, uuid, total, used, util, temp, power = (v.strip() for v in line)
        g = ours.get(int(index))
        if g is None:
            s.row(f"GPU {index}", "missing", name, False)
            continue

        def num(v):
            try:
                return float(v)
            except ValueError:
                return None  # [N/A], [Not Supported]

        def near(a, b, tol):  # nvidia-smi cannot tell: no verdict; it can, and gputui cannot: differs
            return None if b is None else a is not None and abs(a - b) <= tol

        mib = lambda v: None if v is None else round(v / MIB)  # noqa: E731
        s.row(f"{index} name", g["name"], name, g["name"] == name)
        s.row(f"{index} uuid", g["uuid"], uuid, g["uuid"] == uuid)
        s.row(
            f"{index} memory.total MiB", mib(g["memory_total"]), total, near(mib(g["memory_total"]), num(total), 2)
        )
        s.row(f"{index} memory.used MiB", mib(g["memory_used"]), used, near(mib(g["memory_used"]), num(used), 256),
              note="(tolerance 256 MiB: read moments apart)")  # fmt: skip
        s.row(f"{index} utilization %", g["utilization"], util, near(g["utilization"], num(util), 20),
              note="(tolerance 20 points)")  # fmt: skip
        s.row(f"{index} temperature C", g["temperature"], temp, near(g["temperature"], num(temp), 3))
        s.row(f"{index} power W", g["power"], power, near(g["power"], num(power), 30), note="(tolerance 30 W)")


def memory(s: Step, work: Path, gib: float) -> None:
    if not torch_cuda():
        raise Skip("torch with CUDA is not importable")
    job, info = holder_job(work / "memory", "memory", gib, hold=12)
    r = gputui("run", "--jobs", job, timeout=180)
    said = read_json(info)
    if r.returncode != 0 or said is None:
        raise CheckFailed(f"gputui run: exit {r.returncode}: {(r.stdout + r.stderr).strip()[-400:]}")
    (task,) = status(job.parent / "runs" / "memory")["tasks"]
    peak = task.get("peak_memory")
    s.figures |= {"torch_allocated": said["allocated"], "torch_reserved": said["reserved"], "peak_memory": peak}
    extra = None if peak is None else (peak - said["reserved"]) / MIB
    # NVML counts the process's whole footprint: torch's reserved memory plus the CUDA context (a few hundred MiB).
    ok = None if extra is None else 0 <= extra <= 2048
    note = f"(gputui - torch: {extra and round(extra)} MiB, the CUDA context; tolerance 0..2048)"
    s.row("peak_memory MiB / torch reserved", peak and round(peak / MIB), round(said["reserved"] / MIB), ok, note)


def shard_rows_per_s(work: Path, engine: str, timeout: float) -> tuple[float, float, int, int]:
    """(rows/s under gputui, rows/s of one plain process, rows each) for one shard of the sample prompts."""
    work.mkdir(parents=True, exist_ok=True)
    base = (
        f"{sys.executable} -m gputui.workers.continuation --input {PROMPTS} --id-column data_id --low 0 "
        f"--high 299 --model {TINY} --engine {engine} --max-new-tokens 24"
    )
    job = work / f"{engine}.toml"
    job.write_text(
        JOB.format(name=engine, command=base + " --output {output}", input=PROMPTS, pattern="out_{low}_{high}.csv")
    )
    t0 = time.monotonic()
    r = gputui("run", "--jobs", job, timeout=timeout)
    ours = time.monotonic() - t0
    if r.returncode != 0:
        raise CheckFailed(f"gputui run ({engine}): exit {r.returncode}: {(r.stdout + r.stderr).strip()[-400:]}")
    outs = list((work / "runs" / engine).rglob("out_*.csv")) or list(work.rglob("out_*.csv"))
    rows_ours = sum(max(0, len(p.read_text().splitlines()) - 1) for p in outs)
    plain_out = work / f"plain-{engine}.csv"
    t0 = time.monotonic()
    p = sh(*base.split(), "--output", plain_out, timeout=timeout, cwd=REPO)
    plain = time.monotonic() - t0
    if p.returncode != 0:
        raise CheckFailed(f"plain {engine} process: exit {p.returncode}: {(p.stdout + p.stderr).strip()[-400:]}")
    rows_plain = max(0, len(plain_out.read_text().splitlines()) - 1)
    return rows_ours / ours, rows_plain / plain, rows_ours, rows_plain


def continuation(s: Step, work: Path, engine: str) -> None:
    if engine == "vllm" and importlib.util.find_spec("vllm") is None:
        raise Skip("vllm is not importable")
    if engine == "transformers" and not torch_cuda():
        raise Skip("torch with CUDA is not importable")
    ours, plain, n_ours, n_plain = shard_rows_per_s(work / f"cont-{engine}", engine, timeout=200)
    s.figures |= {"rows_per_s_gputui": round(ours, 2), "rows_per_s_plain": round(plain, 2)}
    s.row("rows", n_ours, n_plain, n_ours == n_plain)
    s.row("rows/s (model load included)", round(ours, 2), round(plain, 2), note=f"ratio {ours / plain:.2f}")


def start_holder(work: Path, name: str, gib: float) -> tuple[subprocess.Popen, Path, dict]:
    """A run of one long holder task, in the background: (its scheduler, its run dir, what the worker said)."""
    job, info = holder_job(work / name, name, gib, hold=600)
    sched = gputui_bg("run", "--jobs", job, log=work / name / "sched.log")
    said = wait(
        lambda: read_json(info) or (sched.poll() is not None and {"ended": sched.returncode}), 90, "the worker"
    )
    if "ended" in said:
        raise CheckFailed(
            f"the run ended (exit {said['ended']}): {(work / name / 'sched.log').read_text()[-400:]}"
        )
    return sched, job.parent / "runs" / name, said


def kill(s: Step, work: Path, gib: float) -> None:
    if not torch_cuda():
        raise Skip("torch with CUDA is not importable")
    sched, run_dir, said = start_holder(work, "kill", gib)
    pid = said["pid"]
    try:
        seen = wait(lambda: nvml_processes().get(pid, -1) != -1 or None, 20, f"NVML to list pid {pid}")
        s.row(
            "NVML lists the worker", seen, True, seen is True, note="(else: NVML pids are another pid namespace's)"
        )
        r = gputui("kill", "--run-dir", run_dir, "--all", timeout=60)
        s.row("kill exit", r.returncode, 0, r.returncode == 0, note=r.stdout.strip().splitlines()[-1:])
        t0 = time.monotonic()
        try:
            wait(lambda: pid not in nvml_processes(), 20, "its GPU memory to be released")
            s.row("GPU memory released after", f"{time.monotonic() - t0:.1f}s", "-", True)
        except CheckFailed as e:
            s.row("GPU memory released", "no", f"{nvml_processes().get(pid)} bytes held", False, note=str(e))
    finally:
        sched.wait(30) if sched.poll() is None else None


def pause(s: Step, work: Path, gib: float) -> None:
    if not torch_cuda():
        raise Skip("torch with CUDA is not importable")
    from gputui.gpus import checkpoint

    sched, run_dir, said = start_holder(work, "pause", gib)
    pid = said["pid"]
    try:
        wait(lambda: nvml_processes().get(pid, -1) != -1 or None, 20, f"NVML to list pid {pid}")
        before = nvml_processes().get(pid)
        r = gputui("pause", "--run-dir", run_dir, "--all")
        time.sleep(2)
        held = nvml_processes().get(pid)
        s.row("pause: memory held MiB", held and round(held / MIB), before and round(before / MIB),
              r.returncode == 0 and held is not None and before is not None and held >= 0.9 * before)  # fmt: skip
        gputui("resume", "--run-dir", run_dir, "--all")
        verdict = checkpoint.verdict([pid])
        s.figures["free_memory_verdict"] = verdict.reason or "possible"
        r = gputui("pause", "--run-dir", run_dir, "--free-memory", "--all", timeout=300)
        if not verdict.ok:
            s.row("pause --free-memory refused", r.returncode, 1, r.returncode == 1, note=verdict.reason)
        else:
            time.sleep(2)
            freed = nvml_processes().get(pid)
            ok = r.returncode == 0 and (freed is None or freed < 0.1 * (before or 1))
            s.row("free-memory: held MiB after", freed and round(freed / MIB), 0, ok, note=r.stdout.strip()[-200:])
            r = gputui("resume", "--run-dir", run_dir, "--all", timeout=300)
            time.sleep(2)
            back = nvml_processes().get(pid)
            ok = r.returncode == 0 and back is not None and before is not None and back >= 0.9 * before
            s.row("resume: held MiB again", back and round(back / MIB), before and round(before / MIB), ok)
    finally:
        gputui("kill", "--run-dir", run_dir, "--all", timeout=60)
        sched.wait(30) if sched.poll() is None else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    ap.add_argument("--gib", type=float, default=2.0, help="GPU memory the test workers take")
    ap.add_argument("--skip", default="", help="steps to leave out, e.g. vllm,pause")
    a = ap.parse_args()
    why = preflight()
    if why is not None:
        print(f"no NVIDIA GPU here ({why}): this check needs a GPU", file=sys.stderr)
        return 2
    skip = {w.strip() for w in a.skip.split(",") if w.strip()}
    started = time.monotonic()
    report["started"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    report["nvidia_smi"] = sh(
        "nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"
    ).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="gputui-gpu-check-"))
    print(f"gputui GPU check: {report['nvidia_smi']}; work in {work}")
    steps = [
        ("panels", lambda s: panels(s)),
        ("memory", lambda s: memory(s, work, a.gib)),
        ("transformers", lambda s: continuation(s, work, "transformers")),
        ("vllm", lambda s: continuation(s, work, "vllm")),
        ("kill", lambda s: kill(s, work, a.gib)),
        ("pause", lambda s: pause(s, work, a.gib)),
    ]
    for name, run in steps:
        if name in skip:
            continue
        with Step(name) as s:
            run(s)
    report["seconds"] = round(time.monotonic() - started, 1)
    print(f"\n== summary ({report['seconds']}s)")
    for name, step in report["steps"].items():
        verdict = {True: "ok", False: "NOT OK", None: "skipped"}[step["ok"]]
        print(f"   {name:<14} {verdict:<8} {step['seconds']:>6.1f}s  {step['why']}")
    a.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"written to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
