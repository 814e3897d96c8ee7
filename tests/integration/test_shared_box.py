"""A GPU box shared by several people (issue 26): two real Unix users' runs claim GPUs in one map.

The second user is made with `useradd` and runs gputui as installed (non-editable) into a venv of Debian's python3,
from a copy of this checkout it may read; this process (root) is the first user. Every worker writes when it
starts and ends, so two workers on one GPU at once would show. Skipped where this process cannot act as a second
user (not root, no useradd); the user, its processes and its files are removed afterwards."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys._base_executable
ME = pwd.getpwuid(os.getuid()).pw_name

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("userdel") is None,
    reason="needs root and useradd/userdel to act as a second Unix user",
)

WORKER = """
import json, os, sys, time
from pathlib import Path
log, gate, task = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
def say(event):
    with open(log, "a") as f:
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
        said = {"event": event, "task": task, "t": time.time(), "gpus": gpus, "uid": os.getuid()}
        f.write(json.dumps(said) + "\\n")
say("start")
while not gate.exists():
    time.sleep(0.05)
time.sleep(0.3)
say("finish")
"""


@dataclass
class Box:
    user: str
    uid: int
    gid: int
    gputui: Path  # the second user's, installed in its own venv
    base: Path


@pytest.fixture(scope="module")
def box():
    """A second Unix user with gputui installed for it (once per module), removed afterwards with all it ran."""
    user = f"gtbox{os.getpid() % 100000}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user], check=True)
    base = Path(tempfile.mkdtemp(prefix="gputui-shared-box-", dir="/tmp"))
    try:
        base.chmod(0o755)
        src = base / "src"
        src.mkdir()
        for name in ("gputui", "themes"):
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(ROOT / name, src / name)
        venv = base / "venv"
        subprocess.run([PYTHON, "-m", "venv", str(venv)], check=True, capture_output=True)
        got = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", str(src)], capture_output=True, text=True, timeout=600
        )
        assert got.returncode == 0, got.stderr[-3000:]
        entry = pwd.getpwnam(user)
        yield Box(user, entry.pw_uid, entry.pw_gid, venv / "bin" / "gputui", base)
    finally:
        try:
            uid = pwd.getpwnam(user).pw_uid
            for proc in psutil.process_iter(["uids"]):
                if proc.info["uids"] and proc.info["uids"].real == uid:
                    try:
                        proc.kill()
                    except psutil.Error:
                        pass
        finally:
            subprocess.run(["userdel", user], check=False, capture_output=True)
            shutil.rmtree(base, ignore_errors=True)


class Person:
    """One user's side of a test: its own folder, environment and runs."""

    def __init__(self, box: Box, folder: Path, locks: Path, policy: Path, guest: bool):
        self.box, self.folder, self.guest = box, folder, guest
        folder.mkdir(parents=True)
        home = folder / "home"
        home.mkdir()
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "GPUTUI_LOCK_DIR": str(locks),
            "GPUTUI_POLICY": str(policy),
            "GPUTUI_REGISTRY_DIR": str(folder / "registry"),
        }
        if guest:
            for path in [folder, *folder.rglob("*")]:
                os.chown(path, box.uid, box.gid)
        else:
            self.env["PYTHONPATH"] = str(ROOT)
        self.procs: list[subprocess.Popen] = []

    def argv(self, *args: object) -> list[str]:
        head = [str(self.box.gputui)] if self.guest else [sys.executable, "-m", "gputui"]
        return [*head, *map(str, args)]

    def _as(self) -> dict:
        return {"user": self.box.uid, "group": self.box.gid, "extra_groups": []} if self.guest else {}

    def job(self, name: str, shards: int = 1) -> Path:
        root = self.folder / name
        root.mkdir()
        (root / "w.py").write_text(WORKER)
        (root / "data.csv").write_text("data_id\n" + "".join(f"{i}\n" for i in range(shards)))
        (root / "job.toml").write_text(f"""
[job]
name = "{name}"
command = "{PYTHON} {root / "w.py"} {root / "events.jsonl"} {root / "go"} {{task_id}}"
stop_grace_s = 2
[shards]
input = "data.csv"
num_workers = {shards}
[resources]
gpus_per_worker = 1
[retry]
max_attempts = 1
""")
        if self.guest:
            for path in [root, *root.iterdir()]:
                os.chown(path, self.box.uid, self.box.gid)
        return root

    def run(self, root: Path, simulate: str) -> subprocess.Popen:
        argv = self.argv(
            "run", "--jobs", root / "job.toml", "--run-dir", root / "run", "--quiet", "--simulate", simulate
        )
        out = open(root.parent / f"{root.name}.log", "w")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=root, **self._as())
        self.procs.append(proc)
        return proc

    def gputui(self, *args: object) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.argv(*args),
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
            cwd=self.folder,
            **self._as(),
        )

    def tasks(self, root: Path) -> dict[str, dict]:
        got = self.gputui("status", "--run-dir", root / "run", "--json")
        if got.returncode not in (0, 1) or not got.stdout.strip():
            return {"error": got.stderr[-1000:]}
        return {t["id"]: t for t in json.loads(got.stdout)["tasks"]}

    def when(self, root: Path, ok, what: str) -> dict[str, dict]:
        last: list = []

        def seen():
            tasks = last[:] = [self.tasks(root)]
            return tasks[0] if tasks[0] and "error" not in tasks[0] and ok(tasks[0]) else None

        try:
            return wait_for(seen, timeout=60, interval=0.2, what=what)
        except AssertionError as e:
            log = root.parent / f"{root.name}.log"
            said = log.read_text()[-2000:] if log.exists() else ""
            raise AssertionError(f"{e}; tasks: {last}; its output: {said}") from None

    def close(self) -> None:
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                for p in [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]:
                    try:
                        p.kill()
                    except psutil.Error:
                        pass
                proc.wait(5)


