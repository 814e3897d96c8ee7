"""Job files: what loads, what the user is told when it does not, and how commands are filled."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gputui.jobs.loader import load_jobspec
from gputui.jobs.spec import PLACEHOLDERS, ExecutorSpec, JobSpecError
from gputui.jobs.templates import render_command, render_template, template_values

MINIMAL = """\
[job]
name = "demo"
command = "python worker.py --low {low} --high {high}"

[shards]
input = "data/prompts.csv"
num_workers = 2
"""

FULL = """\
[job]
name = "continuation"
command = "python workers/continue_text.py --input {input} --output {output_dir} --low {low} --high {high}"
workdir = "code"
run_dir = "runs/cont"
stop_grace_s = 2.5
env = { HF_HUB_OFFLINE = "1", BATCH = 8, DEBUG = true }

[shards]
input = "data/prompts.jsonl"
id_column = "row"
shard_size = 250

[resources]
gpus_per_worker = 1
min_free_memory_gb = 10
max_parallel = 8
memory_per_worker_gb = 12.5

[retry]
max_attempts = 5
backoff_s = 1
backoff_max_s = 60

[outputs]
dir = "out"
pattern = "generation_results_data_{low}_to_{high}_{model}.csv"
merged = "generation_results_data_all_merged.csv"

[params]
model = "tiny"
temperature = 0.7
"""

VALUES = {
    "low": 0,
    "high": 250,
    "input": "/data/in.csv",
    "output_dir": "/runs/out",
    "run_dir": "/runs",
    "task_id": "shard-0",
    "attempt": 1,
    "gpus": "0,1",
    "num_gpus": 2,
}


@pytest.fixture
def jobdir(tmp_path: Path) -> Path:
    """A folder with data files the job files can point at."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "prompts.csv").write_text("data_id,text\n1,a\n2,b\n")
    (tmp_path / "data" / "prompts.jsonl").write_text('{"row": 1}\n')
    (tmp_path / "code").mkdir()
    return tmp_path


