"""Each task's own output name is checked before anything runs: a format spec can turn one id into a '/'
or '..', which the loader's single example cannot show (attack N6: `{low:c}` wrote outside the run)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gputui.jobs.loader import load_jobspec
from gputui.jobs.plans import plan_job
from gputui.jobs.spec import JobSpecError
from tests.conftest import gputui

WORKER = Path(__file__).parents[1] / "workers" / "shard_worker.py"


def _job(root: Path, ids: range, pattern: str) -> Path:
    (root / "data.csv").write_text("data_id,value\n" + "".join(f"{i},v{i}\n" for i in ids))
    job = root / "job.toml"
    job.write_text(f"""
[job]
name = "escape"
command = "{sys.executable} {WORKER} --input {{input}} --output {{output_dir}} --low {{low}} --high {{high}}"
[shards]
input = "data.csv"
shard_size = 1
[outputs]
pattern = "{pattern}"
""")
    return job


def _written_outside(root: Path) -> list[Path]:
    outputs = root / "runs" / "escape" / "outputs"
    found = [p for p in root.rglob("*.csv") if p.name != "data.csv" and outputs not in p.parents]
    return found + [p for p in (Path("/escaped_48.csv"), Path("/.escaped_48.csv.done.json")) if p.exists()]


@pytest.mark.parametrize("verb", ["plan", "run"])
def test_an_output_name_that_leaves_the_outputs_dir_for_one_task_is_refused_before_launch(tmp_path, verb):
    # ids 40..59: only shard-6 (low 46, chr(46) == '.') and shard-7 (low 47, '/') leave [outputs].dir.
    job = _job(tmp_path, range(40, 60), "{low:c}{low:c}/escaped_{high}.csv")
    r = gputui(verb, "--jobs", job)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f'{job}: [outputs].pattern: shard-6\'s output "../escaped_47.csv" leaves [outputs].dir' in r.stderr
    assert "Traceback" not in r.stderr
    assert _written_outside(tmp_path) == []
    assert not (tmp_path / "runs" / "escape" / "state.db").exists()  # nothing was planned into a run


def test_attack_pattern_over_ids_from_zero_is_refused_at_the_first_bad_name(tmp_path):
    job = _job(tmp_path, range(60), "{low:c}{low:c}/escaped_{high}.csv")
    with pytest.raises(JobSpecError, match=r'shard-0\'s output "\\u0000\\u0000/escaped_1.csv" contains a NUL'):
        plan_job(load_jobspec(job))
    # Names that stay inside, however written, are planned as they always were.
    job.write_text(job.read_text().replace("{low:c}{low:c}/escaped_", "./part_{low:03d}//of_"))
    out = tmp_path / "runs" / "escape" / "outputs"
    outputs = [t.output for t in plan_job(load_jobspec(job)).tasks]
    assert outputs == [str(out / f"part_{i:03d}" / f"of_{i + 1}.csv") for i in range(60)]


@pytest.mark.parametrize(
    ("ids", "pattern", "bad"),
    [
        (range(46, 48), "{low:c}x_{high}.csv", 'shard-1\'s output "/x_48.csv" leaves'),  # absolute
        (range(46, 47), "{low:c}", 'shard-0\'s output "." names a folder'),  # the folder itself
        (range(47, 48), "sub{low:c}", 'shard-0\'s output "sub/" names a folder'),  # a folder below it
        (range(47, 48), "sub{low:c}.", 'shard-0\'s output "sub/." names a folder'),  # the same, written so
        (range(126, 127), "{low:c}x_{high}.csv", 'shard-0\'s output "~x_127.csv" leaves'),  # a home folder
        (range(92, 93), "x{low:c}", 'shard-0\'s output "x\\\\" names a folder'),  # as the loader judges merged
        (range(0x10FFFF + 1, 0x10FFFF + 2), "{low:c}.csv", "cannot fill"),  # not a character at all
        (range(0xD800, 0xD801), "{low:c}.csv", "a lone surrogate"),
    ],
)
def test_every_way_a_filled_name_can_miss_a_file_in_the_outputs_dir(tmp_path, ids, pattern, bad):
    job = _job(tmp_path, ids, pattern)
    with pytest.raises(JobSpecError, match="shard-") as e:
        plan_job(load_jobspec(job))
    assert str(e.value).startswith(f"{job}: [outputs].pattern: ") and bad in str(e.value)


def test_a_name_only_the_sample_ids_would_break_is_judged_by_each_tasks_own(tmp_path):
    """The loader checks the pattern filled with sample ids by the same rule as each task's name; a problem of
    the samples alone ({low:c} of 0 is a NUL) is not the job's: its real names are planned as they are."""
    job = _job(tmp_path, range(65, 68), "{low:c}.csv")
    out = tmp_path / "runs" / "escape" / "outputs"
    assert [t.output for t in plan_job(load_jobspec(job)).tasks] == [str(out / f"{c}.csv") for c in "ABC"]


def test_a_refused_name_never_reaches_the_terminal_raw(tmp_path):
    """A job file generated from other input may hold control characters in its pattern (an 8-bit CSI
    here, written as a TOML escape): the refusal names the task's output with them made visible."""
    job = _job(tmp_path, range(40, 60), "{low:c}{low:c}/\\u009b{high}.csv")
    r = gputui("plan", "--jobs", job)
    assert r.returncode == 2, r.stdout + r.stderr
    assert 'shard-6\'s output "../\\x9b47.csv" leaves [outputs].dir' in r.stderr
    assert not any(0x80 <= ord(c) < 0xA0 or c == "\x1b" for c in r.stderr)
