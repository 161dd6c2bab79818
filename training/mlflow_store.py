"""Where MLflow keeps a project's runs and model versions, and a client for it.

Embedded by default (a sqlite file in the project's workdir, artifacts beside it), a tracking
server when `MLFLOW_TRACKING_URI` is set. The sqlite store takes one writer: write from the driver
(the CLI, Train's or Tune's driver-side callbacks), never from workers.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from shipyard.project import Project

if TYPE_CHECKING:
    from mlflow import MlflowClient

DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"


def tracking_uri(project: Project) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{project.workdir_path / DB_FILE}"


def client(project: Project) -> MlflowClient:
    from mlflow import MlflowClient

    uri = tracking_uri(project)
    if uri.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(uri.removeprefix("sqlite:///")) or ".", exist_ok=True)
    _quiet()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(mlc: MlflowClient, project: Project) -> str:
    """The project's experiment (named after the project), created on first use."""
    found = mlc.get_experiment_by_name(project.name)
    if found is not None:
        return found.experiment_id
    # A local store keeps artifacts under the workdir (MLflow's default is ./mlruns of the cwd);
    # a tracking server chooses its own artifact root.
    local = urlparse(tracking_uri(project)).scheme in ("sqlite", "file", "")
    location = (project.workdir_path / ARTIFACTS_DIR).as_uri() if local else None
    return mlc.create_experiment(project.name, artifact_location=location)


def _quiet() -> None:
    """The sqlite store's schema migrations log a dozen INFO lines on first use."""
    for name in ("alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)