def events(root: Path) -> list[dict]:
    path = root / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def started(root: Path, n: int = 1) -> bool:
    return sum(e["event"] == "start" for e in events(root)) >= n


@pytest.fixture
def people(box, tmp_path):
    """(me, the guest): both reserve GPUs in one folder of this test's (made as an admin would: root's, 1777)."""
    folder = Path(tempfile.mkdtemp(prefix="t-", dir=box.base))
    folder.chmod(0o755)
    locks = folder / "locks"
    locks.mkdir()
    locks.chmod(0o1777)
    policy = folder / "policy.toml"
    me = Person(box, folder / "me", locks, policy, guest=False)
    guest = Person(box, folder / "guest", locks, policy, guest=True)
    try:
        yield me, guest, locks, policy
    finally:
        for person in (me, guest):
            for job in [p for p in person.folder.iterdir() if (p / "job.toml").exists()]:
                (job / "go").touch()
        me.close()
        guest.close()
        shutil.rmtree(folder, ignore_errors=True)


def spans(*roots: Path) -> list[tuple[str, float, float, int]]:
    """(gpus, start, end, uid) of every worker that finished."""
    found = []
    for root in roots:
        begun = {}
        for e in events(root):
            if e["event"] == "start":
                begun[e["task"]] = e
            else:
                s = begun[e["task"]]
                found.append((s["gpus"], s["t"], e["t"], s["uid"]))
    return found


