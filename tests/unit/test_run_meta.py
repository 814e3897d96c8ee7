"""A run's facts (rundir.meta.RunMeta): written and read in one place, with the job file's own defaults; run
directories written by earlier gputui read the same, and earlier gputui reads ours (the layout is unchanged)."""

from __future__ import annotations

from dataclasses import replace

from gputui.executors.ray_executor import RecordedRay
from gputui.executors.registry import recorded_executor
from gputui.jobs.loader import load_jobspec
from gputui.jobs.plans import plan_job
from gputui.jobs.spec import AlertSpec, JobSpec, ResourceSpec, RetrySpec
from gputui.rundir.meta import ExecutorFacts, JobFacts, OutputSettings, RunMeta, read_meta, write_meta
from gputui.rundir.opening import open_for_job
from gputui.rundir.store import Store
from gputui.views.kinds import ranked_by
from tests.tui.fixed_run import shard_file

# What the gputui before RunMeta (and before job kinds) recorded of a shards job started on Ray with `--simulate
# 2x24`, key by key: open_for_job's set_meta calls, then the scheduler's as it started (the bell, the executor's
# own facts). "sweep" was then recorded for every job, null for all but a sweep; a shard job's plan no longer
# records it (its kind's facts are integer_ids, input and id_column).
PREVIOUS = {
    "scheduler_id": "59fb0316-368d-48fe-9de5-55a0f4bf3275",
    "plan_fingerprint": "d4e538d2c7719038",
    "plan_definition": [[0, 50], [50, 100], [100, 150]],
    "created_at": 1796642105.6522896,
    "outputs_dir": "/r/out",
    "outputs_pattern": "part_{low}_{high}_{lang}.csv",
    "outputs_params": {"lang": "en"},
    "job_name": "continuation",
    "job_file": "/r/continuation.toml",
    "job_kind": "shards",
    "sweep": None,
    "integer_ids": True,
    "input": "/r/ids.csv",
    "id_column": "id",
    "merged": "/r/out/all.csv",
    "stop_grace_s": 7.5,
    "max_attempts": 5,
    "backoff_max_s": 60.0,
    "gpus_per_worker": 1,
    "memory_per_worker_gb": 12.0,
    "simulate": "2x24",
    "alert_bell": False,
    "executor": "ray",
    "ray_address": "head:6379",
    "ray_num_gpus": 4,
}


def written_by_the_store(path, keys: dict) -> None:
    """A state database whose meta was written key by key through the store, as earlier gputui wrote it."""
    store = Store.open(path, create=True)
    with store.transaction():
        for key, value in keys.items():
            store.set_meta(key, value)
    store.close()


def read(path) -> RunMeta:
    store = Store.open(path, readonly=True)
    try:
        return read_meta(store)
    finally:
        store.close()


def test_a_run_recorded_by_the_previous_gputui_reads_as_typed_facts(tmp_path):
    written_by_the_store(tmp_path / "state.db", PREVIOUS)
    meta = read(tmp_path / "state.db")
    assert meta.identity.scheduler_id == PREVIOUS["scheduler_id"]
    assert meta.identity.plan_definition == [[0, 50], [50, 100], [100, 150]]
    assert (meta.job.name, meta.job.file, meta.job.kind) == ("continuation", "/r/continuation.toml", "shards")
    assert meta.job.outputs == OutputSettings("/r/out", "part_{low}_{high}_{lang}.csv", {"lang": "en"})
    assert meta.job.kind_facts == {"integer_ids": True, "input": "/r/ids.csv", "id_column": "id"}  # the kind's
    assert meta.job.merged == "/r/out/all.csv" and ranked_by(meta) is None
    assert (meta.job.stop_grace_s, meta.job.max_attempts, meta.job.backoff_max_s) == (7.5, 5, 60.0)
    assert (meta.simulate, meta.job.alert_bell, meta.run_failed) == ("2x24", False, None)
    assert meta.executor == ExecutorFacts("ray", {"ray_address": "head:6379", "ray_num_gpus": 4})
    again = recorded_executor(tmp_path, meta.executor.get)  # the executor reads back its own facts
    assert isinstance(again, RecordedRay) and (again.address, again.num_gpus) == ("head:6379", 4)


def test_what_we_write_is_what_the_previous_gputui_wrote_so_it_reads_our_runs(tmp_path):
    written_by_the_store(tmp_path / "old.db", PREVIOUS)
    meta = read(tmp_path / "old.db")
    store = Store.open(tmp_path / "new.db", create=True)
    write_meta(store, meta)
    stored = store.all_meta()
    store.close()
    kept = {k: v for k, v in PREVIOUS.items() if k != "sweep"}  # a shard job's plan no longer records it
    assert {k: v for k, v in stored.items() if k in PREVIOUS} == kept
    # the store's own; nulls: the run failing, the job file's max_parallel and one set by `gputui set`; the
    # job file's share_gpu as its default (false)
    assert set(stored) - set(PREVIOUS) == {
        "schema_version",
        "run_failed",
        "job_max_parallel",
        "max_parallel_set",
        "packing_off",
        "share_gpu",
    }
    assert stored["share_gpu"] is False


