"""A shard job across two Ray nodes (both on this machine, on loopback, two declared GPUs each): the app's
GPU panels group the GPUs by node, each running task is shown on its node's GPU, work goes to both
nodes, and the merge's coverage check proves no id was lost or done twice."""

from __future__ import annotations

import json
import socket
from collections import Counter

import pytest

from gputui.executors import node_runner
from gputui.tui.refresh import Gatherer
from gputui.tui.widgets.gpu_panel import line_label
from gputui.views.executor_facts import kill_target
from gputui.views.runview import RunView, node_label
from tests import ray_cluster
from tests.conftest import gputui, gputui_bg, wait_for
from tests.integration.test_ray_executor import merged_ids, shard_job


@pytest.fixture(scope="module")
def two_nodes():
    with ray_cluster.environment(), ray_cluster.ray_nodes(nodes=2, gpus=2) as address:
        yield address


def test_a_shard_job_spreads_over_two_nodes_and_the_panels_group_them(two_nodes, make_job, reaper, tmp_path):
    job = shard_job(make_job, two_nodes, ids=48, num_workers=8, gpus_per_worker=1, max_parallel=4, sleep=2)
    sched = gputui_bg("run", "--jobs", job, "--simulate", "2x24", log=tmp_path / "run.log")
    reaper.append(sched)
    gatherer = Gatherer(RunView(make_job.run_dir), None, None)

    def four_placed():
        shown = gatherer.gather()
        placed = [v for v in shown.run.tasks if v.placed] if shown.run else []
        return len(shown.gpus) == 4 and len(placed) == 4 and shown

    shown = wait_for(four_placed, timeout=90, what="four tasks placed, four GPU panels")
    # The panels: two GPUs per node, grouped by node; both nodes run on this host, so the node's id tells
    # them apart (one host name alone would merge them).
    host = socket.gethostname()
    nodes = [g.where.rsplit(" GPU ", 1)[0] for g in shown.gpus]
    assert [g.where.rsplit(" GPU ", 1)[1] for g in shown.gpus] == ["0", "1", "0", "1"], nodes
    assert nodes[0] == nodes[1] != nodes[2] == nodes[3] and all(n.startswith(f"{host}/") for n in nodes)
    assert all(g.memory_total == 24 * 2**30 for g in shown.gpus)
    # Every running task is on its own panel: the GPU Ray gave it, on the node it runs on.
    holders = shown.run.gpu_holders(shown.gpus)
    assert sorted(holders) == [0, 1, 2, 3] and all(len(ids) == 1 for ids in holders.values()), holders
    assert len({v.placed_node for v in shown.run.tasks if v.placed}) == 2, "both nodes take work"
    # One line per GPU (the compact layout) names its node too, as the cards' titles do.
    assert [line_label(g) for g in shown.gpus] == [f"{nodes[i]}:{i % 2}" for i in range(4)]
    # A kill's confirmation names what it reaches: the tree on the task's node (no process of it is here).
    placed = [v for v in shown.run.tasks if v.placed]
    found = RunView(make_job.run_dir).processes([v.task.id for v in placed])
    for v in placed:
        # The table's GPUs column names the node as the panels do, its host name shared with the other node.
        assert v.placed == f"{node_label(host, v.placed_node)}:{v.placed[-1]}", v.placed
        assert found[v.task.id] == []
        said = kill_target([], v, "ray")
        assert said == f"its process tree on Ray node {node_label(host, v.placed_node)} (GPUs {v.placed[-1]})"
    sched.wait(180)
    assert sched.returncode == 0, (tmp_path / "run.log").read_text()
    assert "(4 GPU(s), 2 node(s))" in (tmp_path / "run.log").read_text()
    starts = Counter(e["task"] for e in make_job.events() if e["event"] == "start")
    assert set(starts.values()) == {1} and len(starts) == 8
    assert merged_ids(make_job.run_dir) == Counter({i: 2 for i in range(48)})  # coverage: none lost, none twice
    status = json.loads(gputui("status", "--run-dir", make_job.run_dir, "--json").stdout)
    assert {t["status"] for t in status["tasks"]} == {"done"}
    started = [node_runner.placement(str(p)) for p in (make_job.run_dir / "logs").glob("shard-*.attempt1.log")]
    assert len(started) == 8 and len({s["node_id"] for s in started}) == 2