def test_two_users_share_one_gpu_in_turn_and_the_second_is_told_who_holds_it(people):
    me, guest, locks, _ = people
    mine, theirs = me.job("alpha", shards=2), guest.job("beta", shards=2)
    first = me.run(mine, "shared:1x24")
    wait_for(lambda: started(mine), timeout=60, what="my first worker")
    second = guest.run(theirs, "shared:1x24")
    holder = f"needs 1 GPU, 0 free: GPU 0 held by {ME} (run alpha, task shard-0)"
    guest.when(theirs, lambda ts: ts["shard-0"]["reason"] == holder, "the guest's task to name who holds GPU 0")
    assert not started(theirs)
    shown = json.loads(guest.gputui("gpus", "--simulate", "shared:1x24", "--json").stdout)
    held = shown["gpus"][0]["held_by"]
    assert (held["user"], held["uid"], held["job"], held["task"]) == (ME, os.getuid(), "alpha", "shard-0")
    assert held["run_dir"] == str(mine / "run")

    # The lock file is mine; the guest may neither delete it nor rename it (the folder is sticky).
    lock = locks / "SIM-GPU-0.lock"
    assert lock.stat().st_uid == os.getuid() and (lock.stat().st_mode & 0o777) == 0o666
    for argv in (["rm", "-f", str(lock)], ["mv", str(lock), str(locks / "stolen")]):
        got = subprocess.run(argv, capture_output=True, text=True, user=guest.box.uid, group=guest.box.gid)
        assert got.returncode != 0 and "Operation not permitted" in got.stderr, got
    assert lock.exists()

    (mine / "go").touch()
    (theirs / "go").touch()
    assert first.wait(60) == 0 and second.wait(60) == 0
    ran = spans(mine, theirs)
    assert len(ran) == 4 and {uid for *_, uid in ran} == {os.getuid(), guest.box.uid}
    ran.sort(key=lambda s: s[1])
    for (_, _, end, _), (_, begin, _, _) in zip(ran, ran[1:], strict=False):
        assert begin >= end, f"two workers held GPU 0 at once: {ran}"


def test_private_simulated_gpus_of_two_users_never_hold_each_other_back(people):
    me, guest, locks, _ = people
    mine, theirs = me.job("alpha"), guest.job("beta")
    me.run(mine, "1x24")
    guest.run(theirs, "1x24")
    wait_for(lambda: started(mine) and started(theirs), timeout=60, what="both users' workers on their own GPU 0")
    assert list(locks.iterdir()) == []  # neither claimed in the machine's map
    shown = guest.gputui("gpus", "--simulate", "1x24")
    assert ME not in shown.stdout and "Held by" not in shown.stdout, shown.stdout
    for job in (mine, theirs):
        (job / "go").touch()


def test_the_box_policy_caps_gpus_per_user_and_keeps_reserved_gpus_out_of_reach(people):
    me, guest, locks, policy = people
    policy.write_text("max_gpus_per_user = 1\nreserved_gpus = [2]\n")
    policy.chmod(0o644)
    one, two, theirs = me.job("one"), me.job("two"), guest.job("beta")
    me.run(one, "shared:3x24")
    wait_for(lambda: started(one), timeout=60, what="my first run's worker")
    me.run(two, "shared:3x24")
    capped = (
        f"needs 1 GPU, 1 free: policy: at most 1 GPU per user (you hold 1); GPU 0 held by {ME} (run one, task "
        "shard-0); GPU 2 reserved for interactive use by policy"
    )
    me.when(two, lambda ts: ts["shard-0"]["reason"] == capped, "my second run to wait for the policy")
    guest.run(theirs, "shared:3x24")  # another user: GPU 1 is theirs to take, GPU 2 is nobody's
    wait_for(lambda: started(theirs), timeout=60, what="the guest's worker")
    assert [e["gpus"] for e in events(theirs)] == ["1"] and not started(two)
    (one / "go").touch()
    wait_for(lambda: started(two), timeout=60, what="my second run once my first let go")
    assert [e["gpus"] for e in events(two) if e["event"] == "start"] == ["0"]
    for job in (two, theirs):
        (job / "go").touch()
    wait_for(lambda: len(spans(one, two, theirs)) == 3, timeout=60, what="every worker to finish")
    assert "2" not in {s[0] for s in spans(one, two, theirs)}
