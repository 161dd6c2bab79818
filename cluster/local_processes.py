"""Start and stop the local cluster's node processes: a `ray start` head plus worker nodes.

Each node is one `ray start --block` process that shipyard starts in a new session, so the node's
GCS, raylet, dashboard and agents share that process's group id. Stopping a node is then exact:
SIGTERM to our `ray start` (Ray's own graceful shutdown of that node), then SIGKILL to whatever is
left in that group. `ray stop` is never used: it kills every Ray on the machine, including other
people's clusters and test runs.

Every node gets its own short `--temp-dir` (Unix socket paths must stay under ~100 characters),
so nothing is written to /tmp/ray and a stale /tmp/ray/ray_current_cluster neither affects this
cluster nor gets overwritten by it. Ports are picked free at start. What was started is recorded
in the state file (`local_state`) as each node starts, so even a failed start can be cleaned up.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from shipyard.cluster import auth, dashboard
from shipyard.cluster.client_env import AUTH_DISABLED, CLIENT_ADDRESS_VARS, KEEP_LOOPBACK_VAR
from shipyard.cluster.local_state import (
    LocalCluster,
    NodeProcess,
    clear_state,
    load_state,
    save_state,
    state_dir,
)
from shipyard.cluster.network import LOOPBACK, free_ports, is_loopback
from shipyard.cluster.runtime import WORKER_ENV
from shipyard.errors import ShipyardError, UserInputError

START_TIMEOUT_S = 120.0
STOP_GRACE_S = 15.0
CLUSTER_ID_VAR = "SHIPYARD_CLUSTER_ID"

# Popen handles of nodes started by this process, so they are reaped (no zombies, no warnings).
_children: dict[int, subprocess.Popen] = {}


@dataclass
class UpResult:
    cluster: LocalCluster
    already_running: bool
    warnings: list[str] = field(default_factory=list)


@dataclass
class DownResult:
    stopped: list[str]
    not_running: list[str]
    had_cluster: bool = True


# -- up ------------------------------------------------------------------------------------------
def host_warning(host: str) -> str | None:
    """The risk of binding to a non-loopback host, in words, or None for loopback."""
    if is_loopback(host):
        return None
    return (
        f"binding the dashboard and Jobs API to {host}: anyone who can reach this machine on"
        " those ports and holds the cluster token can run arbitrary code as you; keep the"
        " token secret and firewall the ports (default 127.0.0.1 keeps everything on this machine)"
    )


def up(
    nodes: int = 2,
    cpus_per_node: int = 1,
    gpus_per_node: int = 0,
    host: str = LOOPBACK,
    timeout_s: float = START_TIMEOUT_S,
) -> UpResult:
    """Start a head and `nodes - 1` worker nodes; if ours is already running, change nothing."""
    if nodes < 1:
        raise UserInputError(f"--nodes: must be >= 1 (got {nodes})")
    if cpus_per_node < 1:
        raise UserInputError(f"--cpus-per-node: must be >= 1 (got {cpus_per_node})")
    if gpus_per_node < 0:
        raise UserInputError(f"--gpus-per-node: must be >= 0 (got {gpus_per_node})")
    host = LOOPBACK if host == "localhost" else host
    _check_host(host)

    existing = load_state()
    if existing is not None:
        if existing.nodes and existing.head.alive():
            return UpResult(existing, already_running=True)
        # The head is gone (machine rebooted, killed): clear what is left, then start afresh.
        _stop_nodes(existing)
        shutil.rmtree(existing.temp_root, ignore_errors=True)
        clear_state()

    warnings = [w for w in [host_warning(host)] if w]
    token_mode = auth.client_env().get(auth.AUTH_MODE_VAR, "token").lower() == "token"
    if token_mode:
        token_source = auth.ensure_token().describe()
    else:
        token_source = AUTH_DISABLED
        warnings.append(
            f"{auth.AUTH_MODE_VAR} is not 'token': the cluster accepts requests without a token;"
            " anyone who can reach its ports can run code on this machine"
        )

    loopback = is_loopback(host)
    temp_root = tempfile.mkdtemp(prefix="shipyard-ray-", dir=_short_tmp())
    gcs_port, dash_port, client_port = free_ports(3)
    gcs_host = LOOPBACK if loopback or host == "0.0.0.0" else host
    cluster = LocalCluster(
        cluster_id=uuid.uuid4().hex[:12],
        host=host,
        gcs_address=f"{gcs_host}:{gcs_port}",
        dashboard_url=f"http://{LOOPBACK if host == '0.0.0.0' else host}:{dash_port}",
        client_server_port=client_port,
        temp_root=temp_root,
        auth=token_source,
        started_at=time.time(),
    )
    logs = state_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    try:
        for index in range(nodes):
            role = "head" if index == 0 else "worker"
            name = "head" if index == 0 else f"worker-{index}"
            node_temp = os.path.join(temp_root, f"n{index}")
            (agent_port,) = free_ports(1)
            if role == "head":
                args = _head_args(host, gcs_port, dash_port, client_port)
            else:
                args = _worker_args(host, cluster.gcs_address)
            args += [
                f"--num-cpus={cpus_per_node}",
                f"--num-gpus={gpus_per_node}",
                f"--dashboard-agent-listen-port={agent_port}",
                f"--temp-dir={node_temp}",
                "--disable-usage-stats",
            ]
            env = _node_env(role, loopback, cluster.cluster_id)
            node = _spawn(name, role, args, env, logs / f"{name}.log")
            node.cpus, node.gpus, node.temp_dir, node.agent_port = (
                cpus_per_node,
                gpus_per_node,
                node_temp,
                agent_port,
            )
            cluster.nodes.append(node)
            save_state(cluster)  # record each pid at once: a failed start can still be cleaned
            if role == "head":
                _wait_for_dashboard(cluster, deadline)
        _wait_for_nodes(cluster, nodes, deadline)
    except BaseException:
        _stop_nodes(cluster)
        shutil.rmtree(temp_root, ignore_errors=True)
        clear_state()
        raise
    return UpResult(cluster, already_running=False, warnings=warnings)


def _head_args(host: str, gcs_port: int, dash_port: int, client_port: int) -> list[str]:
    args = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        "--block",
        f"--port={gcs_port}",
        f"--dashboard-host={host}",
        f"--dashboard-port={dash_port}",
        f"--ray-client-server-port={client_port}",
        "--include-dashboard=true",
    ]
    if host != "0.0.0.0":
        args.append(f"--node-ip-address={host}")
    return args


def _worker_args(host: str, gcs_address: str) -> list[str]:
    # Worker nodes go through ray_node, which keeps 127.0.0.1 as given (see its docstring).
    args = [
        sys.executable,
        "-m",
        "shipyard.cluster.ray_node",
        "start",
        "--block",
        f"--address={gcs_address}",
    ]
    if host != "0.0.0.0":
        args.append(f"--node-ip-address={host}")
    return args


def _node_env(role: str, loopback: bool, cluster_id: str) -> dict[str, str]:
    env = auth.client_env()
    # Inherited by every process of the cluster (raylet, workers, job drivers): down finds them all.
    env[CLUSTER_ID_VAR] = cluster_id
    # A shell that ran `eval "$(shipyard cluster env)"` for an earlier cluster must not redirect
    # our nodes or their job drivers, nor stop worker nodes from starting (see below).
    for name in (*CLIENT_ADDRESS_VARS, KEEP_LOOPBACK_VAR):
        env.pop(name, None)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.update(WORKER_ENV)  # jobs on this cluster run HorovodTrainer: Ray Train V1, always
    # Job entrypoints (`shipyard train ...`, `python ...`) resolve to this environment's tools.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    if loopback and role == "head":
        # Keeps 127.0.0.1 as the head's address and makes drivers of jobs (started by this node)
        # resolve 127.0.0.1 to loopback instead of the machine's network address. Worker nodes
        # refuse to start with it (they go through `ray_node` instead).
        env[KEEP_LOOPBACK_VAR] = "0"
    return env


def _spawn(name: str, role: str, args: list[str], env: dict[str, str], log: Path) -> NodeProcess:
    import psutil

    with open(log, "ab") as out:
        proc = subprocess.Popen(
            args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop exactly this node's processes
        )
    _children[proc.pid] = proc
    return NodeProcess(
        name=name,
        role=role,
        pid=proc.pid,
        create_time=psutil.Process(proc.pid).create_time(),
        cpus=0,
        gpus=0,
        temp_dir="",
        log=str(log),
        agent_port=0,
    )


def _wait_for_dashboard(cluster: LocalCluster, deadline: float) -> None:
    import requests

    while time.monotonic() < deadline:
        _check_started(cluster.head)
        try:
            response = requests.get(
                cluster.dashboard_url + "/api/version", headers=auth.auth_headers(), timeout=2
            )
            if response.status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise ShipyardError(
        f"the head node did not serve its dashboard in time; see {cluster.head.log}"
    )


def _wait_for_nodes(cluster: LocalCluster, count: int, deadline: float) -> None:
    seen = 0
    while time.monotonic() < deadline:
        for node in cluster.nodes:
            _check_started(node)
        try:
            seen = len(dashboard.cluster_resources(cluster.dashboard_url).nodes)
        except UserInputError:  # the dashboard may still be warming up: ask again
            seen = 0
        if seen >= count:
            return
        time.sleep(0.5)
    raise ShipyardError(
        f"only {seen} of {count} nodes joined in time; see the logs in {state_dir() / 'logs'}"
    )


def _check_started(node: NodeProcess) -> None:
    proc = _children.get(node.pid)
    if proc is not None and proc.poll() is not None:
        tail = _tail(node.log)
        raise ShipyardError(
            f"{node.name} node exited during start (code {proc.returncode}); {node.log}:\n{tail}"
        )


# -- down ----------------------------------------------------------------------------------------
def down() -> DownResult:
    """Stop exactly the nodes recorded by `up` (and what they started), then forget them."""
    cluster = load_state()
    if cluster is None:
        return DownResult(stopped=[], not_running=[], had_cluster=False)
    stopped, not_running = _stop_nodes(cluster)
    shutil.rmtree(cluster.temp_root, ignore_errors=True)
    clear_state()
    return DownResult(stopped=stopped, not_running=not_running)


def _stop_nodes(cluster: LocalCluster) -> tuple[list[str], list[str]]:
    import psutil

    _stop_running_jobs(cluster)
    stopped, not_running = [], []
    # Workers first, head last: workers leaving a live head is the normal, quiet path.
    order = list(reversed(cluster.nodes))
    for node in order:
        if node.alive():
            _signal(node.pid, signal.SIGTERM)  # Ray's own graceful stop of this node
            stopped.append(node.name)
        else:
            not_running.append(node.name)
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline:
        _reap()
        if not cluster_processes(cluster):
            break
        time.sleep(0.25)
    # Whatever ignored SIGTERM, or outlived a node that was killed, goes now.
    leftovers = cluster_processes(cluster)
    for proc in leftovers:
        _signal(proc.pid, signal.SIGKILL)
    psutil.wait_procs(leftovers, timeout=5)
    _reap()
    for node in order:
        _children.pop(node.pid, None)
    return list(reversed(stopped)), list(reversed(not_running))


def cluster_processes(cluster: LocalCluster) -> list:
    """Every live process of this cluster: the node groups we started and all that inherited
    our SHIPYARD_CLUSTER_ID (Ray workers and job drivers run in process groups of their own).

    Group members must be younger than our `ray start` leader, so a recycled group id that now
    belongs to someone else is never touched.
    """
    import psutil

    leaders = {node.pid: node.create_time for node in cluster.nodes}
    me = os.getpid()
    found = []
    for proc in psutil.process_iter(["pid", "create_time", "status"]):
        try:
            if proc.pid == me or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            pgid = os.getpgid(proc.pid)
            in_group = pgid in leaders and proc.info["create_time"] + 0.05 >= leaders[pgid]
            if in_group or proc.environ().get(CLUSTER_ID_VAR) == cluster.cluster_id:
                found.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def _stop_running_jobs(cluster: LocalCluster) -> None:
    """Best effort: stop running jobs first, so Ray's node drain does not wait on them."""
    if not cluster.nodes or not cluster.head.alive():
        return
    try:
        client = dashboard.job_client(cluster.dashboard_url)
        for job in client.list_jobs():
            if job.submission_id and not job.status.is_terminal():
                client.stop_job(job.submission_id)
    except Exception:  # the nodes are stopped next either way
        pass


def _reap() -> None:
    for pid, proc in list(_children.items()):
        if proc.poll() is not None:
            _children.pop(pid, None)


# -- helpers -------------------------------------------------------------------------------------
def _check_host(host: str) -> None:
    # An IP literal only: resolving a name could mean a DNS lookup, and Ray wants addresses.
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise UserInputError(
            f"--host {host!r}: give an IP address of this machine (127.0.0.1, 0.0.0.0, ...)"
        ) from None


def _short_tmp() -> str:
    """A temp folder short enough for Ray's Unix sockets (session dirs add ~70 characters)."""
    candidate = tempfile.gettempdir()
    return candidate if len(candidate) <= 24 else "/tmp"


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _tail(path: str, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
