"""B9: the app opened with a job file that no longer plans what its run was started with says so in its header, in
the words `gputui run` refuses with, before the user acts on the run believing it runs that file."""

from __future__ import annotations

from gputui.tui.app import GpuTuiApp
from gputui.tui.widgets.run_header import RunHeader
from gputui.views.run_pages import PagedRunView
from tests.conftest import gputui
from tests.tui.test_app import until


def words(text: str) -> str:
    return " ".join(text.split())


async def test_a_changed_job_file_is_named_in_the_header_as_gputui_run_refuses_it(make_job):
    job = make_job(num_workers=4)
    assert gputui("run", "--jobs", job).returncode == 0
    same = PagedRunView(make_job.run_dir, job)
    assert same.snapshot().plan_warning is None, "the job file it was started with: nothing to say"
    same.close()
    make_job(num_workers=2)  # the job file edited: 2 shards now
    refused = gputui("run", "--jobs", job, "--run-dir", make_job.run_dir)
    assert refused.returncode != 0 and "now plans 2 shards" in refused.stderr, refused.stderr
    app = GpuTuiApp(job_path=job, run_dir=make_job.run_dir, simulate="2x24", interval=0.25)
    async with app.run_test(size=(400, 30)) as pilot:
        await until(pilot, lambda: app.snapshot is not None, what="the run")
        progress = str(app.query_one(RunHeader).render()).splitlines()[1]
        assert progress.startswith("⚠ ") and "was started with 4 shards" in progress
        warning = app.snapshot.plan_warning
        assert words(warning) in words(refused.stderr), "the headless refusal's own words"
        assert words(warning)[:300] in progress, "first on the line, before the counts"
        assert "4/4 done" in progress
