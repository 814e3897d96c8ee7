"""`backend`: each executor the contract suite runs against, started once for the whole suite (one Ray head,
one Slurm), and stopped before the next one starts: pytest groups the tests by backend."""

from __future__ import annotations

import os

import pytest

from tests import ray_cluster, slurm_cluster
from tests.contract.backends import Backend, RayBackend, SlurmBackend


@pytest.fixture(scope="package", params=["local", "ray", "slurm"])
def backend(request):
    if request.param == "local":
        yield Backend()
    elif request.param == "ray":
        # Every Ray process of the suite (the head, the bridges, a foreign driver) inherits RAY_ENV.
        with ray_cluster.environment(), ray_cluster.ray_head(gpus=4) as address:
            yield RayBackend(address)
    else:
        # Every command of the tests (and gputui's) talks to this Slurm.
        with slurm_cluster.slurm_node(gpus=4) as env:
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                yield SlurmBackend(env)
            finally:
                for k, v in saved.items():
                    os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
