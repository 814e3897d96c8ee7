"""`gputui serve --writable` against another local user: loopback alone let `nobody` kill every task.

The attacker is a real second Unix user running Debian's python3 (the project's venv is not theirs to run)
with a stdlib-only client (serve_client.py), against a real server driving a real run of sleeping tasks.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from tests.conftest import gputui, gputui_bg, wait_for
from tests.e2e import serve_client

CLIENT = Path(serve_client.__file__)
GUEST = "gputui-guest"
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys._base_executable
EVIL = "http://evil.example"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def guest() -> str:
    """A second, unprivileged Unix user (created once if missing; CI runs as root on a fresh machine)."""
    try:
        pwd.getpwnam(GUEST)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", GUEST], check=True
        )
    return GUEST


def as_guest(user: str, port: int, steps: list[dict]) -> list[dict]:
    """Run the stdlib client as USER (its source on stdin: USER cannot read this checkout's tmp dirs)."""
    out = subprocess.run(
        ["runuser", "-u", user, "--", PYTHON, "-", "127.0.0.1", str(port), json.dumps(steps)],
        input=CLIENT.read_text(),
        capture_output=True,
        text=True,
        cwd="/",
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@contextmanager
def serving(tmp_path: Path, *args: str, env: dict | None = None):
    """`gputui serve ARGS` on a free port, in its own process group, killed (with its apps) at the end."""
    port, log = free_port(), tmp_path / "serve.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("TMUX", "GPUTUI_SERVE"))} | (env or {})
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gputui", "serve", "--port", str(port), *args],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def listening() -> bool:
            assert proc.poll() is None, f"gputui serve exited with {proc.returncode}:\n{log.read_text()}"
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, 60, 0.2, f"gputui serve to listen on port {port}")
        yield proc, port, log
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)


def apps_of(server: subprocess.Popen) -> list[psutil.Process]:
    """The app processes the server started (one per accepted websocket)."""
    return [
        p
        for p in psutil.Process(server.pid).children(recursive=True)
        if p.cmdline()[1:3] == ["-m", "gputui"] and "serve" not in p.cmdline()
    ]


def statuses(run_dir: Path) -> list[str]:
    out = gputui("status", "--run-dir", run_dir, "--json")
    return [t["status"] for t in json.loads(out.stdout)["tasks"]]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second Unix user")
