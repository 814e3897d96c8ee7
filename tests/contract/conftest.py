"""`backend`: each executor the contract suite runs against, on the session's shared clusters (one Ray head, one
Slurm: tests/conftest.py). The suite's tests run grouped by backend, so each backend is set up once: its
cluster started on first use, and its environment set for its group."""

from __future__ import annotations

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
        address = request.getfixturevalue("shared_ray_head")
        with ray_cluster.environment():  # every Ray process of the suite (bridges, a foreign driver) needs it
            yield RayBackend(address)
    else:
        env = request.getfixturevalue("shared_slurm")
        with slurm_cluster.environment(env):  # every command of the tests (and gputui's) talks to this Slurm
            yield SlurmBackend(env)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """The suite's tests in backend order, each backend's in file order. pytest groups the tests by the
    fixture's own parameters, but not those of a test that names fewer backends (`indirect`): their indices
    differ, and a backend would be set up twice."""
    here = Path(__file__).parent
    at = [i for i, item in enumerate(items) if item.path.is_relative_to(here) and hasattr(item, "callspec")]
    ordered = sorted((items[i] for i in at), key=lambda item: BACKENDS.index(item.callspec.params["backend"]))
    for i, item in zip(at, ordered, strict=True):
        items[i] = item
