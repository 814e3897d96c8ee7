"""`gputui metrics` with real runs, a finished one and a live one, on simulated GPUs: printed, served over HTTP on
loopback and scraped, written atomically for node_exporter's textfile collector, ended cleanly by Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import JobFactory, gputui, gputui_bg, wait_for

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.openmetrics.parser import (  # noqa: E402
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus  # noqa: E402

OPENMETRICS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)  # what Prometheus sends


def by_run(families: dict, name: str, **match) -> dict[str, float]:
    """run_dir -> value of the samples of this family whose labels include `match`."""
    return {
        s.labels["run_dir"]: s.value
        for s in families[name].samples
        if all(s.labels.get(k) == v for k, v in match.items())
    }


def parsed(text: str, openmetrics: bool = False) -> dict:
    return {f.name: f for f in (parse_openmetrics if openmetrics else parse_prometheus)(text)}


@pytest.fixture
def runs(make_job, tmp_path, reaper):
    """(finished run dir, live run dir): the live one runs 2 tasks and has 1 waiting, until the test ends."""
    finished = tmp_path / "done" / "finished"
    job = make_job(num_workers=2, gpus_per_worker=1)
    r = gputui("run", "--jobs", job, "--run-dir", finished, "--simulate", "2x24", "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    live = tmp_path / "live" / "it"
    job = make_job(num_workers=3, max_parallel=2, sleep=120)
    sched = gputui_bg("run", "--jobs", job, "--run-dir", live, "--quiet", log=tmp_path / "sched.log")
    reaper.append(sched)

    def two_running():
        r = gputui("metrics", "--run-dir", live, "--simulate", "1")
        return (
            r.returncode == 0
            and by_run(parsed(r.stdout), "gputui_run_tasks", status="running").get(str(live)) == 2
        )

    wait_for(two_running, timeout=60, what="the live run to run 2 tasks")
    return finished, live


def test_printed_the_live_runs_by_default_every_run_with_all_runs(runs):
    finished, live = runs
    r = gputui("metrics", "--simulate", "2x24")
    assert r.returncode == 0, r.stderr
    found = parsed(r.stdout)
    assert by_run(found, "gputui_run_scheduler_live") == {str(live): 1}  # the finished run is not live
    tasks = by_run(found, "gputui_run_tasks", status="running")
    assert tasks == {str(live): 2} and by_run(found, "gputui_run_tasks", status="pending") == {str(live): 1}
    assert by_run(found, "gputui_run_queued_tasks") == {str(live): 1}
    assert by_run(found, "gputui_run_max_parallel") == {str(live): 2}
    gpus = found["gputui_gpu_memory_total_bytes"].samples
    assert [s.labels["gpu"] for s in gpus] == ["0", "1"] and all(s.labels["simulated"] == "true" for s in gpus)
    assert all(s.value == 24 * 1024**3 for s in gpus)

    r = gputui("metrics", "--simulate", "2x24", "--all-runs", "--openmetrics")
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith("# EOF\n")
    found = parsed(r.stdout, openmetrics=True)
    assert by_run(found, "gputui_run_scheduler_live") == {str(live): 1, str(finished): 0}
    assert by_run(found, "gputui_run_tasks", status="done")[str(finished)] == 2
    assert by_run(found, "gputui_run_tasks", status="running")[str(finished)] == 0
    gpu_time = found["gputui_run_gpu_seconds"]
    assert gpu_time.type == "counter"
    (spent,) = [s for s in gpu_time.samples if s.labels["run_dir"] == str(finished)]
    assert spent.name == "gputui_run_gpu_seconds_total" and spent.value > 0 and spent.labels["simulated"] == "true"
    assert {s.labels["job_name"] for s in found["gputui_run_readable"].samples} == {"test"}

    r = gputui("metrics", "--simulate", "1", "--run-dir", finished)
    assert by_run(parsed(r.stdout), "gputui_run_readable") == {str(finished): 1}


def scrape(url: str, accept: str | None = None) -> tuple[str, str, float]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=10) as answer:
        body = answer.read().decode("utf-8")
        return body, answer.headers["Content-Type"], time.perf_counter() - started


def serve(*args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gputui", "metrics", "--serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert "serving http://" in line, line + proc.stderr.read()
    return proc, line.split("serving ")[1].split()[0]


def test_served_on_loopback_fresh_at_each_scrape_in_the_format_asked_for(runs, tmp_path, reaper):
    finished, live = runs
    other, elsewhere = tmp_path / "other", JobFactory(tmp_path / "elsewhere")  # the live run's job file untouched
    (tmp_path / "elsewhere").mkdir()
    r = gputui("run", "--jobs", elsewhere(num_workers=1), "--run-dir", other, "--quiet")
    assert r.returncode == 0, r.stderr
    proc, url = serve(
        "--port", "0", "--simulate", "2x24", "--run-dir", finished, "--run-dir", live, "--run-dir", other
    )
    reaper.append(proc)
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")

    body, ctype, took = scrape(url)
    assert ctype == "text/plain; version=0.0.4; charset=utf-8" and "# EOF" not in body
    found = parsed(body)
    assert by_run(found, "gputui_run_scheduler_live") == {str(finished): 0, str(live): 1, str(other): 0}
    assert len(found["gputui_gpu_memory_used_bytes"].samples) == 2
    body, ctype, took = scrape(url, OPENMETRICS_ACCEPT)
    assert ctype == "application/openmetrics-text; version=1.0.0; charset=utf-8" and body.endswith("# EOF\n")
    found = parsed(body, openmetrics=True)
    assert by_run(found, "gputui_run_tasks", status="running")[str(live)] == 2
    read_s = found["gputui_scrape_duration_seconds"].samples[0].value
    print(f"one scrape, 2 GPUs and 3 runs: read in {read_s * 1000:.1f} ms, answered in {took * 1000:.1f} ms")
    assert took < 2.0

    gputui("kill", "--run-dir", live, "--all")  # read afresh: the next scrape sees it
    wait_for(
        lambda: by_run(parsed(scrape(url)[0]), "gputui_run_tasks", status="killed").get(str(live)) == 3,
        timeout=30,
        what="a scrape to see the kill",
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        scrape(url.replace("/metrics", "/nothing"))
    assert e.value.code == 404
    port = url.rsplit(":", 1)[1].split("/")[0]
    for name in (f"localhost:{port}", "127.0.0.1:19400", "[::1]:9400"):  # SSH tunnels' names too
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Host": name}), timeout=10) as answer:
            assert answer.status == 200
    with pytest.raises(urllib.error.HTTPError) as e:  # a web page's name made to point here (DNS rebinding)
        urllib.request.urlopen(urllib.request.Request(url, headers={"Host": f"evil.example:{port}"}), timeout=10)
    assert e.value.code == 403

    proc.send_signal(signal.SIGINT)  # Ctrl-C
    assert proc.wait(10) == 0
    assert "Traceback" not in proc.stderr.read()


def test_sigterm_ends_a_served_exporter_cleanly_and_a_wildcard_address_is_warned_of(tmp_path, reaper):
    proc, url = serve("--port", "0", "--host", "0.0.0.0", "--simulate", "1")
    reaper.append(proc)
    port = url.rsplit(":", 1)[1].split("/")[0]
    body, _, _ = scrape(f"http://127.0.0.1:{port}/metrics")
    assert "gputui_gpu_memory_used_bytes" in body
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert "warning: listening on 0.0.0.0" in proc.stderr.read()


def test_the_textfile_is_replaced_whole_each_time_and_ctrl_c_ends_cleanly(runs, tmp_path, reaper):
    finished, live = runs
    folder = tmp_path / "textfile"
    folder.mkdir()
    target = folder / "gputui.prom"
    r = gputui("metrics", "--simulate", "2x24", "--all-runs", "--textfile", target)
    assert r.returncode == 0 and r.stdout == "", r.stderr
    assert by_run(parsed(target.read_text()), "gputui_run_scheduler_live") == {str(live): 1, str(finished): 0}

    proc = subprocess.Popen(
        [sys.executable, "-m", "gputui", "metrics", "--simulate", "2x24", "--textfile", target, "--every", "0.05"],
        stderr=subprocess.PIPE,
        text=True,
    )
    reaper.append(proc)
    inode = target.stat().st_ino
    wait_for(lambda: target.stat().st_ino != inode, what="the file to be written again")
    seen = set()
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:  # read as node_exporter would, while it is rewritten: always whole
        text = target.read_text()
        assert text.endswith("\n") and "gputui_scrape_duration_seconds" in text
        found = parsed(text)
        assert by_run(found, "gputui_run_scheduler_live") == {str(live): 1}  # live runs only, this time
        seen.add(target.stat().st_ino)
        assert [p.name for p in folder.iterdir() if p.suffix == ".prom"] == ["gputui.prom"]
    assert len(seen) > 1  # it was replaced meanwhile
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 0
    assert proc.stderr.read() == ""
    assert not [p for p in os.listdir(folder) if p != "gputui.prom"]  # no temp file left behind


@pytest.mark.parametrize(
    "args, said",
    [
        (["--serve"], "--serve needs --port"),
        (["--port", "9100"], "--port and --host are for --serve"),
        (["--every", "5"], "--every is for --textfile"),
        (["--all-runs", "--run-dir", "."], "with --run-dir, name only those"),
        (["--run-dir", "nowhere"], "is not a gputui run directory"),
        (["--simulate", "0"], "GPU count"),
    ],
)
def test_usage_errors_exit_2_with_a_plain_message(args, said, tmp_path):
    r = gputui("metrics", *args, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert said in r.stderr and "Traceback" not in r.stderr


def test_a_run_that_goes_away_is_exported_unreadable_and_the_server_goes_on(make_job, tmp_path, reaper):
    import shutil

    r = gputui("run", "--jobs", make_job(num_workers=1), "--quiet")
    assert r.returncode == 0, r.stderr
    proc, url = serve("--port", "0", "--simulate", "1", "--run-dir", make_job.run_dir)
    reaper.append(proc)
    assert by_run(parsed(scrape(url)[0]), "gputui_run_readable") == {str(make_job.run_dir): 1}
    shutil.rmtree(make_job.run_dir)
    found = parsed(scrape(url)[0])
    assert [(s.labels["job_name"], s.value) for s in found["gputui_run_readable"].samples] == [("test", 0)]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 0
    assert proc.stderr.read().count("cannot be read") == 1  # said once, not at every scrape


def test_a_scrape_imports_neither_the_app_nor_the_scheduler(tmp_path):
    code = (
        "import sys\n"
        "from gputui.cli import main\n"
        "import gputui.tui.serve  # what --serve imports to warn of a non-loopback address\n"
        "main(['metrics', '--simulate', '1', '--all-runs'])\n"
        "heavy = ('gputui.engine.scheduler', 'gputui.tui.app', 'torch')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'textual' or m in heavy)\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_a_loopback_server_answers_only_to_names_of_this_machine():
    from gputui.api.metrics import names_this_machine

    for ok in ("localhost:9400", "LOCALHOST", "127.0.0.1:1", "127.8.9.1", "[::1]:9400", "::1", None, ""):
        assert names_this_machine(ok), ok
    for bad in ("evil.example:9400", "10.0.0.1:9400", "[::2]:1", "localhost.evil.example", "0.0.0.0:9400"):
        assert not names_this_machine(bad), bad
