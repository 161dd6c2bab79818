"""Shared fixtures: a private state folder and token per module, and a real local cluster.

Tests never touch ~/.ray or ~/.local/state: the cluster token comes from RAY_AUTH_TOKEN and the
state file lives under pytest's tmp folder.
"""

from __future__ import annotations

import os
import secrets

import pytest

from shipyard.cluster import local, network
from shipyard.verbosity import VERBOSE_ENV


@pytest.fixture(autouse=True)
def verbosity_stays_in_its_test():
    """`main(["--verbose", ...])` exports SHIPYARD_VERBOSE; later tests must not inherit it."""
    before = os.environ.get(VERBOSE_ENV)
    yield
    if before is None:
        os.environ.pop(VERBOSE_ENV, None)
    else:
        os.environ[VERBOSE_ENV] = before


@pytest.fixture(scope="module")
def cluster_env(tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHIPYARD_STATE_DIR", str(state))
        mp.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
        for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
            mp.delenv(name, raising=False)
        yield state


@pytest.fixture
def isolated_state(tmp_path, monkeypatch):
    """No cluster recorded, no address in the environment."""
    monkeypatch.setenv("SHIPYARD_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "state"


@pytest.fixture(scope="module")
def local_cluster(cluster_env):
    """A real 2-node cluster (head + 1 worker node, 1 CPU each) started with `ray start`."""
    result = local.up(nodes=2, cpus_per_node=1)
    try:
        yield result.cluster
    finally:
        local.down()


@pytest.fixture
def free_port() -> int:
    """A loopback port where nothing listens."""
    return network.free_ports(1)[0]