def write(folder: Path, text: str, name: str = "job.toml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def error_of(path: Path, **kwargs: object) -> str:
    with pytest.raises(JobSpecError) as info:
        load_jobspec(path, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    return message


def replace(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


# -- loading valid files ---------------------------------------------------------------------------------


def test_full_file_loads_every_value_with_absolute_paths(jobdir: Path) -> None:
    path = write(jobdir, FULL)
    job = load_jobspec(path)

    assert job.path == path.resolve()
    assert job.name == "continuation"
    assert job.command[:2] == ("python", "workers/continue_text.py")
    assert "{output_dir}" in job.command
    assert job.workdir == (jobdir / "code").resolve()
    assert job.run_dir == (jobdir / "runs" / "cont").resolve()
    assert job.stop_grace_s == 2.5
    assert job.env == {"HF_HUB_OFFLINE": "1", "BATCH": "8", "DEBUG": "True"}
    assert job.kind_spec.input == (jobdir / "data" / "prompts.jsonl").resolve()
    assert job.kind_spec.format == "jsonl"
    assert job.kind_spec.id_column == "row"
    assert (job.kind_spec.num_workers, job.kind_spec.shard_size) == (None, 250)
    assert job.resources.gpus_per_worker == 1
    assert job.resources.min_free_memory_gb == 10.0
    assert job.resources.max_parallel == 8
    assert job.resources.memory_per_worker_gb == 12.5
    assert (job.retry.max_attempts, job.retry.backoff_s, job.retry.backoff_max_s) == (5, 1.0, 60.0)
    assert job.outputs is not None
    assert job.outputs.dir == (jobdir / "out").resolve()
    assert job.outputs.pattern == "generation_results_data_{low}_to_{high}_{model}.csv"
    assert job.outputs.merged == "generation_results_data_all_merged.csv"
    assert job.params == {"model": "tiny", "temperature": 0.7}
    assert job.text == FULL
    for p in (job.path, job.workdir, job.run_dir, job.kind_spec.input, job.outputs.dir):
        assert p.is_absolute()


def test_defaults(jobdir: Path) -> None:
    job = load_jobspec(write(jobdir, MINIMAL))

    assert job.workdir == jobdir.resolve()
    assert job.run_dir == (jobdir / "runs" / "demo").resolve()
    assert job.stop_grace_s == 10.0
    assert job.env == {} and job.params == {}
    assert job.kind_spec.id_column == "data_id"
    assert job.kind_spec.format == "csv"
    assert (job.kind_spec.num_workers, job.kind_spec.shard_size) == (2, None)
    assert job.resources.gpus_per_worker == 2
    assert job.resources.min_free_memory_gb == 0.0
    assert job.resources.max_parallel is None and job.resources.memory_per_worker_gb is None
    assert (job.retry.max_attempts, job.retry.backoff_s, job.retry.backoff_max_s) == (3, 5.0, 300.0)
    # {output_dir} always has a value: without [outputs] it is <run_dir>/outputs.
    assert job.outputs is not None
    assert job.outputs.dir == job.run_dir / "outputs"
    assert job.outputs.pattern is None and job.outputs.merged is None


def test_command_as_list_is_kept_token_for_token(jobdir: Path) -> None:
    text = replace(
        MINIMAL,
        'command = "python worker.py --low {low} --high {high}"',
        'command = ["python", "my worker.py", "--range", "{low}-{high}"]',
    )
    job = load_jobspec(write(jobdir, text))
    assert job.command == ("python", "my worker.py", "--range", "{low}-{high}")


def test_relative_paths_resolve_against_the_job_file_folder_not_the_cwd(
    jobdir: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = jobdir / "jobs"
    jobs.mkdir()
    text = replace(MINIMAL, 'input = "data/prompts.csv"', 'input = "../data/prompts.csv"')
    text = replace(text, "[shards]", 'workdir = ".."\nrun_dir = "../runs/x"\n\n[shards]')
    path = write(jobs, text + '\n[outputs]\ndir = "out"\n')
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))

    job = load_jobspec(path)

    assert job.kind_spec.input == (jobdir / "data" / "prompts.csv").resolve()
    assert job.workdir == jobdir.resolve()
    assert job.run_dir == (jobdir / "runs" / "x").resolve()
    assert job.outputs is not None and job.outputs.dir == (jobs / "out").resolve()


def test_relative_job_file_path_works_from_its_parent(jobdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(jobdir, MINIMAL)
    monkeypatch.chdir(jobdir)
    job = load_jobspec("job.toml")
    assert job.path == (jobdir / "job.toml").resolve()
    assert job.kind_spec.input == (jobdir / "data" / "prompts.csv").resolve()


def test_run_dir_override_is_relative_to_the_cwd(
    jobdir: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(jobdir, FULL)
    cwd = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(cwd)

    job = load_jobspec(path, run_dir="myrun")

    assert job.run_dir == (cwd / "myrun").resolve()
    # an explicit [outputs].dir stays where the file says
    assert job.outputs is not None and job.outputs.dir == (jobdir / "out").resolve()


def test_run_dir_override_moves_the_default_output_dir(jobdir: Path, tmp_path: Path) -> None:
    job = load_jobspec(write(jobdir, MINIMAL), run_dir=tmp_path / "elsewhere")
    assert job.run_dir == (tmp_path / "elsewhere").resolve()
    assert job.outputs is not None and job.outputs.dir == job.run_dir / "outputs"


@pytest.mark.parametrize(
    ("suffix", "fmt"),
    [(".csv", "csv"), (".jsonl", "jsonl"), (".ndjson", "jsonl"), (".parquet", "parquet"), (".CSV", "csv")],
)
def test_input_format_comes_from_the_extension(jobdir: Path, suffix: str, fmt: str) -> None:
    (jobdir / f"in{suffix}").write_text("x")
    text = replace(MINIMAL, "data/prompts.csv", f"in{suffix}")
    assert load_jobspec(write(jobdir, text)).kind_spec.format == fmt


def test_format_key_overrides_the_extension(jobdir: Path) -> None:
    (jobdir / "rows.txt").write_text('{"data_id": 1}\n')
    text = replace(MINIMAL, 'input = "data/prompts.csv"', 'input = "rows.txt"\nformat = "jsonl"')
    assert load_jobspec(write(jobdir, text)).kind_spec.format == "jsonl"


# -- errors: reading and syntax ----------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "jobs" / "x.toml"
    assert error_of(path) == f"{path}: cannot read job file: No such file or directory"


def test_error_starts_with_the_path_as_given(jobdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(jobdir)
    with pytest.raises(JobSpecError) as info:
        load_jobspec(os.path.join("jobs", "x.toml"))
    assert str(info.value).startswith("jobs/x.toml: cannot read job file")


def test_toml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, '[job]\nname = "x"\ncommand = \n')
    message = error_of(path)
    assert message == f"{path}: TOML syntax error at line 3, column 11: Invalid value"


# -- errors: structure -------------------------------------------------------------------------------------


def test_missing_shards_table(jobdir: Path) -> None:
    path = write(jobdir, MINIMAL.split("[shards]")[0])
    message = error_of(path)
    assert message == (
        f"{path}: [shards]: missing table; expected [shards] with input and num_workers or shard_size"
    )


def test_missing_job_table(jobdir: Path) -> None:
    path = write(jobdir, "[shards]" + MINIMAL.split("[shards]")[1])
    assert "[job]: missing table; expected [job] with name and command" in error_of(path)


def test_sweep_metric_mode_other_than_best_or_last_names_the_file_key_and_choices(jobdir: Path) -> None:
    sweep = '[job]\nname = "s"\nkind = "sweep"\ncommand = "true"\n[sweep]\nmetric = "val_acc"\n'
    stage = '[[sweep.stage]]\nname = "a"\nparams = [{ lr = 1 }]\n'
    assert load_jobspec(write(jobdir, sweep + stage)).kind_spec.metric_mode == "best"
    assert load_jobspec(write(jobdir, sweep + 'metric_mode = "last"\n' + stage)).kind_spec.metric_mode == "last"
    path = write(jobdir, sweep + 'metric_mode = "final"\n' + stage)
    assert error_of(path) == f"{path}: [sweep].metric_mode: expected 'best' or 'last', got 'final' (str)"


def test_unknown_key_suggests_the_close_one(jobdir: Path) -> None:
    path = write(jobdir, MINIMAL + "\n[resources]\ngpu_per_worker = 1\n")
    assert error_of(path) == (f"{path}: [resources].gpu_per_worker: unknown key; did you mean 'gpus_per_worker'?")


def test_unknown_key_without_a_close_match_lists_the_valid_keys(jobdir: Path) -> None:
    path = write(jobdir, MINIMAL + "\n[retry]\nzzz = 1\n")
    assert error_of(path) == (
        f"{path}: [retry].zzz: unknown key; expected one of: max_attempts, backoff_s, backoff_max_s, on_oom"
    )


def test_key_in_the_wrong_table_says_where_it_belongs(jobdir: Path) -> None:
    path = write(jobdir, MINIMAL + "stop_grace_s = 3\n")  # lands in [shards]
    assert "[shards].stop_grace_s: unknown key; 'stop_grace_s' belongs in [job]" in error_of(path)


def test_unknown_table_suggests_the_close_one(jobdir: Path) -> None:
    path = write(jobdir, MINIMAL + "\n[resource]\ngpus_per_worker = 1\n")
    assert error_of(path) == f"{path}: [resource]: unknown table; did you mean [resources]?"


def test_key_before_any_table(jobdir: Path) -> None:
    path = write(jobdir, 'name = "demo"\n' + MINIMAL)
    assert "name: key outside any table; put it under [job]" in error_of(path)


def test_table_given_as_a_value(jobdir: Path) -> None:
    path = write(jobdir, "resources = 3\n" + MINIMAL)
    assert "[resources]: expected a table, got 3 (int)" in error_of(path)


# -- errors: values ----------------------------------------------------------------------------------------


def test_missing_command(jobdir: Path) -> None:
    path = write(jobdir, replace(MINIMAL, 'command = "python worker.py --low {low} --high {high}"\n', ""))
    assert error_of(path) == f"{path}: [job].command: missing; expected a command string or a list of strings"


def test_wrong_type_names_value_and_type(jobdir: Path) -> None:
    path = write(jobdir, MINIMAL + '\n[resources]\ngpus_per_worker = "two"\n')
    assert error_of(path) == (
        f"{path}: [resources].gpus_per_worker: expected a non-negative integer, got 'two' (str)"
    )


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("resources", "gpus_per_worker"),
        ("resources", "max_parallel"),
        ("retry", "max_attempts"),
        ("shards", "num_workers"),
    ],
)
def test_bool_is_not_an_integer(jobdir: Path, table: str, key: str) -> None:
    if table == "shards":
        text = replace(MINIMAL, "num_workers = 2", "num_workers = true")
    else:
        text = MINIMAL + f"\n[{table}]\n{key} = true\n"
    message = error_of(write(jobdir, text))
    assert f"[{table}].{key}: expected a" in message and "integer, got True (bool)" in message


def test_bool_is_not_a_number(jobdir: Path) -> None:
    path = write(jobdir, MINIMAL + "\n[retry]\nbackoff_s = false\n")
    assert "[retry].backoff_s: expected a non-negative number, got False (bool)" in error_of(path)


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("[resources]\ngpus_per_worker = -1", "[resources].gpus_per_worker: expected a non-negative integer"),
        ("[resources]\nmax_parallel = 0", "[resources].max_parallel: expected a positive integer, got 0"),
        ("[resources]\nmemory_per_worker_gb = 0", "[resources].memory_per_worker_gb: expected a positive number"),
        ("[resources]\nmin_free_memory_gb = nan", "[resources].min_free_memory_gb: expected a non-negative"),
        ("[retry]\nmax_attempts = 0", "[retry].max_attempts: expected a positive integer, got 0 (int)"),
        ("[retry]\nbackoff_max_s = -5", "[retry].backoff_max_s: expected a non-negative number, got -5 (int)"),
    ],
)
def test_out_of_range_numbers(jobdir: Path, snippet: str, expected: str) -> None:
    assert expected in error_of(write(jobdir, MINIMAL + "\n" + snippet + "\n"))


