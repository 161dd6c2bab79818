"""The state file of the local cluster: its addresses, ports, token source and node processes.

One JSON file under $SHIPYARD_STATE_DIR (default ~/.local/state/shipyard), written atomically by
`shipyard cluster up` as each node starts and removed by `shipyard cluster down`. It never holds
the token, only where the token comes from.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shipyard.errors import UserInputError

STATE_FILE = "cluster.json"


def state_dir() -> Path:
    return Path(os.environ.get("SHIPYARD_STATE_DIR") or "~/.local/state/shipyard").expanduser()


def state_file() -> Path:
    return state_dir() / STATE_FILE


@dataclass
class NodeProcess:
    """One `ray start --block` process we own; its pid is also its process-group id."""

    name: str
    role: str  # "head" or "worker"
    pid: int
    create_time: float
    cpus: int
    gpus: int
    temp_dir: str
    log: str
    agent_port: int

    def alive(self) -> bool:
        return same_process(self.pid, self.create_time)


@dataclass
class LocalCluster:
    cluster_id: str  # set as SHIPYARD_CLUSTER_ID in every process of the cluster
    host: str
    gcs_address: str
    dashboard_url: str
    client_server_port: int
    temp_root: str
    auth: str  # where the token comes from (never the token itself), or "disabled"
    started_at: float
    nodes: list[NodeProcess] = field(default_factory=list)

    @property
    def head(self) -> NodeProcess:
        return self.nodes[0]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> LocalCluster:
        nodes = [NodeProcess(**n) for n in data.pop("nodes", [])]
        return cls(**data, nodes=nodes)


def load_state() -> LocalCluster | None:
    """The cluster recorded by `shipyard cluster up`, or None when none is recorded."""
    path = state_file()
    if not path.is_file():
        return None
    try:
        return LocalCluster.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError, KeyError) as exc:
        raise UserInputError(
            f"{path}: not a shipyard cluster state file ({exc}); remove it if no cluster runs"
        ) from None


def save_state(cluster: LocalCluster) -> None:
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(cluster.to_json(), encoding="utf-8")
    os.replace(tmp, path)  # atomic: a crash mid-write never leaves half a state file


def clear_state() -> None:
    state_file().unlink(missing_ok=True)


def same_process(pid: int, create_time: float) -> bool:
    """True while `pid` is still the process recorded (not a recycled pid, not a zombie)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return (
            abs(proc.create_time() - create_time) < 0.05 and proc.status() != psutil.STATUS_ZOMBIE
        )
    except psutil.Error:
        return False
