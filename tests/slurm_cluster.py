"""A single-node Slurm of its own on 127.0.0.1 for tests and benchmarks (as root): its own munged,
slurmctld and slurmd, four fake GPUs (character devices made with mknod), everything in one temp
folder; stopped, and the folder removed, after. Needs Debian's `slurm-wlm` and `munge`."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.ray_cluster import free_port

DAEMONS = ("munged", "slurmctld", "slurmd")


def missing() -> str | None:
    """Why this machine cannot start one, or None."""
    absent = [d for d in (*DAEMONS, "sbatch") if shutil.which(d) is None and not os.path.exists(f"/usr/sbin/{d}")]
    if absent:
        return f"{', '.join(absent)} not installed (apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "a private Slurm needs root (slurmd, mknod)"
    return None


def _conf(d: Path, gpus: int, cpus: int) -> str:
    ports = free_port(), free_port()
    return f"""
ClusterName=gputui-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/munge.sock
SlurmUser=root
SlurmdUser=root
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=30
KillWait=5
SchedulerParameters=sched_min_interval=0
SlurmdParameters=config_overrides
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 Gres=gpu:{gpus} State=UNKNOWN
PartitionName=gpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


@contextlib.contextmanager
def slurm_node(gpus: int = 4, cpus: int = 8) -> Iterator[dict[str, str]]:
    """Start it; the environment a client needs (SLURM_CONF). Slurm's commands wait for it to answer."""
    why = missing()
    if why:
        raise RuntimeError(why)
    d = Path(tempfile.mkdtemp(prefix="slurm", dir="/tmp"))
    for sub in ("state", "spool", "dev"):
        (d / sub).mkdir()
    for i in range(gpus):
        os.mknod(d / "dev" / f"nvidia{i}", 0o600 | 0o020000, os.makedev(195, i))
    (d / "slurm.conf").write_text(_conf(d, gpus, cpus))
    (d / "gres.conf").write_text(f"NodeName=localhost Name=gpu File={d}/dev/nvidia[0-{gpus - 1}]\n")
    key = d / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    env = {"SLURM_CONF": str(d / "slurm.conf")}
    full = os.environ | env
    pids: list[int] = []
    try:
        subprocess.run(
            [
                shutil.which("munged") or "/usr/sbin/munged", "--force", f"--socket={d}/munge.sock",
                f"--key-file={key}", f"--pid-file={d}/munged.pid", f"--log-file={d}/munged.log",
                f"--seed-file={d}/munged.seed",
            ],
            check=True, capture_output=True, env=full, timeout=30,
        )  # fmt: skip
        pids.append(int((d / "munged.pid").read_text()))
        for daemon in ("slurmctld", "slurmd"):
            binary = shutil.which(daemon) or f"/usr/sbin/{daemon}"
            conf = str(d / "slurm.conf")
            name = ["-N", "localhost"] if daemon == "slurmd" else []  # whatever this machine's hostname
            subprocess.run([binary, "-f", conf, *name], check=True, capture_output=True, env=full, timeout=30)
            pid_file = d / f"{daemon}.pid"
            for _ in range(100):
                if pid_file.exists() and pid_file.read_text().strip():
                    break
                time.sleep(0.05)
            pids.append(int(pid_file.read_text()))
        _wait_idle(full)
        yield env
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(["scancel", "--full", "--user=root"], env=full, capture_output=True, timeout=30)
        for i, daemon in enumerate(DAEMONS[1 : len(pids)], 1):  # a test may have started one again
            with contextlib.suppress(OSError, ValueError):
                pids[i] = int((d / f"{daemon}.pid").read_text())
        for pid in reversed(pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in pids:
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
        _kill(d, ("slurmctld", "slurmd", "slurmstepd"))  # one that outlived SIGTERM, steps left by a test
        shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """`env` (what slurm_node yields) in os.environ meanwhile: every Slurm command, the tests' and gputui's,
    talks to that Slurm."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def kill_controller(env: dict[str, str]) -> None:
    """SIGKILL slurmctld, as a crash would: it saves no state on the way out."""
    pid = int((Path(env["SLURM_CONF"]).parent / "slurmctld.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    for _ in range(200):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def start_controller(env: dict[str, str]) -> None:
    """Start slurmctld again with the same configuration: it recovers the jobs from its saved state."""
    d = Path(env["SLURM_CONF"]).parent
    pid_file = d / "slurmctld.pid"
    pid_file.unlink(missing_ok=True)
    binary = shutil.which("slurmctld") or "/usr/sbin/slurmctld"
    subprocess.run([binary, "-f", env["SLURM_CONF"]], check=True, capture_output=True, env=os.environ | env)
    for _ in range(200):
        if pid_file.exists() and pid_file.read_text().strip():
            break
        time.sleep(0.05)
    for _ in range(300):
        r = subprocess.run(["sinfo", "-h", "-o", "%T"], env=os.environ | env, capture_output=True, text=True)
        if r.returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"slurmctld did not answer after its restart: {r.stderr}")


def _kill(d: Path, names: tuple[str, ...]) -> None:
    """SIGKILL this cluster's daemons of these names, found by their working directory (its folder): other
    tests' clusters may run on this machine."""
    import psutil

    for p in psutil.process_iter(["name", "cwd"]):
        if p.info["name"] in names and (p.info["cwd"] or "").startswith(str(d)):
            with contextlib.suppress(psutil.Error):
                p.kill()  # its ports are free once it dies, reaped or not


def restart_node(env: dict[str, str]) -> None:
    """SIGKILL the node's slurmd and its jobs' steps and start slurmd again, as a node that reboots would."""
    d = Path(env["SLURM_CONF"]).parent
    _kill(d, ("slurmd", "slurmstepd"))
    (d / "slurmd.pid").unlink(missing_ok=True)
    binary = shutil.which("slurmd") or "/usr/sbin/slurmd"
    subprocess.run([binary, "-f", env["SLURM_CONF"], "-N", "localhost"], check=True, capture_output=True,
                   env=os.environ | env, timeout=30)  # fmt: skip


def restore_state(env: dict[str, str], saved: Path) -> None:
    """Put a copy of the controller's saved state back (slurmctld stopped), as a controller whose last save
    predates what it did afterwards would find it; the nodes' states are left as they are now."""
    state = Path(env["SLURM_CONF"]).parent / "state"
    for p in saved.iterdir():
        if p.name.startswith("node_state"):
            continue
        if p.is_dir():
            shutil.rmtree(state / p.name, ignore_errors=True)
            shutil.copytree(p, state / p.name)
        else:
            shutil.copy2(p, state / p.name)


def _wait_idle(env: dict[str, str]) -> None:
    """Until the node says it is idle (slurmd registered with its GPUs)."""
    for _ in range(200):
        r = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True, timeout=30)
        if r.stdout.strip() == "idle":
            return
        time.sleep(0.1)
    raise RuntimeError(f"the Slurm node did not come up: {r.stdout}{r.stderr}")