def test_stop_grace_must_be_non_negative(jobdir: Path) -> None:
    path = write(jobdir, replace(MINIMAL, "[shards]", "stop_grace_s = -1\n[shards]"))
    assert "[job].stop_grace_s: expected a non-negative number, got -1 (int)" in error_of(path)


def test_time_limit_must_be_a_positive_number(jobdir: Path) -> None:
    for bad, got in (("0", "0 (int)"), ("-5", "-5 (int)"), ('"1h"', "'1h' (str)")):
        path = write(jobdir, replace(MINIMAL, "[shards]", f"time_limit_s = {bad}\n[shards]"))
        error = error_of(path)
        assert str(path) in error and f"[job].time_limit_s: expected a positive number, got {got}" in error
    ok = write(jobdir, replace(MINIMAL, "[shards]", "time_limit_s = 90.5\n[shards]"))
    assert load_jobspec(ok).time_limit_s == 90.5 and load_jobspec(write(jobdir, MINIMAL)).time_limit_s is None


def test_bad_job_name(jobdir: Path) -> None:
    path = write(jobdir, replace(MINIMAL, 'name = "demo"', 'name = "my job"'))
    assert "[job].name: expected only letters, digits, '.', '_' or '-', got 'my job'" in error_of(path)


def test_command_list_with_a_non_string(jobdir: Path) -> None:
    path = write(
        jobdir,
        replace(MINIMAL, 'command = "python worker.py --low {low} --high {high}"', 'command = ["python", 3]'),
    )
    assert "[job].command[1]: expected a string, got 3 (int)" in error_of(path)


