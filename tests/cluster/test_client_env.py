"""Ray's own clients reach a `shipyard cluster up` cluster with nothing but `shipyard cluster env`.

The multinode test starts from an empty environment: the only variables the driver script and
`ray job submit` get are the exports `shipyard cluster env` printed.
"""

from __future__ import annotations

import secrets
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from shipyard.cli import main
from shipyard.cluster import client_env, local
from shipyard.cluster.local_state import LocalCluster

RAY = str(Path(sys.executable).parent / "ray")
CLIENT_TIMEOUT_S = 120  # a client that cannot reach the GCS retries far longer than this

# A plain Ray driver, as a user would write it: no address, no options.
DRIVER = """\
import ray
ray.init()
alive = [n for n in ray.nodes() if n["Alive"]]
assert len(alive) == 2, alive
print("driver: alive nodes", len(alive), "gcs", ray.get_runtime_context().gcs_address)
"""
JOB = (
    "import ray; ray.init();"
    " print('job: alive nodes', sum(n['Alive'] for n in ray.nodes()),"
    " 'gcs', ray.get_runtime_context().gcs_address)"
)


def in_clean_shell(exports: str, command: list[str]) -> subprocess.CompletedProcess:
    """`eval "$(shipyard cluster env)"; command` in a shell whose environment starts empty."""
    script = 'eval "$1"; shift; exec "$@"'
    return subprocess.run(
        ["/bin/bash", "-c", script, "bash", exports, *command],
        env={},
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
    )


@pytest.fixture
def token_file_cluster(isolated_state, tmp_path, monkeypatch, capsys):
    """A 2-node cluster from `shipyard cluster up`, its token in a file (not in the environment).

    The test's own environment carries what an earlier `eval "$(shipyard cluster env)"` leaves
    behind: `up` must not let it redirect or stop the new nodes, nor `status` (whose Ray clients
    would otherwise prefer $RAY_API_SERVER_ADDRESS) ask a dead cluster.
    """
    token = tmp_path / "token"
    token.write_text(secrets.token_hex(32), encoding="utf-8")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # a dead cluster's address
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:1")
    monkeypatch.setenv(client_env.KEEP_LOOPBACK_VAR, "0")  # worker nodes refuse to start with it
    assert main(["cluster", "up", "--nodes", "2", "--cpus-per-node", "1"]) == 0
    try:
        yield local.load_state(), token, capsys.readouterr().out
    finally:
        local.down()


@pytest.mark.multinode
def test_plain_ray_driver_and_ray_job_submit_with_only_the_exports(token_file_cluster, capsys):
    cluster, token, up_out = token_file_cluster
    assert f"export RAY_ADDRESS={cluster.gcs_address}" in up_out  # `up` shows them too

    assert main(["cluster", "env"]) == 0
    exports = capsys.readouterr().out
    env = dict(
        line.removeprefix("export ").split("=", 1)
        for line in exports.splitlines()
        if line.startswith("export ")
    )
    assert {k: shlex.split(v)[0] for k, v in env.items()} == {
        "RAY_ADDRESS": cluster.gcs_address,
        "RAY_API_SERVER_ADDRESS": cluster.dashboard_url,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
    }
    assert token.read_text() not in exports  # where the token is, never the token

    driver = in_clean_shell(exports, [sys.executable, "-c", DRIVER])
    assert driver.returncode == 0, driver.stdout + driver.stderr
    assert f"driver: alive nodes 2 gcs {cluster.gcs_address}" in driver.stdout

    submitted = in_clean_shell(exports, [RAY, "job", "submit", "--", "python", "-c", JOB])
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert f"job: alive nodes 2 gcs {cluster.gcs_address}" in submitted.stdout
    assert "succeeded" in submitted.stdout + submitted.stderr

    code = main(["cluster", "status"])
    status = capsys.readouterr()
    assert code == 0, status.err
    status = status.out
    assert exports.strip().splitlines()[0] in status and 'eval "$(shipyard cluster env)"' in status


def _cluster(auth: str, host: str = "127.0.0.1") -> LocalCluster:
    return LocalCluster(
        cluster_id="c",
        host=host,
        gcs_address=f"{host}:6399",
        dashboard_url=f"http://{host}:8299",
        client_server_port=10001,
        temp_root="/nonexistent",
        auth=auth,
        started_at=0.0,
    )


def test_exports_are_shell_quoted_and_name_where_the_token_is(tmp_path):
    path = tmp_path / "my token's file"
    exports = client_env.exports(_cluster(str(path)))
    done = subprocess.run(
        [
            "/bin/bash",
            "-c",
            'eval "$1"; printf %s "$RAY_AUTH_TOKEN_PATH|${RAY_AUTH_TOKEN-unset}"',
            "bash",
            exports,
        ],
        env={"RAY_AUTH_TOKEN": "another-clusters-token"},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert done.stdout == f"{path}|unset", exports  # Ray would read RAY_AUTH_TOKEN first


def test_token_from_the_environment_is_never_printed():
    exports = client_env.exports(_cluster("$RAY_AUTH_TOKEN"))
    assert "export RAY_AUTH_MODE=token" in exports
    assert "RAY_AUTH_TOKEN_PATH" not in exports and "unset" not in exports
    assert "# the token is read from $RAY_AUTH_TOKEN" in exports


def test_loopback_switch_only_for_loopback_clusters_and_auth_disabled():
    env = client_env.client_env(_cluster("disabled", host="10.1.2.3"))
    assert client_env.KEEP_LOOPBACK_VAR not in env  # no rewrite to undo off loopback
    assert env["RAY_AUTH_MODE"] == "disabled" and "RAY_AUTH_TOKEN_PATH" not in env
    assert env["RAY_ADDRESS"] == "10.1.2.3:6399"


def test_env_without_a_cluster_is_bad_input(isolated_state, capsys):
    assert main(["cluster", "env"]) == 2
    err = capsys.readouterr().err
    assert str(local.state_file()) in err and "shipyard cluster up" in err
