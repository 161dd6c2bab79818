"""A sweep on a 2-node cluster (`ray.cluster_utils.Cluster`, 1 CPU per node): two 1-worker
trials run at once, one on each node, as their workers' own reports say."""

from __future__ import annotations

import io
import json

import pytest

from shipyard.tuning import sweep

TINY = {
    "data": {"synthetic": {"rows": 800, "seed": 3}, "vocab_size": 600, "sequence_length": 16},
    "model": {"kind": "lstm_classifier", "embedding_dim": 8, "units": 8},
    "training": {"workers": 1, "epochs": 2, "batch_size": 32},
}


@pytest.mark.slow
@pytest.mark.multinode
def test_two_concurrent_trials_land_on_both_nodes(two_node_cluster, project_factory):
    import ray

    project = project_factory(
        {
            **TINY,
            "name": "twonodes",
            "tuning": {
                "search": "grid",
                "scheduler": "fifo",
                "promote": False,
                "search_space": {"training.learning_rate": {"grid": [0.01, 0.02]}},
            },
        }
    )
    result = sweep(project, out=io.StringIO())
    assert result.concurrency == 2  # one 1-CPU worker per node: both trials at once
    assert [t.state for t in result.trials] == ["done", "done"], [t.error for t in result.trials]
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(alive) == 2
    # `worker_nodes`: the node id of each rank, as the workers themselves report it (rank order).
    placed = [json.loads(t.metrics["worker_nodes"]) for t in result.trials]
    assert all(len(nodes) == 1 for nodes in placed), placed
    assert {nodes[0] for nodes in placed} == alive, (placed, alive)