def test_command_with_unbalanced_quote(jobdir: Path) -> None:
    path = write(jobdir, replace(MINIMAL, "--high {high}", "--high '{high}"))
    assert "[job].command: cannot split the command string: No closing quotation" in error_of(path)


def test_env_value_must_be_scalar(jobdir: Path) -> None:
    path = write(jobdir, replace(MINIMAL, "[shards]", "env = { PATHS = [1, 2] }\n[shards]"))
    assert "[job].env.PATHS: expected a string, number or boolean, got [1, 2] (array)" in error_of(path)


def test_both_num_workers_and_shard_size(jobdir: Path) -> None:
    path = write(jobdir, replace(MINIMAL, "num_workers = 2", "num_workers = 2\nshard_size = 10"))
    assert f"{path}: [shards]: set exactly one of num_workers or shard_size" in error_of(path)


def test_neither_num_workers_nor_shard_size(jobdir: Path) -> None:
    path = write(jobdir, replace(MINIMAL, "num_workers = 2\n", ""))
    assert f"{path}: [shards]: set exactly one of num_workers or shard_size" in error_of(path)


def test_input_not_found_shows_the_absolute_path(jobdir: Path) -> None:
    path = write(jobdir, replace(MINIMAL, "data/prompts.csv", "data/missing.csv"))
    missing = (jobdir / "data" / "missing.csv").resolve()
    assert error_of(path) == f"{path}: [shards].input: file not found: {missing}"


