"""A tabular model behind real Serve: rows in, the export's probabilities out, per-feature
occlusion, feedback rows exported with the corpus's feature types, and bad rows answered 422
naming the row and the column while the replica keeps serving."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import Client
from trained_models import TABULAR_PROJECT, train_in_process

from shipyard.training.export_loader import load_exported

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tabular(serve_port, session_project_factory, tmp_path_factory):
    from ray import serve

    from shipyard.corpus.prepare import prepare
    from shipyard.serving.deploy import deploy
    from shipyard.training.publish import publish

    raw = {
        **TABULAR_PROJECT,
        "name": "served_rows",
        "serving": {"port": serve_port, "min_replicas": 1, "max_replicas": 1},
    }
    project = session_project_factory(raw)
    corpus = prepare(project).corpus
    trained = train_in_process(project, corpus, tmp_path_factory.mktemp("rows-run"))
    published = publish(project, trained.result)
    service = deploy(project)
    yield project, corpus, load_exported(published.export.path), Client(service.url)
    serve.delete(project.name)


def rows_of(corpus, n: int = 5) -> list[dict]:
    """Raw test rows as a client sends them (numbers as JSON numbers, None for missing)."""
    table = pq.read_table(corpus.split_path("test"))
    features = [*corpus.features["numeric"], *corpus.features["categorical"]]
    rows = table.select(features).slice(0, n).to_pylist()
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in rows
    ]


def test_rows_are_answered_with_the_exports_probabilities(tabular):
    _, corpus, export, client = tabular
    rows = rows_of(corpus)
    reply = client.post("/v1/predict", {"inputs": rows})
    assert reply.status_code == 200, reply.text
    expected = export.predict_raw(rows)
    got = [p["probabilities"][export.labels[1]] for p in reply.json()["predictions"]]
    np.testing.assert_allclose(got, expected[:, 0], atol=1e-5)
    info = client.get("/v1/model").json()["champion"]
    assert set(info["columns"]) == {*corpus.features["numeric"], *corpus.features["categorical"]}
    assert {info["columns"][c] for c in corpus.features["numeric"]} == {"float32"}


def test_explanations_occlude_each_feature(tabular):
    _, corpus, export, client = tabular
    (row,) = rows_of(corpus, 1)
    reply = client.post("/v1/explain", {"inputs": [row]})
    assert reply.status_code == 200, reply.text
    (explanation,) = reply.json()["explanations"]
    scores = {a["token"]: a["score"] for a in explanation["attributions"]}
    assert set(scores) == set(row)
    # A feature's score is the drop in the predicted class's probability when it is missing.
    p = export.predict_raw([row] + [{**row, name: None} for name in row]).reshape(len(row) + 1, -1)
    probs = np.concatenate([1 - p, p], axis=1) if p.shape[1] == 1 else p
    top = export.labels.index(explanation["label"])
    for i, name in enumerate(row, start=1):
        assert scores[name] == pytest.approx(probs[0, top] - probs[i, top], abs=1e-4), name


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: {k: v for k, v in r.items() if k != "age"}, "missing feature columns ['age']"),
        (lambda r: {**r, "colour": "red"}, "inputs[0]: unknown feature columns ['colour']"),
        (lambda r: {**r, "income": "lots"}, "inputs[0].income: a number or null (got 'lots')"),
        (lambda r: "a text", "inputs[0]: a tabular model takes rows of features"),
    ],
)  # fmt: skip
def test_bad_rows_are_422_naming_the_column_and_the_replica_stays(tabular, change, message):
    _, corpus, _, client = tabular
    (row,) = rows_of(corpus, 1)
    reply = client.post("/v1/predict", {"inputs": [change(row)]})
    assert reply.status_code == 422, reply.text
    assert message in reply.json()["error"]
    assert client.post("/v1/predict", {"inputs": [row]}).status_code == 200


def test_feedback_rows_are_exported_with_the_corpus_feature_types(tabular):
    from shipyard.serving.feedback_export import export_feedback

    project, corpus, export, client = tabular
    (row,) = rows_of(corpus, 1)
    predicted = client.post("/v1/predict", {"inputs": [row]}).json()["predictions"][0]
    label = next(lab for lab in export.labels if lab != predicted["label"])
    body = {"input": row, "prediction": predicted["label"], "label": label}
    reply = client.post("/v1/feedback", body)
    assert reply.status_code == 200, reply.text
    batch = export_feedback(project)
    assert batch.rows == 1 and batch.labels == {label: 1}
    table = pq.read_table(batch.path)
    for name in corpus.features["numeric"]:
        assert str(table.schema.field(name).type) == "double", name
        assert table[name][0].as_py() == pytest.approx(row[name])
    for name in corpus.features["categorical"]:
        assert table[name][0].as_py() == row[name]
