"""A registered tiny text model (two versions) and Serve on the session's local Ray.

Serve binds one HTTP port per Ray cluster, so the session picks one free port and every served
project here uses it; each module deletes the apps it deployed, so no replica outlives its tests
(the training and tuning tests need the CPUs back).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from trained_models import TEXT_PROJECT, train_in_process

from shipyard.cluster.network import free_ports
from shipyard.project import Project


@dataclass
class Registered:
    project: Project
    champion: int  # version numbers
    challenger: int


@pytest.fixture(scope="session")
def serve_port(ray_local) -> int:
    """Serve on one free port; stopped right after the last test that uses it (tests/conftest.py),
    not at the end of the session."""
    from ray import serve

    (port,) = free_ports(1)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()


@pytest.fixture(scope="session")
def registered(serve_port, text_run, session_project_factory, tmp_path_factory) -> Registered:
    """Two versions of the session's tiny LSTM: v1 (champion, with TFLite variants) is the
    session's trained run, v2 is trained one epoch longer."""
    from shipyard.training.publish import publish

    raw = {
        **TEXT_PROJECT,
        "name": "served",
        "serving": {"port": serve_port, "min_replicas": 1, "max_replicas": 1},
    }
    project = session_project_factory(raw)
    first = publish(project, text_run.result)
    longer = project.with_overrides(
        {"training.epochs": project.training.epochs + 1, "training.export.compress": False}
    )
    runs = tmp_path_factory.mktemp("served-runs")
    second = publish(longer, train_in_process(longer, text_run.corpus, runs / "run-2").result)
    return Registered(project, first.version.version, second.version.version)


class Client:
    """HTTP to a deployed app: `post(path, json)` returns the `requests.Response`."""

    def __init__(self, url: str, token: str | None = None):
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.url + path, headers=self.headers, timeout=30, **kw)

    def post(self, path: str, body=None, **kw) -> requests.Response:
        return requests.post(self.url + path, json=body, headers=self.headers, timeout=30, **kw)


@pytest.fixture(scope="module")
def deployed(registered):
    """The champion served as the project's app for this module's tests."""
    from ray import serve

    from shipyard.serving.deploy import deploy

    service = deploy(registered.project)
    yield service, Client(service.url)
    serve.delete(registered.project.name)


def workdir(project: Project) -> Path:
    return project.workdir_path
