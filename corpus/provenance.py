"""Which nodes did the work: rows per pipeline stage and node, reported by the tasks themselves.

Opt-in (`prepare(..., provenance=True)`; the multi-node tests use it): one small actor call per
batch, waited on so that the driver's snapshot sees every batch.
"""

from __future__ import annotations

import ray


@ray.remote(num_cpus=0)
class Provenance:
    def __init__(self):
        self.rows: dict[str, dict[str, int]] = {}

    def add(self, stage: str, node: str, rows: int) -> None:
        per_node = self.rows.setdefault(stage, {})
        per_node[node] = per_node.get(node, 0) + rows

    def snapshot(self) -> dict[str, dict[str, int]]:
        return self.rows


def record(recorder, stage: str, rows: int) -> None:
    """Count `rows` for `stage` on this task's node; nothing when provenance is off."""
    if recorder is not None:
        ray.get(recorder.add.remote(stage, ray.get_runtime_context().get_node_id(), rows))
