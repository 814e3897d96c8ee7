"""A job's plan, asked of its kind: the tasks it starts with and what identifies it (jobs/kinds/base.Plan), so a
run directory is never driven by a changed plan (ids processed twice or skipped, a stage ranked on other
terms). Pure but for the input a shard job reads to split it."""

from __future__ import annotations

from gputui.jobs.kinds.base import Plan
from gputui.jobs.kinds.registry import kind_of
from gputui.jobs.spec import JobSpec

__all__ = ["Plan", "plan_job"]


def plan_job(job: JobSpec) -> Plan:
    return kind_of(job).plan(job)
