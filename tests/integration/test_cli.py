"""The command-line verbs a user types, on real runs."""

from __future__ import annotations

import json

from tests.conftest import gputui


def test_gpus_table_labels_simulated_gpus():
    r = gputui("gpus", "--simulate", "2x80")
    assert r.returncode == 0
    assert "SIMULATED" in r.stdout and "80" in r.stdout
    data = json.loads(gputui("gpus", "--simulate", "2x80", "--json").stdout)
    assert data["simulated"] and len(data["gpus"]) == 2 and data["gpus"][1]["index"] == 1


def test_gpus_without_any_gpu_explains_and_suggests_simulate():
    r = gputui("gpus")
    if r.returncode == 0:  # a machine with a real GPU: the table is real
        assert "SIMULATED" not in r.stdout
    else:
        assert r.returncode == 2 and "--simulate" in r.stderr


def test_bad_simulate_spec_is_a_clear_error():
    r = gputui("gpus", "--simulate", "lots")
    assert r.returncode == 2 and "expected N or NxGB" in r.stderr


def test_job_file_error_names_file_key_and_expectation(make_job):
    job = make_job()
    job.write_text(job.read_text().replace("max_parallel = 2", "max_paralel = 2"))
    r = gputui("run", "--jobs", job)
    assert r.returncode == 2
    assert str(job) in r.stderr and "[resources].max_paralel" in r.stderr and "max_parallel" in r.stderr
    assert not (make_job.run_dir / "state.db").exists()  # nothing was started


def test_workers_get_gpus_in_pci_bus_order(make_job):
    job = make_job(num_workers=2, gpus_per_worker=1)
    assert gputui("run", "--jobs", job, "--simulate", "2").returncode == 0
    starts = [e for e in make_job.events() if e["event"] == "start"]
    assert {e["device_order"] for e in starts} == {"PCI_BUS_ID"} and {e["gpus"] for e in starts} == {"0", "1"}


def test_cpu_tasks_see_no_gpu(make_job):
    assert gputui("run", "--jobs", make_job(num_workers=1)).returncode == 0
    assert [e["gpus"] for e in make_job.events() if e["event"] == "start"] == [""]


def test_merge_and_summary_verbs_rebuild_the_products(make_job):
    job = make_job(num_workers=3)
    assert gputui("run", "--jobs", job).returncode == 0
    merged = make_job.run_dir / "outputs" / "merged.csv"
    merged.unlink()
    r = gputui("merge", "--run-dir", make_job.run_dir)
    assert r.returncode == 0 and "merged 80 rows from 3 shard(s)" in r.stdout
    assert merged.read_text().count("\n") == 81
    (make_job.run_dir / "report.md").unlink()
    r = gputui("summary", "--run-dir", make_job.run_dir)
    assert r.returncode == 0 and "3/3 shards done" in (make_job.run_dir / "report.md").read_text()


def test_merge_refuses_when_a_shard_output_is_missing(make_job):
    job = make_job(num_workers=3)
    assert gputui("run", "--jobs", job).returncode == 0
    (make_job.run_dir / "outputs" / "out_0_14.csv").unlink()
    before = (make_job.run_dir / "outputs" / "merged.csv").read_text()
    r = gputui("merge", "--run-dir", make_job.run_dir)
    assert r.returncode == 1 and "merge failed" in r.stdout and "shard-0" in r.stdout
    assert (make_job.run_dir / "outputs" / "merged.csv").read_text() == before
    summary = json.loads((make_job.run_dir / "merge_summary.json").read_text())
    assert not summary["ok"] and any("shard-0" in p for p in summary["problems"])


def test_run_dir_alone_resumes_the_recorded_job(make_job, tmp_path):
    job = make_job(num_workers=2)
    assert gputui("run", "--jobs", job).returncode == 0
    r = gputui("run", "--run-dir", make_job.run_dir, cwd=tmp_path)
    assert r.returncode == 0 and "launch" not in r.stdout and "2/2 done" in r.stdout


def test_control_verbs_name_unknown_tasks_and_need_a_target(make_job):
    job = make_job(num_workers=2)
    assert gputui("run", "--jobs", job).returncode == 0
    r = gputui("kill", "--run-dir", make_job.run_dir, "shard-9")
    assert r.returncode == 1 and "no such task in this run: shard-9" in r.stdout and "shard-0" in r.stdout
    r = gputui("pause", "--run-dir", make_job.run_dir)
    assert r.returncode == 2 and "--all" in r.stderr
    r = gputui("retry", "--run-dir", make_job.run_dir, "shard-0")
    assert r.returncode == 1 and "is done; `retry --force` runs it again" in r.stdout


def test_status_of_a_missing_run_dir_is_a_clear_error(tmp_path):
    r = gputui("status", "--run-dir", tmp_path / "nope")
    assert r.returncode == 2 and "not a gputui run directory" in r.stderr
