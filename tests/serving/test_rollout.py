"""Canary rollout over real Serve: both versions answer, traffic moves under load without a failed
request, the canary judges itself from feedback, and feedback survives on disk."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
import requests
from conftest import Client

from shipyard.serving import deploy as serving
from shipyard.serving.feedback_store import feedback_dir, read_feedback

pytestmark = pytest.mark.slow


@pytest.fixture
def canary(registered):
    from ray import serve

    project = registered.project.with_overrides(
        {"serving.canary.min_samples": 60, "serving.canary.auto_promote": False}
    )
    service = serving.deploy(project, canary=f"served:{registered.challenger}", canary_percent=50)
    yield project, service, Client(service.url)
    serve.delete(project.name)


def _versions(client: Client, n: int) -> Counter:
    seen = Counter()
    for _ in range(n):
        reply = client.post("/v1/predict", {"inputs": ["free entry to win"]})
        assert reply.status_code == 200, reply.text
        model = reply.json()["predictions"][0]["model"]
        seen[(model["arm"], model["version"])] += 1
    return seen


def test_traffic_moves_under_load_without_a_failed_request(canary, registered):
    project, service, client = canary
    assert service.challenger["version"] == registered.challenger
    seen = _versions(client, 60)
    assert set(seen) == {("champion", registered.champion), ("challenger", registered.challenger)}
    assert 12 <= seen["challenger", registered.challenger] <= 48  # 50% of 60, loosely

    failures, answered, stop = [], Counter(), threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                reply = client.post("/v1/predict", {"inputs": ["see you soon"]})
                if reply.status_code != 200:
                    failures.append(reply.status_code)
                else:
                    answered[reply.json()["predictions"][0]["model"]["arm"]] += 1
            except Exception as exc:
                failures.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        assert serving.set_traffic(project, 0.0) == 0.0  # rollback
        time.sleep(1.0)
        before = answered.copy()
        time.sleep(1.0)
        assert answered["challenger"] == before["challenger"], "rolled back, yet it answered"
        assert serving.set_traffic(project, 100.0) == 100.0  # all to the challenger
        time.sleep(1.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert failures == []
    assert answered["champion"] > 0 and answered["challenger"] > 0
    assert _versions(client, 10) == Counter({("challenger", registered.challenger): 10})
    status = serving.status_of(project)
    assert status["challenger_percent"] == 100.0
    assert "challenger" in serving.format_status(status)
    # The Prometheus endpoint status names exports Serve's own request counters.
    assert status["metrics"] and status["metrics"][0] in serving.format_status(status)
    deadline, text = time.monotonic() + 60, ""
    while "ray_serve_num_http_requests" not in text and time.monotonic() < deadline:
        text = requests.get(status["metrics"][0], timeout=10).text
        time.sleep(2)
    assert "ray_serve_num_http_requests" in text, "no Serve metrics on " + status["metrics"][0]


def _feedback(client: Client, arm: str, correct: bool, n: int) -> None:
    for i in range(n):
        body = {
            "input": f"message number {i}",
            "prediction": "spam",
            "label": "spam" if correct else "ham",
            "arm": arm,
        }
        reply = client.post("/v1/feedback", body)
        assert reply.status_code == 200, reply.text


def test_a_worse_challenger_is_rolled_back_by_the_canary(canary):
    project, _, client = canary
    _feedback(client, "champion", correct=True, n=40)
    _feedback(client, "challenger", correct=False, n=40)
    status = serving.status_of(project)
    assert status["canary"]["state"] == "challenger_worse"
    assert status["challenger_percent"] == 0.0
    assert status["canary"]["decision"].startswith("rolled back")
    # Every acknowledged record is on disk, with the arm and version that answered.
    records = read_feedback(str(feedback_dir(project)))
    assert Counter(r.arm for r in records)["challenger"] >= 40


def test_a_better_challenger_is_reported_ready(canary):
    project, _, client = canary
    _feedback(client, "champion", correct=False, n=30)
    _feedback(client, "champion", correct=True, n=30)
    _feedback(client, "challenger", correct=True, n=60)
    status = serving.status_of(project)
    assert status["canary"]["state"] == "challenger_better", status["canary"]
    assert status["challenger_percent"] == 50.0  # auto_promote is off: reported, not moved


def test_feedback_with_a_label_the_model_does_not_know_is_422(canary):
    _, _, client = canary
    reply = client.post("/v1/feedback", {"input": "hi", "prediction": "spam", "label": "eggs"})
    assert reply.status_code == 422
    assert "label: 'eggs' is not a label of the model" in reply.json()["error"]
