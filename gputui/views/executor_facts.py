"""What screens know of the run's executor, asked of the executor the run recorded (executors.registry):
where a cluster attempt runs, what a kill reaches, the cluster's GPUs. The app and the views never ask
which executor it is; the app imports nothing of gputui.executors."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping

from gputui.executors.base import RecordedExecutor
from gputui.executors.registry import recorded_executor
from gputui.executors.slurm import MUTE
from gputui.gpus.probe import GpuSnapshot
from gputui.text_safety import one_line


def recorded_of(run) -> RecordedExecutor:
    """The executor a run snapshot (or None: nothing launched) recorded."""
    if run is None:
        return recorded_executor(None, {}.get)
    return recorded_executor(run.run_dir, run.meta.get)


def gpus_label(run) -> str | None:
    """The header's word for where the run's GPUs are ("ray cluster"); None: this machine's."""
    return recorded_of(run).label


def node_label(host: str, node_id: str) -> str:
    """A cluster node's name in the GPU panels where two nodes share a host name (tests, containers)."""
    return f"{host}/{node_id[:6]}"


class Placements:
    """Cluster attempts seen started: where they run ("node:GPUs") and the node's id (it never changes), read
    once each; and the node ids seen per host name, so two nodes on one host are named apart."""

    def __init__(self) -> None:
        self._placed: dict[tuple[str, int], tuple[str, str]] = {}
        self._node_ids: dict[str, set[str]] = {}

    def at(self, recorded: RecordedExecutor, attempt) -> tuple[str, str]:
        """Where the attempt runs on its cluster, as its runner on the node recorded it; ("", "") while it
        is queued (a read per refresh until then)."""
        key = (attempt.task_id, attempt.number)
        if key not in self._placed:
            started = recorded.placement(attempt.task_id, attempt.number, attempt.log_path)
            if started is None:
                return "", ""
            self._placed[key] = (started.shown, started.node_id)
            if started.node_id:
                self._node_ids.setdefault(started.node, set()).add(started.node_id)
        return self._placed[key]

    def keep(self, keys: set[tuple[str, int]]) -> None:
        self._placed = {k: v for k, v in self._placed.items() if k in keys}

    @property
    def hosts_shared(self) -> bool:
        return any(len(ids) > 1 for ids in self._node_ids.values())

    def named_apart(self, placed: str | None, node_id: str) -> str | None:
        """`placed` with its host named as the GPU panels name it, where another node shares the host name."""
        host, _, gpus = (placed or "").rpartition(":")
        if len(self._node_ids.get(host, ())) < 2:
            return placed
        return f"{node_label(host, node_id)}:{gpus}"


def kill_target(refs: list, view, executor: str | RecordedExecutor = "local", job: str = "") -> str:
    """What a kill of one task reaches, for its confirmation: its processes here, or where its executor
    says it runs. `executor`: the run's (or the kind it recorded); `job`: the backend's id of the attempt."""
    if isinstance(executor, str):
        executor = recorded_executor(None, {"executor": executor}.get)
    return executor.kill_target(list(refs), view.placed if view is not None else None, job)


def kill_lines(run, found: Mapping[str, list], task_ids: list[str]) -> list[str]:
    """One line per task a kill would reach (`found`: its processes here, by task id)."""
    executor = recorded_of(run)
    views = {v.task.id: v for v in run.tasks} if run is not None else {}
    lines = []
    for t in task_ids:
        v = views.get(t)
        job = executor.job_of(t, v.attempt.number) if v is not None and v.attempt is not None else ""
        lines.append(f"{t}: {kill_target(found.get(t, []), v, executor, job)}")
    return lines


def cluster_gpus(nodes: list[dict]) -> tuple[list[GpuSnapshot], str | None]:
    """A cluster's GPUs as the panels show them, grouped by node (numbered in that order), and what is
    missing: nodes whose GPUs could not be read say so."""
    gpus: list[GpuSnapshot] = []
    missing = []
    names = Counter(n["node"] for n in nodes)
    for n in nodes:
        node = n["node"] if names[n["node"]] == 1 else node_label(n["node"], n.get("id", ""))
        for g in n.get("gpus", ()):
            where = f"{node} GPU {g['index']}"
            gpus.append(GpuSnapshot(**(g | {"index": len(gpus), "where": where, "processes": ()})))
        if "gpus" not in n and n.get("declared"):
            missing.append(f"{node}: {n['declared']:g} GPU(s) declared to Ray, not readable ({n.get('why')})")
    return gpus, "; ".join(missing) or None


def cluster_gpus_of(run, simulate: str | None) -> tuple[list[GpuSnapshot], str | None] | None:
    """The GPUs of the cluster the run's tasks run on, as its nodes last read them, and what is missing or
    why none are shown; None where they run on this machine (or nothing was launched): probe it."""
    executor = recorded_of(run)
    if executor.places_gpus:
        return None
    nodes, why = executor.node_gpus(simulate or run.meta.get("simulate"))
    if nodes is None:
        return [], why
    gpus, missing = cluster_gpus(nodes)
    return gpus, missing or (None if gpus else why)


def queued_word(said: str) -> str:
    """A backend's word on a queued job, short enough for the progress cell ("held", "node drained", "no
    controller", "Dependency"); the row's reason (a trial's note) has it whole where that says more."""
    said = one_line(said)
    if said == MUTE:
        return "no controller"
    if node := re.match(r"node \S+ (\w+)", said):  # "node n1 drained: Duplicate jobid"
        return f"node {node.group(1)}"
    return re.split(r"[\s(:;,]", said, maxsplit=1)[0]  # "held (JobHeldAdmin)", "ReqNodeNotAvail, ..."
