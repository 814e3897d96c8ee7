"""`backend`: each executor the contract suite runs against, started once for the whole suite (one Ray head,
one Slurm), and stopped before the next one starts: the suite's tests run grouped by backend."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import ray_cluster, slurm_cluster
from tests.contract.backends import LocalBackend, RayBackend, SlurmBackend

BACKENDS = ["local", "ray", "slurm"]


@pytest.fixture(scope="package", params=BACKENDS)
def backend(request):
    if request.param == "local":
        yield LocalBackend()
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


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """The suite's tests in backend order, each backend's in file order. pytest groups the tests by the
    fixture's own parameters, but not those of a test that names fewer backends (`indirect`): their indices
    differ, and a cluster would be started twice."""
    here = Path(__file__).parent
    at = [i for i, item in enumerate(items) if item.path.is_relative_to(here) and hasattr(item, "callspec")]
    ordered = sorted((items[i] for i in at), key=lambda item: BACKENDS.index(item.callspec.params["backend"]))
    for i, item in zip(at, ordered, strict=True):
        items[i] = item
