"""The HTTP API over real Serve: predictions that equal the export's, explanations, model info,
health, and bad input answered 4xx with the replica still serving."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from shipyard.training.export_loader import load_exported
from shipyard.training.model_versions import artifact_path

pytestmark = pytest.mark.slow

TEXTS = ["win a free prize now, call to claim", "see you at lunch tomorrow", "ok"]


def test_predictions_equal_the_exports_and_name_the_version(deployed, registered):
    _, client = deployed
    reply = client.post("/v1/predict", {"inputs": TEXTS})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["request_id"] == reply.headers["x-request-id"]
    export = load_exported(artifact_path(registered.project, f"served:{registered.champion}"))
    expected = export.predict_raw(TEXTS)[:, 0]  # binary: P(labels[1])
    got = [p["probabilities"][export.labels[1]] for p in body["predictions"]]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    for p in body["predictions"]:
        assert p["model"] == {
            "name": "served",
            "version": registered.champion,
            "variant": "full",
            "arm": "champion",
        }
        assert p["label"] == max(p["probabilities"], key=p["probabilities"].get)
        assert sum(p["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_many_concurrent_clients_get_their_own_answers(deployed):
    """Batching merges requests from many clients; each must get the answer to its own input."""
    from concurrent.futures import ThreadPoolExecutor

    _, client = deployed
    singles = {t: client.post("/v1/predict", {"inputs": [t]}).json() for t in TEXTS}
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda t: client.post("/v1/predict", {"inputs": [t]}), TEXTS * 16))
    for text, reply in zip(TEXTS * 16, replies, strict=True):
        assert reply.status_code == 200
        want = singles[text]["predictions"][0]["probabilities"]
        got = reply.json()["predictions"][0]["probabilities"]
        assert got == pytest.approx(want, abs=1e-5)


def test_model_info_and_health(deployed, registered):
    _, client = deployed
    info = client.get("/v1/model").json()
    assert info["champion"]["version"] == registered.champion
    assert info["champion"]["columns"] == {"text": "string"}
    assert info["champion"]["corpus_content_hash"]
    assert "test_accuracy" in info["champion"]["metrics"]
    assert info["challenger"] is None and info["challenger_percent"] == 0
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]


def test_explanations_score_the_tokens_that_move_the_prediction(deployed, registered):
    _, client = deployed
    text = "win a free prize now, call to claim"
    reply = client.post("/v1/explain", {"inputs": [text]})
    assert reply.status_code == 200, reply.text
    (explanation,) = reply.json()["explanations"]
    tokens = [a["token"] for a in explanation["attributions"]]
    assert tokens == ["win", "a", "free", "prize", "now", "call", "to", "claim"]
    for a in explanation["attributions"]:
        assert text[a["start"] : a["end"]] == a["token"]
    # Occlusion, checked against the export itself: a token's score is the drop in the predicted
    # class's probability when it is removed.
    export = load_exported(artifact_path(registered.project, f"served:{registered.champion}"))
    top = export.labels.index(explanation["label"])
    first = explanation["attributions"][0]
    occluded = text[: first["start"]] + " " + text[first["end"] :]
    p = export.predict_raw([text, occluded])[:, 0]
    probs = np.stack([1 - p, p], axis=1)[:, top]
    assert first["score"] == pytest.approx(probs[0] - probs[1], abs=1e-5)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"inputs": []}, 422, "inputs: List should have at least 1 item"),
        ({"inputs": [""]}, 422, "inputs[0]: empty text"),
        ({"inputs": ["x" * 2001]}, 422, "inputs[0]: 2001 characters, at most 2000"),
        ({"inputs": ["a"] * 65}, 422, "inputs: 65 items, at most 64 per request"),
        ({"inputs": [{"age": 3}]}, 422, "a text model takes strings (got an object)"),
        ({"inputs": [3]}, 422, "inputs.0"),
        ({"texts": ["a"]}, 422, "texts: Extra inputs are not permitted"),
    ],
)
def test_bad_input_is_4xx_with_a_message_and_the_replica_keeps_serving(
    deployed, body, status, message
):
    _, client = deployed
    reply = client.post("/v1/predict", body)
    assert reply.status_code == status, reply.text
    assert message in reply.json()["error"]
    assert client.post("/v1/predict", {"inputs": ["hello"]}).status_code == 200


@pytest.mark.parametrize(
    ("path", "data", "message"),
    [
        ("v1/predict", b"{not json", "JSON decode error"),
        ("v1/predict", b'{"inputs": ["\xff\xfe"]}', "body: not a JSON document"),
        ("v1/predict", b'{"inputs": ["ok", "\\ud800"]}', "inputs[1]: not valid Unicode"),
        ("v1/explain", b'{"inputs": [{"text": "\\udfff"}]}', "inputs[0].text: not valid Unicode"),
        (
            "v1/feedback",
            b'{"input": "\\udfff", "prediction": "ham", "label": "spam"}',
            "input: not valid Unicode",
        ),
    ],
)
def test_broken_bodies_are_4xx_with_an_error(deployed, path, data, message):
    service, client = deployed
    reply = requests.post(
        service.url + path, data=data, headers={"content-type": "application/json"}, timeout=30
    )
    assert 400 <= reply.status_code < 500, reply.text
    assert message in reply.json()["error"]
    assert client.post("/v1/predict", {"inputs": ["hello"]}).status_code == 200
