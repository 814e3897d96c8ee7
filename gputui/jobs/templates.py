"""Placeholders filled into commands and file names: plain names only, so a job file cannot reach into
objects, and each argv token is filled on its own, so a path with spaces stays one argument."""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gputui.jobs.spec import JobSpec


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
    return [FORMATTER.vformat(token, (), merged) for token in (job.command if command is None else command)]
