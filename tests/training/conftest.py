"""Fixtures for export, registry and evaluation: tiny corpora prepared by the real pipeline and
checkpoints trained in this process (see tests/trained_models.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from trained_models import (
    TABULAR_PROJECT,
    model_inputs,
    read_split,
    train_in_process,
)

from shipyard.corpus.manifest import PreparedCorpus
from shipyard.project import Project


@pytest.fixture(scope="session")
def tabular_corpus(ray_local, session_project_factory) -> tuple[Project, PreparedCorpus]:
    from shipyard.corpus.prepare import prepare

    project = session_project_factory(TABULAR_PROJECT)
    return project, prepare(project).corpus


@pytest.fixture(scope="session")
def text_export(text_run, tmp_path_factory):
    """The LSTM run exported with `training.export.compress: true` (SavedModel + TFLite)."""
    from shipyard.training.export_writer import export_model

    out = tmp_path_factory.mktemp("export") / "tiny_text"
    return export_model(
        text_run.result.checkpoint,
        text_run.corpus,
        str(out),
        name=text_run.project.registered_model_name,
        compress=True,
    )


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    """The helpers above, for test modules (a conftest is not importable by name)."""
    return SimpleNamespace(
        read_split=read_split, model_inputs=model_inputs, train_in_process=train_in_process
    )