def test_another_user_needs_the_token_and_our_origin_to_kill_tasks(make_job, reaper, guest, tmp_path):
    job = make_job(num_workers=4, max_parallel=4, sleep=600, merged=False)
    reaper.append(gputui_bg("run", "--jobs", job, log=tmp_path / "run.log"))
    wait_for(lambda: len(make_job.running()) == 4, 60, 0.2, "4 running tasks")

    token = "known-token-for-scripts-0123456789"
    with serving(
        tmp_path,
        "--writable",
        "--run-dir",
        str(make_job.run_dir),
        "--max-sessions",
        "1",
        env={"GPUTUI_SERVE_TOKEN": token},
    ) as (server, port, log):
        own = f"http://127.0.0.1:{port}"
        assert f"gputui serve: {own}/?token={token}  (WRITABLE" in log.read_text(), log.read_text()
        assert token not in " ".join(psutil.Process(server.pid).cmdline())
        cookie = f"gputui-serve-{port}={token}"

        # The attack of issue 21 (N8), and its variants: each refused before any app starts.
        refused = as_guest(
            guest,
            port,
            [
                {"op": "get", "path": "/", "headers": {"Origin": EVIL}},
                {"op": "get", "path": "/static/js/textual.js"},
                {"op": "open", "path": "/ws", "headers": {"Origin": EVIL}},
                {"op": "open", "path": "/ws", "headers": {"Origin": own, "Cookie": f"gputui-serve-{port}=guess"}},
                {"op": "open", "path": f"/ws?token={token}", "headers": {"Origin": EVIL}},
                {
                    "op": "open",
                    "path": f"/ws?token={token}",
                    "headers": {"Origin": own.replace("127.0.0.1", "evil")},
                },
                {"op": "open", "path": "/ws", "headers": {"Cookie": cookie}},  # no Origin: not a browser's page
                # DNS rebinding: evil.example resolved to 127.0.0.1, so the browser sends its name as Host
                {
                    "op": "open",
                    "path": f"/ws?token={token}",
                    "headers": {"Origin": own, "Host": f"evil.example:{port}"},
                },
                {"op": "get", "path": f"/?token={token}", "headers": {"Host": f"evil.example:{port}"}},
            ],
        )
        assert [r["status"] for r in refused] == [403] * len(refused), refused
        assert "token" in refused[0]["body"], refused[0]
        assert apps_of(server) == [], "an app was started for a refused connection"
        assert statuses(make_job.run_dir) == ["running"] * 4

        # With the token and our own page's Origin the same user gets the app, and the app's K, y works.
        allowed = as_guest(
            guest,
            port,
            [
                {"op": "get", "path": f"/?token={token}", "headers": {"Origin": own}},
                {
                    "op": "open",
                    "name": "a",
                    "path": "/ws?width=120&height=40",
                    "headers": {"Origin": own, "Cookie": cookie},
                },
                {"op": "read", "name": "a", "until": "running", "timeout": 90},
                {"op": "open", "path": "/ws", "headers": {"Origin": own, "Cookie": cookie}},  # a 2nd: over the cap
                {"op": "key", "name": "a", "data": "K"},
                {"op": "read", "name": "a", "until": "Kill all 4 tasks", "timeout": 60},
                {"op": "key", "name": "a", "data": "y"},
                {"op": "read", "name": "a", "until": "killed", "timeout": 60},
                {"op": "close", "name": "a"},
            ],
        )
        page, opened, drawn, over, _, confirm, _, killed, _ = allowed
        assert page["status"] == 200 and "/static/css/xterm.css" in page["body"], page
        set_cookie = [v for k, v in page["headers"] if k.lower() == "set-cookie"]
        assert len(set_cookie) == 1 and set_cookie[0].startswith(f"{cookie};"), set_cookie
        assert "HttpOnly" in set_cookie[0] and "SameSite=Strict" in set_cookie[0] and "Path=/" in set_cookie[0]
        assert opened["status"] == 101, opened
        assert drawn["found"], drawn["text"]
        assert over["status"] == 503 and "max-sessions" in over["body"], over
        assert confirm["found"], confirm["text"]
        assert killed["found"], killed["text"]
        wait_for(lambda: statuses(make_job.run_dir) == ["killed"] * 4, 60, 0.5, "all 4 tasks killed")

        # The closed tab's session is freed; the app never sees the token in its environment.
        def reopened():
            ws = serve_client.WebSocket("127.0.0.1", port, "/ws", {"Origin": own, "Cookie": cookie})
            if ws.status != 101:
                ws.sock.close()
                return None
            return ws

        ws = wait_for(reopened, 60, 0.5, "a session once the last one closed")
        try:
            app = wait_for(lambda: apps_of(server), 30, 0.2, "the new session's app")[0]
            assert "GPUTUI_SERVE_TOKEN" not in app.environ() and token not in " ".join(app.cmdline())
        finally:
            ws.close()
        assert token not in re.sub(r"/\?token=\S+", "", log.read_text()), "the token leaked into the log"


def test_random_token_per_serve_and_a_bad_chosen_token_is_refused(tmp_path):
    """Without GPUTUI_SERVE_TOKEN each serve makes its own secret; a guessable chosen one is an error."""
    with serving(tmp_path, "--simulate", "2") as (_, port, log):
        first = re.search(r"\?token=(\S+)", log.read_text()).group(1)
        assert len(first) >= 32
        page = serve_client.get("127.0.0.1", port, f"/?token={first}x", {})
        assert page["status"] == 403, page
    (tmp_path / "serve.log").rename(tmp_path / "first.log")
    with serving(tmp_path, "--simulate", "2") as (_, port, log):
        assert re.search(r"\?token=(\S+)", log.read_text()).group(1) != first
    bad = gputui("serve", "--simulate", "2", env={**os.environ, "GPUTUI_SERVE_TOKEN": "short"})
    assert bad.returncode == 2 and "GPUTUI_SERVE_TOKEN" in bad.stderr, bad