def test_missing_input_key(jobdir: Path) -> None:
    path = write(jobdir, replace(MINIMAL, 'input = "data/prompts.csv"\n', ""))
    assert "[shards].input: missing; expected the path of a .csv, .jsonl or .parquet file" in error_of(path)


def test_unsupported_input_extension(jobdir: Path) -> None:
    (jobdir / "x.txt").write_text("1\n")
    path = write(jobdir, replace(MINIMAL, "data/prompts.csv", "x.txt"))
    assert error_of(path) == (
        f"{path}: [shards].input: cannot tell the format of 'x.txt'; "
        "expected .csv, .jsonl or .parquet (or set [shards].format)"
    )


def test_unknown_format_value(jobdir: Path) -> None:
    path = write(jobdir, replace(MINIMAL, "num_workers = 2", 'num_workers = 2\nformat = "xlsx"'))
    assert "[shards].format: expected 'csv', 'jsonl' or 'parquet', got 'xlsx' (str)" in error_of(path)


def test_missing_workdir(jobdir: Path) -> None:
    path = write(jobdir, replace(MINIMAL, "[shards]", 'workdir = "nope"\n[shards]'))
    assert f"[job].workdir: directory not found: {(jobdir / 'nope').resolve()}" in error_of(path)


# -- placeholders and params -------------------------------------------------------------------------------


def test_unknown_placeholder_suggests_and_lists_known(jobdir: Path) -> None:
    path = write(jobdir, replace(MINIMAL, "--low {low}", "--low {lwo}"))
    message = error_of(path)
    assert message.startswith(f"{path}: [job].command: unknown placeholder {{lwo}}; did you mean {{low}}? Known: ")
    for name in PLACEHOLDERS:
        assert f"{{{name}}}" in message


def test_unknown_placeholder_in_list_command_names_the_element(jobdir: Path) -> None:
    path = write(
        jobdir,
        replace(
            MINIMAL,
            'command = "python worker.py --low {low} --high {high}"',
            'command = ["python", "w.py", "{hihg}"]',
        ),
    )
    assert "[job].command[2]: unknown placeholder {hihg}; did you mean {high}?" in error_of(path)


