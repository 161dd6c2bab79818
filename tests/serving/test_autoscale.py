"""Autoscaling and durability over real Serve: load raises the replica count above the minimum
and it falls back after; an acknowledged feedback record survives its replica being SIGKILLed."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from conftest import Client

from shipyard.serving import deploy as serving
from shipyard.serving.feedback_store import read_feedback

pytestmark = pytest.mark.slow


def _running(project) -> int:
    return serving.status_of(project)["replicas"]["champion"]


def _wait(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g} s")
        time.sleep(1.0)


def test_load_scales_the_model_up_and_idleness_back_down(registered):
    from ray import serve

    project = registered.project.with_overrides(
        {
            "serving.min_replicas": 1,
            "serving.max_replicas": 2,
            # On 2 shared cores the clients, proxy and ingress leave the model replica idle
            # most of the time (~20 ms calls every ~110 ms): a target of 1 request in flight
            # took ~50 s of load to cross, 0.25 is crossed at the first metrics push.
            "serving.target_ongoing_requests": 0.25,
            "serving.upscale_delay_s": 1,
            "serving.downscale_delay_s": 2,
            "serving.look_back_period_s": 12,
            "serving.batch_wait_timeout_s": 0.05,
        }
    )
    service = serving.deploy(project)
    client = Client(service.url)
    try:
        assert _running(project) == 1
        stop, failures = threading.Event(), []

        def load() -> None:
            while not stop.is_set():
                reply = client.post("/v1/predict", {"inputs": ["win cash now"] * 32})
                if reply.status_code != 200:
                    failures.append(reply.status_code)

        threads = [threading.Thread(target=load) for _ in range(8)]
        for t in threads:
            t.start()
        try:
            _wait(lambda: _running(project) > 1, 120, "no second replica under load")
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        assert failures == []
        _wait(lambda: _running(project) == 1, 120, "not back to min_replicas when idle")
    finally:
        serve.delete(project.name)


def test_acknowledged_feedback_survives_a_killed_replica(registered):
    import ray
    from ray import serve

    service = serving.deploy(registered.project)
    client = Client(service.url)
    try:
        body = {"input": "free tickets, reply now", "prediction": "spam", "label": "ham"}
        reply = client.post("/v1/feedback", body)
        assert reply.status_code == 200, reply.text
        record_id = reply.json()["id"]
        os.kill(serving.status_of(registered.project)["ingress"]["pid"], signal.SIGKILL)
        found = {r.id: r for r in read_feedback(service.feedback_dir)}
        assert found[record_id].label == "ham"
        assert found[record_id].input == body["input"]
        assert found[record_id].version == registered.champion
        # Serve replaces the replica; the service answers again.
        _wait(
            lambda: _ok(client),
            90,
            "the service did not answer after its ingress was killed",
        )
        assert ray.is_initialized()
    finally:
        serve.delete(registered.project.name)


def _ok(client: Client) -> bool:
    try:
        return client.post("/v1/predict", {"inputs": ["hello"]}).status_code == 200
    except OSError:
        return False


def test_a_token_guards_the_api_and_a_tflite_variant_answers(registered, monkeypatch):
    from ray import serve

    monkeypatch.setenv(serving.TOKEN_ENV, "s3cret")
    service = serving.deploy(registered.project, variant="tflite_int8")
    try:
        anonymous, wrong = Client(service.url), Client(service.url, token="guess")
        for client in (anonymous, wrong):
            reply = client.post("/v1/predict", {"inputs": ["hello"]})
            assert reply.status_code == 401
            assert "bearer token" in reply.json()["error"]
            assert client.post("/v1/feedback", {}).status_code in (401, 422)
        assert anonymous.get("/healthz").status_code == 200  # probes need no token
        client = Client(service.url, token="s3cret")
        reply = client.post("/v1/predict", {"inputs": ["win a free prize now"]})
        assert reply.status_code == 200, reply.text
        assert reply.json()["predictions"][0]["model"]["variant"] == "tflite_int8"
    finally:
        serve.delete(registered.project.name)
