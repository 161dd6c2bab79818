"""What the cluster is doing: its nodes (CPU/GPU used and free) and running jobs, as text.

For the cluster started by `shipyard cluster up` (read from the state file) or any cluster by its
dashboard URL; everything comes from the dashboard's HTTP API, so nothing joins the cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shipyard.cluster import client_env, dashboard
from shipyard.cluster.local_state import LocalCluster, load_state, state_file
from shipyard.cluster.preflight import NodeResources
from shipyard.errors import UserInputError


@dataclass
class ClusterStatus:
    dashboard_url: str
    nodes: list[NodeResources]
    running_jobs: list[tuple[str, str, str]]  # (id, status, entrypoint)
    local: LocalCluster | None = None
    not_running: list[str] = field(default_factory=list)


def status(address: str | None = None) -> ClusterStatus:
    """Nodes (CPU/GPU used and free) and running jobs of our cluster, or of the one at `address`."""
    local = None
    not_running: list[str] = []
    if address:
        url = dashboard.normalize_url(address)
    else:
        local = load_state()
        if local is None:
            raise UserInputError(
                f"no cluster started by shipyard (no {state_file()}); run `shipyard cluster up`"
                " or pass --address http://HOST:8265"
            )
        not_running = [n.name for n in local.nodes if not n.alive()]
        if "head" in not_running:
            raise UserInputError(
                f"the cluster recorded in {state_file()} is not running (its head process"
                f" {local.head.pid} is gone); run `shipyard cluster down` to clean up, then"
                " `shipyard cluster up`"
            )
        url = local.dashboard_url
    listed = dashboard.nodes(url)
    client = dashboard.job_client(url)
    running = [
        (job.submission_id or job.job_id or "?", str(job.status), job.entrypoint)
        for job in client.list_jobs()
        if not job.status.is_terminal()
    ]
    return ClusterStatus(url, listed, running, local=local, not_running=not_running)


def format_status(st: ClusterStatus) -> str:
    """Where the cluster is, what each node has and does, and what to run next."""
    lines = []
    if st.local:
        lines.append(
            f"cluster:   {len(st.local.nodes)} node(s) started by shipyard on {st.local.host},"
            f" token from {st.local.auth}"
        )
        lines.append(f"gcs:       {st.local.gcs_address}")
    lines.append(f"dashboard: {st.dashboard_url}  (Jobs API, web UI)")
    lines.append(
        f"{'node':<10} {'ip':<15} {'role':<7} {'state':<6} {'CPU used/total':>15}"
        f" {'GPU used/total':>15}"
    )
    cpu = [0.0, 0.0]
    gpu = [0.0, 0.0]
    for node in sorted(st.nodes, key=lambda n: (not n.is_head, n.node_id)):
        role = "head" if node.is_head else "worker"
        state = "ALIVE" if node.alive else "DEAD"
        row = []
        for name, acc in (("CPU", cpu), ("GPU", gpu)):
            total = node.get(name)
            free = node.free(name)
            used = total - free if free is not None else 0.0
            if node.alive:
                acc[0] += used
                acc[1] += total
            row.append(f"{used:g}/{total:g}")
        lines.append(
            f"{node.node_id[:8]:<10} {node.ip:<15} {role:<7} {state:<6} {row[0]:>15} {row[1]:>15}"
        )
    alive = sum(1 for n in st.nodes if n.alive)
    lines.append(
        f"total: {alive} alive node(s); CPU {cpu[0]:g} used, {cpu[1] - cpu[0]:g} free of"
        f" {cpu[1]:g}; GPU {gpu[0]:g} used, {gpu[1] - gpu[0]:g} free of {gpu[1]:g}"
    )
    if st.not_running:
        lines.append(
            f"not running: {', '.join(st.not_running)} (`shipyard cluster down` cleans up)"
        )
    if st.running_jobs:
        lines.append(f"running jobs: {len(st.running_jobs)}")
        lines += [f"  {jid}  {state:<9} {entry}" for jid, state, entry in st.running_jobs]
        lines.append("  follow one: shipyard jobs logs JOB_ID --follow")
    else:
        lines.append("running jobs: none")
    if st.local:
        lines += ["", *connect_hint(st.local)]
    return "\n".join(lines)


def connect_hint(cluster: LocalCluster) -> list[str]:
    """How to reach the cluster from a user's own code and from Ray's CLI, and how to end it."""
    return [
        'your own code and Ray\'s CLI reach it after: eval "$(shipyard cluster env)"',
        *(f"  {line}" for line in client_env.exports(cluster).splitlines()),
        "jobs: shipyard submit PROJECT.yaml train | shipyard jobs list | ray job submit -- ...",
        "stop it: shipyard cluster down",
    ]