def test_json_in_command_hints_at_escaping_braces(jobdir: Path) -> None:
    path = write(
        jobdir,
        replace(
            MINIMAL,
            'command = "python worker.py --low {low} --high {high}"',
            """command = ['python', 'w.py', '--cfg', '{"a": 1}']""",
        ),
    )
    message = error_of(path)
    assert '[job].command[3]: unknown placeholder {"a"}; known: {low}' in message
    assert message.endswith("; write {{ or }} for a literal brace")


def test_single_brace_is_a_bad_template(jobdir: Path) -> None:
    path = write(jobdir, replace(MINIMAL, "--high {high}", "--high {high"))
    message = error_of(path)
    assert "[job].command: bad template '{high'" in message and "expected '}' before end of string" in message


def test_double_braces_are_literal(jobdir: Path) -> None:
    path = write(
        jobdir,
        replace(
            MINIMAL,
            'command = "python worker.py --low {low} --high {high}"',
            """command = ['python', 'w.py', '--cfg', '{{"a": {low}}}']""",
        ),
    )
    job = load_jobspec(path)
    assert render_command(job, VALUES)[-1] == '{"a": 0}'


def test_bad_format_spec_fails_at_load_time(jobdir: Path) -> None:
    path = write(jobdir, replace(MINIMAL, "--high {high}", "--high {input:05d}"))
    assert "[job].command: cannot fill '{input:05d}': Unknown format code 'd'" in error_of(path)


def test_unknown_placeholder_in_output_pattern(jobdir: Path) -> None:
    path = write(jobdir, MINIMAL + '\n[outputs]\npattern = "out_{lo}.csv"\n')
    assert "[outputs].pattern: unknown placeholder {lo}; did you mean {low}?" in error_of(path)


def test_output_pattern_must_name_each_shard(jobdir: Path) -> None:
    path = write(jobdir, MINIMAL + '\n[outputs]\npattern = "out.csv"\n')
    assert "[outputs].pattern: must use {low}, {high} or {task_id} so each shard" in error_of(path)


def test_output_pattern_cannot_change_between_attempts(jobdir: Path) -> None:
    path = write(jobdir, MINIMAL + '\n[outputs]\npattern = "out_{low}_try{attempt}.csv"\n')
    assert "[outputs].pattern: cannot use {attempt}: a shard's output file must be the same" in error_of(path)


def test_output_pattern_must_stay_inside_the_output_dir(jobdir: Path) -> None:
    path = write(jobdir, MINIMAL + '\n[outputs]\npattern = "{output_dir}/out_{low}.csv"\n')
    assert "[outputs].pattern: expected a file name relative to [outputs].dir" in error_of(path)


@pytest.mark.parametrize(
    ("merged", "problem"),
    [
        (".", "names a folder"),
        ("sub/.", "names a folder"),
        ("sub/", "names a folder"),
        ("\\u0000all.csv", "contains a NUL character"),
        ("~/all.csv", "leaves [outputs].dir"),
        ("../all.csv", "leaves [outputs].dir"),
        ("all.csv\\\\", "names a folder"),
    ],
)
def test_merged_name_is_held_to_the_rule_of_every_output_name(jobdir: Path, merged: str, problem: str) -> None:
    path = write(jobdir, MINIMAL + f'\n[outputs]\npattern = "out_{{low}}.csv"\nmerged = "{merged}"\n')
    message = error_of(path)
    assert "[outputs].merged: expected a file name relative to [outputs].dir" in message and problem in message


def test_params_are_usable_in_command_and_pattern(jobdir: Path) -> None:
    text = replace(MINIMAL, "--high {high}", "--high {high} --model {model} --t {temperature} --v {verbose}")
    path = write(
        jobdir,
        text + '\n[outputs]\npattern = "{model}_{low}.csv"\n'
        '\n[params]\nmodel = "tiny llm"\ntemperature = 0.5\nverbose = true\n',
    )
    job = load_jobspec(path)

    argv = render_command(job, VALUES)
    assert argv[-6:] == ["--model", "tiny llm", "--t", "0.5", "--v", "True"]
    assert job.outputs is not None and job.outputs.pattern is not None
    assert render_template(job.outputs.pattern, template_values(job, VALUES)) == "tiny llm_0.csv"


