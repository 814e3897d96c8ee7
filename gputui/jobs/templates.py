"""Placeholders filled into commands and file names: plain names only, so a job file cannot reach into
objects, and each argv token is filled on its own, so a path with spaces stays one argument."""

from __future__ import annotations

import json
import string
from collections.abc import Mapping, Sequence
from typing import Any

from gputui.jobs.spec import JobSpec, JobSpecError
from gputui.text_safety import visible


class Formatter(string.Formatter):
    """str.format_map with plain names only; a value is str()-ed unless the field has a format spec."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
        if not field_name.isidentifier():
            raise ValueError(f"placeholder {{{field_name}}}: only plain names like {{low}} are allowed")
        return kwargs[field_name], field_name  # KeyError(name) when no value is given

    def format_field(self, value: Any, format_spec: str) -> str:
        return format(value, format_spec) if format_spec else str(value)


FORMATTER = Formatter()


def template_values(job: JobSpec, values: Mapping[str, object]) -> dict[str, object]:
    """The values a template of `job` is filled with: job.params, then `values` (built-ins win)."""
    return {**job.params, **values}


def render_template(template: str, values: Mapping[str, object]) -> str:
    """Fill one template (e.g. [outputs].pattern). Values are str()-ed; a missing one raises KeyError(name).

    Pass template_values(job, values) when the template may use [params].
    """
    return FORMATTER.vformat(template, (), values)


def render_command(job: JobSpec, values: Mapping[str, object], command: Sequence[str] | None = None) -> list[str]:
    """Fill the argv template (the job's, or `command`: a pipeline step's); each token is formatted on its
    own, so paths with spaces stay one arg."""
    merged = template_values(job, values)
    return [
        FORMATTER.vformat(token, (), merged) if "{" in token or "}" in token else token  # (a plain one: as it is)
        for token in (job.command if command is None else command)
    ]


def name_problem(name: str) -> str | None:
    """Why a file name ([outputs].pattern as filled in, or [outputs].merged) would not name a file inside
    [outputs].dir, or None when it does: the one rule, for the loader's check and for each task's name.
    Judged on the text alone (no symlink followed, nothing need exist): no NUL or lone surrogate, not
    absolute or from a home folder (`~` is not expanded), no `..` component, and its last component names a
    file (not empty, not `.`, no trailing `\\` either: it was meant as a folder)."""
    if "\0" in name:
        return "contains a NUL character"
    try:
        name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return "cannot be a file name (a lone surrogate character)"
    if name.startswith(("/", "~")) or ".." in name.split("/"):
        return "leaves [outputs].dir"
    if name.split("/")[-1] in ("", ".") or name.endswith("\\"):  # "" for an empty name or one ending in /
        return "names a folder, not a file in [outputs].dir"
    return None


def output_path(job: JobSpec, task_id: str, values: Mapping[str, object]) -> str:
    """A task's output file: [outputs].pattern filled with `values` (and [params]) under [outputs].dir.
    Every task's own name is checked, not an example: a format spec such as {low:c} can turn one id into
    a '/' or '..' (refused as JobSpecError naming the job file, the task and the name)."""
    try:
        name = render_template(job.outputs.pattern, {**values, **job.params})
    except KeyError as e:
        raise JobSpecError(
            f"{job.path}: [outputs].pattern: placeholder {{{e.args[0]}}} is not known when outputs are "
            f"planned; use {{low}}, {{high}}, {{task_id}} or a [params] name"
        ) from None
    except (ValueError, TypeError, OverflowError) as e:
        raise JobSpecError(
            f"{job.path}: [outputs].pattern: cannot fill {job.outputs.pattern!r} for {task_id}: {e}"
        ) from None
    problem = name_problem(name)
    if problem is not None:
        raise JobSpecError(
            f"{job.path}: [outputs].pattern: {task_id}'s output {visible(json.dumps(name, ensure_ascii=False))} "
            f"{problem}; each task's output must be a file name inside [outputs].dir"
        )
    return str(job.outputs.dir / name)
