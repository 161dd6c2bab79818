"""Talk to a running cluster through its dashboard's HTTP API: the Jobs API and resource views.

Everything here goes over HTTP to the dashboard (what `ray job` and the web UI use), so the CLI
never has to join the cluster as a driver just to list jobs or count CPUs. Ray's clients retry
or block for a long time when nothing listens, so every entry point probes the address first
and fails within seconds with a message that names it.

Ray's clients (`JobSubmissionClient`, `StateApiClient`) prefer $RAY_API_SERVER_ADDRESS and
$RAY_ADDRESS over the address they are given (`ray.dashboard.utils.
get_address_for_submission_client`); in a shell that ran `eval "$(shipyard cluster env)"` they
would talk to that cluster whatever `--address` said. They are built with the URL shipyard
resolved pinned instead, so the address shipyard names is the one it talks to.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from shipyard.cluster.auth import auth_headers
from shipyard.cluster.network import unreachable
from shipyard.cluster.preflight import ClusterResources, NodeResources
from shipyard.errors import UserInputError, first_line
from shipyard.temporary_env import temporary_env
from shipyard.verbosity import quiet_ray_logs

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

PROBE_TIMEOUT_S = 3.0
HTTP_TIMEOUT_S = 10.0


def normalize_url(address: str) -> str:
    """`host:port` or `http://host:port/` → `http://host:port` (the Jobs API's base URL)."""
    address = address.strip().rstrip("/")
    if "://" not in address:
        address = f"http://{address}"
    parsed = urlparse(address)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UserInputError(
            f"--address {address!r}: expected the dashboard URL, e.g. http://127.0.0.1:8265"
        )
    return address


def probe(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Fail fast (UserInputError) when nothing accepts connections at the dashboard address."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    reason = unreachable(parsed.hostname, port, timeout_s)
    if reason:
        raise UserInputError(
            f"no Ray dashboard at {url} ({reason}); start a cluster with `shipyard cluster up`"
            " or pass the dashboard URL of a running one with --address"
        )


def job_client(url: str) -> JobSubmissionClient:
    """A Jobs API client with the token header (never the token in any message)."""
    from ray.job_submission import JobSubmissionClient

    quiet_ray_logs()  # Ray's INFO lines about packaging and uploading the working_dir
    probe(url)
    try:
        with _pinned(url):
            return JobSubmissionClient(url, headers=auth_headers())
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError or AuthenticationError
        raise UserInputError(f"cannot use the Jobs API at {url}: {first_line(exc)}") from None


@contextlib.contextmanager
def _pinned(url: str) -> Iterator[None]:
    """While a Ray client is built: $RAY_API_SERVER_ADDRESS is `url` (it wins over the rest)."""
    with temporary_env("RAY_API_SERVER_ADDRESS", url):
        yield


def get_json(url: str, path: str) -> dict:
    import requests

    try:
        response = requests.get(url + path, headers=auth_headers(), timeout=HTTP_TIMEOUT_S)
    except requests.RequestException as exc:
        raise UserInputError(f"cannot read {url}{path}: {first_line(exc)}") from None
    if response.status_code in (401, 403):
        raise UserInputError(
            f"{url} refused the request ({response.status_code}): set RAY_AUTH_TOKEN or"
            " ~/.ray/auth_token to the cluster's token"
        )
    if response.status_code != 200:
        raise UserInputError(f"{url}{path} answered {response.status_code}: {response.text[:200]}")
    return response.json()


def cluster_resources(url: str) -> ClusterResources:
    """Per-node totals and usage, from the dashboard's autoscaler view (what `ray status` shows)."""
    probe(url)
    data = get_json(url, "/api/cluster_status")
    report = data.get("data", {}).get("clusterStatus", {}).get("loadMetricsReport") or {}
    usage_by_node: dict = report.get("usageByNode") or {}
    nodes = []
    for node_id, usage in sorted(usage_by_node.items()):
        total = {name: float(pair[1]) for name, pair in usage.items()}
        free = {name: float(pair[1]) - float(pair[0]) for name, pair in usage.items()}
        nodes.append(NodeResources(node_id, total, free))
    return ClusterResources.of(nodes)


def _state_nodes(url: str) -> list[NodeResources]:
    """Nodes as the state API lists them (id, ip, head or not, alive or dead)."""
    from ray.util.state.api import StateApiClient
    from ray.util.state.common import ListApiOptions, StateResource

    with _pinned(url):
        client = StateApiClient(address=url, headers=auth_headers())
    try:
        listed = client.list(
            StateResource.NODES,
            options=ListApiOptions(detail=True, timeout=int(HTTP_TIMEOUT_S)),
            raise_on_missing_output=False,
        )
    except Exception as exc:
        raise UserInputError(f"cannot list the nodes of {url}: {first_line(exc)}") from None
    return [
        NodeResources(
            node_id=n.node_id,
            total=dict(n.resources_total or {}),
            is_head=bool(n.is_head_node),
            ip=n.node_ip or "",
            alive=n.state == "ALIVE",
        )
        for n in listed
    ]


def nodes(url: str) -> list[NodeResources]:
    """All nodes with totals and, for alive ones, what is free now."""
    listed = _state_nodes(url)
    usage = {n.node_id: n for n in cluster_resources(url).nodes}
    merged = []
    for node in listed:
        seen = usage.get(node.node_id)
        merged.append(
            NodeResources(
                node_id=node.node_id,
                total=dict(seen.total if seen else node.total),
                available=dict(seen.available or {}) if seen else None,
                is_head=node.is_head,
                ip=node.ip,
                alive=node.alive,
            )
        )
    return merged
