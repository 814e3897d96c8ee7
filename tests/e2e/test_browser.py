"""`gputui serve` in a real headless Chromium: the page a colleague without a terminal would open, through the
URL with the token that `gputui serve` printed (without it the page is refused)."""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="chromium and chromedriver are not installed (apt-get install chromium chromium-driver; .ci/run does)",
)

# textual-serve keeps its xterm.js Terminal in a local of its page script (`new w(el).terminal`), reachable
# from no global. Before the page's scripts run, a setter on Object.prototype catches the one assignment
# `this.terminal = new Terminal(...)` and keeps the Terminal in window.__gputuiTerminal; then it goes away.
CATCH_TERMINAL = """
Object.defineProperty(Object.prototype, "terminal", {
  configurable: true,
  get() { return undefined; },
  set(value) {
    Object.defineProperty(this, "terminal", {value, writable: true, configurable: true, enumerable: true});
    if (value && typeof value.write === "function" && typeof value.loadAddon === "function") {
      window.__gputuiTerminal = value;
      delete Object.prototype.terminal;
    }
  },
});
"""

# The text xterm.js holds for the screen (what it draws on its canvas), one string per row.
READ_SCREEN = """
const t = window.__gputuiTerminal;
if (!t) return null;
const b = t.buffer.active, rows = [];
for (let i = 0; i < b.length; i++) { const l = b.getLine(i); rows.push(l ? l.translateToString(true) : ""); }
return {cols: t.cols, rows: t.rows, text: rows.join("\\n"), body: document.body.className};
"""

# Distinct colours of a PNG (the saved screenshot's bytes) inside a rectangle, decoded by the browser.
COUNT_COLOURS = """
const [b64, x, y, w, h, done] = arguments;
fetch("data:image/png;base64," + b64).then(r => r.blob()).then(createImageBitmap).then(img => {
  const c = new OffscreenCanvas(img.width, img.height), g = c.getContext("2d");
  g.drawImage(img, 0, 0);
  const d = g.getImageData(x, y, w, h).data, seen = new Set();
  for (let i = 0; i < d.length; i += 4) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
  done(seen.size);
}).catch(e => done("error: " + e));
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(predicate, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    tail = f"\nserver output:\n{log.read_text()[-3000:]}" if log is not None else ""
    raise AssertionError(f"timed out waiting for {what}{tail}")


@pytest.fixture
def server(tmp_path):
    """`gputui serve --simulate 8x24` on a free port, in a process group of its own, killed whatever happens."""
    port, log = free_port(), tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TMUX", "GPUTUI_"))}
    cmd = [sys.executable, "-m", "gputui", "serve", "--simulate", "8x24", "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:

        def listening() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"gputui serve exited with {proc.returncode}:\n{log.read_text()}")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait(listening, 30, f"gputui serve to listen on port {port}", log)
        token = re.search(r"\?token=(\S+)", log.read_text()).group(1)
        yield proc, port, log, token
    finally:
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)  # the server and every app it started (they share its group)
            except ProcessLookupError:
                break
            try:
                proc.wait(grace)
                if sig == signal.SIGTERM:
                    os.killpg(proc.pid, signal.SIGKILL)  # apps the server left behind, if any
                break
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                break


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def test_served_app_renders_gpu_panels_in_a_browser_read_only(server, browser, tmp_path):
    proc, port, log, token = server
    url = f"http://127.0.0.1:{port}"
    assert f"gputui serve: {url}/?token={token}  (read-only)" in log.read_text(), log.read_text()

    browser.get(url + "/")  # no token, no cookie yet: refused, and no app is started
    assert "forbidden" in browser.find_element("tag name", "body").text, browser.page_source
    assert psutil.Process(proc.pid).children(recursive=True) == []

    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CATCH_TERMINAL})
    browser.get(f"{url}/?token={token}")  # the page's scripts and websocket then go by the cookie it sets

    def panels_drawn():
        screen = browser.execute_script(READ_SCREEN)
        return screen if screen and "GPU 0" in screen["text"] and "SIMULATED" in screen["text"] else None

    screen = wait(panels_drawn, 30, "GPU panels in the browser's terminal", log)
    assert "gputui" in screen["text"] and "monitor" in screen["text"], screen["text"]
    assert "GPU 7" in screen["text"], screen["text"]  # all eight simulated GPUs have a panel
    assert "-first-byte" in screen["body"] and "-closed" not in screen["body"], screen["body"]
    time.sleep(2)  # let a refresh or two reach the canvas, and the intro dialog fade out

    shot = tmp_path / "gputui-serve.png"
    assert browser.save_screenshot(str(shot))
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 800 and height >= 600, (width, height)
    rect = browser.execute_script(
        "const r = document.querySelector('#terminal canvas, #terminal .xterm-screen').getBoundingClientRect();"
        "const k = window.devicePixelRatio; return [r.x * k, r.y * k, r.width * k, r.height * k].map(Math.floor);"
    )
    assert rect[2] > 400 and rect[3] > 300, rect
    colours = browser.execute_async_script(COUNT_COLOURS, base64.b64encode(png).decode(), *rect)
    assert isinstance(colours, int) and colours > 16, f"terminal area of {shot} looks blank: {colours} colours"

    # Read-only by default: the app each browser gets was started with --readonly.
    apps = [
        p
        for p in psutil.Process(proc.pid).children(recursive=True)
        if p.cmdline()[1:3] == ["-m", "gputui"] and "serve" not in p.cmdline()
    ]
    assert len(apps) == 1, [p.cmdline() for p in apps]
    assert "--readonly" in apps[0].cmdline() and "--simulate" in apps[0].cmdline(), apps[0].cmdline()

    (cookie,) = browser.get_cookies()
    assert cookie["value"] == token and cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie

    # Closing the browser ends that browser's app; the server goes on serving.
    browser.quit()
    wait(lambda: not apps[0].is_running() or apps[0].status() == psutil.STATUS_ZOMBIE, 15, "the app to end", log)
    assert proc.poll() is None, log.read_text()