def test_param_shadowing_a_builtin_is_an_error(jobdir: Path) -> None:
    path = write(jobdir, MINIMAL + "\n[params]\nlow = 5\n")
    assert error_of(path) == (
        f"{path}: [params].low: shadows the built-in placeholder {{low}}; choose another name"
    )


def test_param_name_must_be_an_identifier(jobdir: Path) -> None:
    path = write(jobdir, MINIMAL + "\n[params]\nmax-len = 5\n")
    assert "[params].max-len: expected a name usable as a placeholder" in error_of(path)


def test_param_value_must_be_scalar(jobdir: Path) -> None:
    path = write(jobdir, MINIMAL + "\n[params]\nlayers = [1, 2]\n")
    assert "[params].layers: expected a string, number or boolean, got [1, 2] (array)" in error_of(path)


# -- rendering ---------------------------------------------------------------------------------------------


def test_render_keeps_a_path_with_spaces_as_one_argument(jobdir: Path) -> None:
    text = replace(MINIMAL, "--low {low} --high {high}", "--input {input} --low {low} --high {high}")
    job = load_jobspec(write(jobdir, text))
    argv = render_command(job, {**VALUES, "input": "/my data/prompts file.csv"})
    assert argv[2:4] == ["--input", "/my data/prompts file.csv"]
    assert len(argv) == 8


def test_render_converts_values_with_str(jobdir: Path) -> None:
    job = load_jobspec(write(jobdir, MINIMAL))
    assert render_command(job, {**VALUES, "low": Path("/a"), "high": 2.5})[-3:] == ["/a", "--high", "2.5"]


def test_render_format_spec(jobdir: Path) -> None:
    job = load_jobspec(write(jobdir, replace(MINIMAL, "--low {low}", "--low {low:06d}")))
    assert render_command(job, {**VALUES, "low": 42})[3] == "000042"


def test_render_missing_value_raises_key_error_naming_it(jobdir: Path) -> None:
    job = load_jobspec(write(jobdir, MINIMAL))
    with pytest.raises(KeyError, match="high"):
        render_command(job, {"low": 0})


def test_builtins_win_over_params_when_rendering(jobdir: Path) -> None:
    text = replace(MINIMAL, "--high {high}", "--high {high} --m {model}")
    job = load_jobspec(write(jobdir, text + '\n[params]\nmodel = "a"\n'))
    assert render_command(job, {**VALUES, "model": "b"})[-1] == "b"
    assert render_command(job, VALUES)[-1] == "a"


def test_render_template() -> None:
    assert render_template("res_{low}_to_{high}.csv", {"low": 0, "high": 10}) == "res_0_to_10.csv"
    with pytest.raises(KeyError, match="high"):
        render_template("res_{low}_to_{high}.csv", {"low": 0})


# -- [alerts] ---------------------------------------------------------------------------------------------


def test_alerts_table_loads_and_defaults_to_nothing(jobdir: Path) -> None:
    job = load_jobspec(
        write(jobdir, MINIMAL + '\n[alerts]\ncommand = "notify-send gputui"\nidle_minutes = 10\nbell = true\n')
    )
    assert (job.alerts.command, job.alerts.idle_minutes, job.alerts.bell) == ("notify-send gputui", 10.0, True)
    plain = load_jobspec(write(jobdir, MINIMAL, "plain.toml")).alerts
    assert (plain.command, plain.idle_minutes, plain.bell) == (None, None, False)


