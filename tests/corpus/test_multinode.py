"""Two real raylets on this machine: the pipeline's tasks run on both, and the corpus is the same
one a single node produces."""

from __future__ import annotations

import pytest
import ray
from corpus_helpers import write_tsv

from shipyard.corpus.prepare import prepare

pytestmark = [pytest.mark.multinode, pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def two_nodes():
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        yield {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_both_nodes_clean_and_encode(two_nodes, tmp_path, project_factory):
    assert len(two_nodes) == 2
    for part in range(8):  # eight files: eight read tasks, spread over the nodes
        rows = [("spam" if i % 3 else "ham", f"part {part} message {i}") for i in range(200)]
        write_tsv(tmp_path / f"part-{part}.tsv", rows)
    project = project_factory(
        {"name": "multi", "data": {"kind": "text", "source": "part-*.tsv", "quoting": False}}
    )
    result = prepare(project, provenance=True)
    manifest = result.manifest
    assert manifest["counts"]["read"] == 1_600 and len(manifest["sources"]) == 8
    cleaned = result.provenance["clean"]
    # Node ids recorded from inside the pipeline's own tasks.
    assert set(cleaned) == two_nodes, cleaned
    assert all(rows > 0 for rows in cleaned.values())
    assert sum(cleaned.values()) == 1_600
    assert set(result.provenance["encode"]) <= two_nodes
    assert sum(result.provenance["encode"].values()) == manifest["counts"]["kept"]
