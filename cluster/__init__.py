"""Cluster access: an embedded local Ray by default, or a running cluster by address."""

from shipyard.cluster.preflight import (
    ClusterResources,
    NodeResources,
    PreflightResult,
    check_resources,
)
from shipyard.cluster.runtime import WORKER_ENV, connect, ensure_train_v1

__all__ = [
    "WORKER_ENV",
    "ClusterResources",
    "NodeResources",
    "PreflightResult",
    "check_resources",
    "connect",
    "ensure_train_v1",
]