def test_misspelt_alerts_key_suggests_the_close_one(jobdir: Path) -> None:
    path = write(jobdir, MINIMAL + '\n[alerts]\ncomand = "true"\n')
    assert error_of(path) == f"{path}: [alerts].comand: unknown key; did you mean 'command'?"


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("bell = 1", "[alerts].bell: expected true or false, got 1 (int)"),
        ("idle_minutes = 0", "[alerts].idle_minutes: expected a positive number, got 0 (int)"),
        ('command = ""', "[alerts].command: expected a non-empty string, got '' (str)"),
    ],
)
def test_bad_alerts_values_are_named(jobdir: Path, snippet: str, expected: str) -> None:
    assert expected in error_of(write(jobdir, MINIMAL + f"\n[alerts]\n{snippet}\n"))


# -- [executor] ------------------------------------------------------------------------------------------


def test_executor_defaults_to_this_machine_and_takes_a_ray_cluster(jobdir: Path) -> None:
    assert load_jobspec(write(jobdir, MINIMAL)).executor == ExecutorSpec("local", "auto", None)
    text = MINIMAL + '[executor]\nkind = "ray"\naddress = "10.0.0.5:6379"\n'
    assert load_jobspec(write(jobdir, text)).executor == ExecutorSpec("ray", "10.0.0.5:6379", None)
    text = MINIMAL + '[executor]\nkind = "ray"\naddress = "local"\nnum_gpus = 2\n'
    assert load_jobspec(write(jobdir, text)).executor == ExecutorSpec("ray", "local", 2)


def test_executor_takes_a_slurm_partition_and_sbatch_options(jobdir: Path) -> None:
    text = '[executor]\nkind = "slurm"\npartition = "gpu"\nextra_args = ["--time=02:00:00", "--account=lab"]\n'
    text = MINIMAL + text
    spec = load_jobspec(write(jobdir, text)).executor
    assert (spec.kind, spec.partition, spec.extra_args) == ("slurm", "gpu", ("--time=02:00:00", "--account=lab"))
    assert load_jobspec(write(jobdir, MINIMAL + '[executor]\nkind = "slurm"\n')).executor.partition is None


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ('kind = "kubernetes"', "[executor].kind: expected one of 'local', 'ray', 'slurm', got 'kubernetes'"),
        ('kind = "rays"', "[executor].kind: expected one of 'local', 'ray', 'slurm', got 'rays'"),
        ('address = "auto"', "[executor].address: applies to kind = \"ray\" only (kind is 'local')"),
        ('kind = "ray"\nnum_gpus = 4', "[executor].num_gpus: declares the GPUs of a private cluster"),
        ('kind = "ray"\nport = 1', "[executor].port: unknown key; expected one of: kind, address, num_gpus, part"),
        ('kind = "ray"\npartition = "gpu"', '[executor].partition: applies to kind = "slurm" only'),
        ('kind = "slurm"\naddress = "auto"', '[executor].address: applies to kind = "ray" only'),
        ('kind = "slurm"\nextra_args = "--time=1"', "[executor].extra_args: expected a list of sbatch options"),
        ('kind = "slurm"\nextra_args = [3]', "[executor].extra_args: expected a list of sbatch options"),
        ('kind = "slurm"\nextra_args = ["--array=0-9"]', "[executor].extra_args: --array is gputui's to set"),
        ('kind = "slurm"\nextra_args = ["--gres=gpu:2"]', "[executor].extra_args: --gres is gputui's"),
        ('kind = "ray"\naddress = ""', "[executor].address: expected a non-empty string"),
    ],
)
def test_executor_mistakes_name_the_key_and_what_was_expected(jobdir: Path, snippet: str, expected: str) -> None:
    assert expected in error_of(write(jobdir, MINIMAL + "[executor]\n" + snippet + "\n"))


def test_a_cluster_places_tasks_so_the_run_mode_cannot_size_them(jobdir: Path) -> None:
    text = MINIMAL + '[resources]\nmode = "auto"\n[model]\npath = "m"\n[executor]\nkind = "ray"\n'
    assert "[resources].mode: sizes GPUs from this machine's; with [executor] kind = 'ray'" in error_of(
        write(jobdir, text)
    )
