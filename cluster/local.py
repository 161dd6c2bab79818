"""A real multi-node Ray cluster on this machine: the public entry points, in one import.

The work is split by what it does:

- `local_state`: the state file (addresses, ports, token source, node pids) and its dataclasses;
- `local_processes`: starting (`up`) and stopping (`down`) the `ray start` node processes;
- `local_status`: the status view (nodes, CPUs/GPUs used and free, running jobs);
- `client_env`: the environment Ray's own clients need to reach the cluster.

`from shipyard.cluster.local import up, down, status, load_state, state_file` keeps working.
"""

from __future__ import annotations

from shipyard.cluster.client_env import client_env, exports
from shipyard.cluster.local_processes import (
    CLUSTER_ID_VAR,
    DownResult,
    UpResult,
    cluster_processes,
    down,
    host_warning,
    up,
)
from shipyard.cluster.local_state import (
    LocalCluster,
    NodeProcess,
    load_state,
    state_dir,
    state_file,
)
from shipyard.cluster.local_status import ClusterStatus, connect_hint, format_status, status

__all__ = [
    "CLUSTER_ID_VAR",
    "ClusterStatus",
    "DownResult",
    "LocalCluster",
    "NodeProcess",
    "UpResult",
    "client_env",
    "cluster_processes",
    "connect_hint",
    "down",
    "exports",
    "format_status",
    "host_warning",
    "load_state",
    "state_dir",
    "state_file",
    "status",
    "up",
]
