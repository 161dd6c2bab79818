"""`shipyard cluster up|status|down` with real `ray start` processes on this machine."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from urllib.parse import urlparse

import psutil
import pytest

from shipyard.cli import main
from shipyard.cluster import local

LOOPBACK_IPS = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


@pytest.mark.multinode
@pytest.mark.slow
def test_up_again_status_then_down_after_a_node_died(
    isolated_state, free_port, tmp_path, monkeypatch, capsys
):
    # A stale address file at Ray's default location, left by a cluster that died uncleanly.
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    stale = tmp_path / "ray" / "ray_current_cluster"
    stale.parent.mkdir(parents=True)
    stale.write_text(f"127.0.0.1:{free_port}")

    started = time.monotonic()
    assert main(["cluster", "up", "--nodes", "3", "--cpus-per-node", "1"]) == 0
    up_seconds = time.monotonic() - started
    assert "started 3 node(s) on 127.0.0.1" in capsys.readouterr().out
    state_path = local.state_file()
    state_bytes = state_path.read_bytes()
    state = json.loads(state_bytes)
    cluster = local.load_state()
    try:
        assert [n["name"] for n in state["nodes"]] == ["head", "worker-1", "worker-2"]
        assert all(node.alive() for node in cluster.nodes)
        assert urlparse(state["dashboard_url"]).hostname == "127.0.0.1"
        assert state["gcs_address"].startswith("127.0.0.1:")
        assert state["auth"] == "$RAY_AUTH_TOKEN"
        assert os.environ["RAY_AUTH_TOKEN"] not in state_bytes.decode()  # never the token

        # Already running: say so, exit 0, change nothing.
        assert main(["cluster", "up", "--nodes", "3"]) == 0
        assert "already running" in capsys.readouterr().out
        assert state_path.read_bytes() == state_bytes

        assert main(["cluster", "status"]) == 0
        out = capsys.readouterr().out
        assert out.count(" ALIVE ") == 3
        assert "total: 3 alive node(s); CPU 0 used, 3 free of 3" in out
        assert "running jobs: none" in out

        # Everything listens on loopback only (GCS, raylets, dashboard, agents, client server).
        listening = {
            (proc.pid, conn.laddr.ip)
            for proc in local.cluster_processes(cluster)
            for conn in _listening(proc)
        }
        assert listening, "found no listening sockets of the cluster"
        assert {ip for _, ip in listening} <= LOOPBACK_IPS, listening
        assert stale.read_text().startswith("127.0.0.1:")  # untouched
    except BaseException:
        local.down()
        raise

    # A node process dies; down still stops exactly the rest.
    dead = cluster.nodes[2]
    os.kill(dead.pid, signal.SIGKILL)
    _wait(lambda: not dead.alive())
    started = time.monotonic()
    assert main(["cluster", "down"]) == 0
    down_seconds = time.monotonic() - started
    out = capsys.readouterr().out
    assert "stopped: head, worker-1" in out
    assert "already gone (cleaned up): worker-2" in out
    assert local.cluster_processes(cluster) == []
    assert not state_path.exists()
    assert not Path(cluster.temp_root).exists()
    assert main(["cluster", "down"]) == 0
    assert "nothing to stop" in capsys.readouterr().out
    print(f"up {up_seconds:.1f}s, down {down_seconds:.1f}s")


def test_bad_input_and_no_cluster(isolated_state, capsys):
    assert main(["cluster", "up", "--nodes", "0"]) == 2
    assert "--nodes: must be >= 1 (got 0)" in capsys.readouterr().err
    assert main(["cluster", "up", "--host", "my-laptop"]) == 2
    assert "--host 'my-laptop'" in capsys.readouterr().err
    assert main(["cluster", "status"]) == 2
    assert "shipyard cluster up" in capsys.readouterr().err
    assert main(["cluster", "down"]) == 0
    assert "nothing to stop" in capsys.readouterr().out
    assert not local.state_file().exists()


def test_non_loopback_host_warning_names_the_risk():
    assert local.host_warning("127.0.0.1") is None
    warning = local.host_warning("0.0.0.0")
    assert "0.0.0.0" in warning and "run arbitrary code" in warning


def test_corrupt_state_file_is_named(isolated_state, capsys):
    local.state_file().parent.mkdir(parents=True)
    local.state_file().write_text("{not json")
    assert main(["cluster", "status"]) == 2
    assert str(local.state_file()) in capsys.readouterr().err


def _listening(proc: psutil.Process) -> list:
    try:
        return [c for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    except psutil.Error:
        return []


def _wait(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