def test_a_run_from_before_a_fact_was_kept_reads_the_job_files_default(tmp_path):
    """A schema-2 run kept its scheduler id and little else: every other fact is the JobSpec's default."""
    written_by_the_store(tmp_path / "state.db", {"scheduler_id": "sched-v2", "plan_fingerprint": "f"})
    meta = read(tmp_path / "state.db")
    assert meta.identity.scheduler_id == "sched-v2" and meta.identity.created_at is None
    assert meta.job.max_attempts == RetrySpec().max_attempts == 3  # the one default, RetrySpec's
    assert meta.job.stop_grace_s == JobSpec.stop_grace_s and meta.job.backoff_max_s == RetrySpec().backoff_max_s
    assert meta.job.gpus_per_worker == ResourceSpec().gpus_per_worker and meta.job.kind == "shards"
    assert meta.job.outputs is None  # not recorded: the output check judges from the paths, as it always did
    assert meta.executor.kind == "local" and meta.executor.get("executor", "x") == "local"
    assert meta.job.alert_bell is True and AlertSpec().bell is False  # the app rang for one that recorded none
    assert (meta.simulate, meta.run_failed, meta.job.kind_facts) == (None, None, {})
    assert meta == RunMeta(replace(RunMeta().identity, scheduler_id="sched-v2", plan_fingerprint="f"))


def test_a_damaged_value_reads_as_the_default_and_the_store_is_left_as_it_was(tmp_path):
    damaged = {"max_attempts": "many", "stop_grace_s": None, "job_kind": "sweep", "sweep": [1]}
    written_by_the_store(tmp_path / "state.db", damaged)
    meta = read(tmp_path / "state.db")
    assert (meta.job.max_attempts, meta.job.stop_grace_s, meta.job.kind_facts) == (3, 10.0, {"sweep": [1]})
    assert ranked_by(meta) is None and meta.executor.settings == {}  # the kind's to judge; never the executor's


def test_a_sweep_keeps_its_terms_as_its_kinds_facts_and_ranks_by_them(tmp_path):
    terms = {"metric": "loss", "goal": "min", "top_k": 2}
    written_by_the_store(tmp_path / "state.db", {"job_kind": "sweep", "sweep": terms, "executor": "local"})
    meta = read(tmp_path / "state.db")
    assert meta.job.kind_facts == {"sweep": terms} and ranked_by(meta) == "loss"
    store = Store.open(tmp_path / "new.db", create=True)
    write_meta(store, meta)
    assert store.meta("sweep") == terms and read_meta(store) == meta
    store.close()


def test_every_kind_declares_the_facts_its_plans_record():
    """A key a plan records that its kind does not declare would read back as the executor's."""
    from gputui.jobs.kinds.registry import KINDS
    from gputui.rundir.meta import OWN_KEYS

    declared = [key for kind in KINDS.values() for key in kind.recorded_keys]
    assert len(declared) == len(set(declared)) and not set(declared) & OWN_KEYS


def test_the_engine_records_the_job_and_keeps_the_identity_and_probe_across_starts(tmp_path):
    job = load_jobspec(shard_file(tmp_path, 3), run_dir=tmp_path / "run")
    run = open_for_job(job, simulate="2x24")
    first = run.meta
    assert first.simulate == run.simulate == "2x24" and run.scheduler_id == first.identity.scheduler_id
    run.close()
    assert first.job == JobFacts.of(job, plan_job(job)) and first.job.memory_per_worker_gb == 12.0
    assert first.job.alert_bell is False  # the job file's: it asks for no bell
    run = open_for_job(job)  # started again without --simulate: the probe is kept, so is the identity
    assert run.meta == first
    with run.store.transaction():  # as a scheduler records itself, then a sweep rule's verdict
        write_meta(run.store, run.meta.started({"executor": "ray", "ray_address": "auto"}))
        write_meta(run.store, run.meta.failed("no trial of stage task1 ranked"))
    meta = run.meta
    assert meta.executor == ExecutorFacts("ray", {"ray_address": "auto"})
    assert meta.run_failed == "no trial of stage task1 ranked" and meta.identity == first.identity
    run.close()
    run = open_for_job(job, simulate="4x80")
    assert (run.meta.simulate, run.meta.executor.kind, run.meta.run_failed) == ("4x80", "ray", meta.run_failed)
    run.close()


def test_a_max_parallel_set_is_kept_when_the_run_is_started_again(tmp_path):
    """`gputui set max_parallel=N` outlives the job facts a start records again; `job` (None) takes it back."""
    store = Store.open(tmp_path / "state.db", create=True)
    write_meta(store, RunMeta(job=JobFacts(max_parallel=8)).parallel(3))
    meta = read_meta(store)
    assert (meta.max_parallel, meta.job.max_parallel) == (3, 8)
    again = meta.opened(meta.identity, JobFacts(max_parallel=6), None)
    write_meta(store, again)
    assert (read_meta(store).max_parallel, read_meta(store).job.max_parallel) == (3, 6)
    write_meta(store, read_meta(store).parallel(None))
    assert read_meta(store).max_parallel is None
    store.close()
