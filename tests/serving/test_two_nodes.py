"""Serving on a 2-node cluster (`ray.cluster_utils.Cluster`, 1 CPU per node): with two 1-CPU
replicas one must run on the node the driver is not on, and it loads the model through the
registry's artifact store (its replica config carries the artifact URI, never the registry's
database) and answers exactly what the export answers."""

from __future__ import annotations

import hashlib
import os
import tempfile

import numpy as np
import pytest
from conftest import Client
from trained_models import TEXT_PROJECT, train_in_process

from shipyard.cluster.network import free_ports
from shipyard.training.export_loader import load_exported

TEXTS = ["win a free prize now, call to claim", "see you at lunch tomorrow"]


@pytest.mark.slow
@pytest.mark.multinode
def test_a_replica_on_the_other_node_serves_through_the_artifact_store(
    two_node_cluster, project_factory, tmp_path
):
    import ray
    from ray import serve
    from ray.util.state import list_actors

    from shipyard.corpus.prepare import prepare
    from shipyard.serving.deploy import deploy
    from shipyard.training.publish import publish

    (port,) = free_ports(1)
    serving = {"port": port, "min_replicas": 2, "max_replicas": 2, "replica_cpus": 1}
    training = {**TEXT_PROJECT["training"], "export": {"compress": False}}  # no TFLite: faster
    raw = {**TEXT_PROJECT, "name": "spread", "training": training, "serving": serving}
    project = project_factory(raw)
    corpus = prepare(project).corpus
    published = publish(project, train_in_process(project, corpus, tmp_path / "run").result)
    export = load_exported(published.export.path)
    try:
        service = deploy(project)
        replicas = [
            a
            for a in list_actors(filters=[("state", "=", "ALIVE")], detail=True)
            if a.class_name.startswith("ServeReplica:spread:champion")
        ]
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert {a.node_id for a in replicas} == alive, replicas
        client = Client(service.url)
        expected = export.predict_raw(TEXTS)[:, 0]
        for _ in range(20):  # the router spreads requests over both replicas
            reply = client.post("/v1/predict", {"inputs": TEXTS})
            assert reply.status_code == 200, reply.text
            got = [p["probabilities"][export.labels[1]] for p in reply.json()["predictions"]]
            np.testing.assert_allclose(got, expected, atol=1e-5)
        assert service.champion["version"] == published.version.version
        # What the replicas loaded: the download from the artifact URI, not the driver's folder.
        v = published.version
        where = hashlib.sha256(v.source.encode()).hexdigest()[:12]
        cache = os.path.join(
            tempfile.gettempdir(), "shipyard-models", v.name, f"{v.version}-{where}"
        )
        assert os.path.isfile(os.path.join(cache, ".complete"))
        assert load_exported(os.path.join(cache, "export")).labels == export.labels
    finally:
        serve.shutdown()
