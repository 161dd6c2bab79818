"""`publish`: a finished run's checkpoint exported beside the run and registered, described by
the checkpoint's own record and the checkout it came from, whatever the project says now."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
from export_helpers import KNOWN_COMMIT, copy_checkpoint, fresh_workdir, known_repo

from shipyard.errors import ShipyardError
from shipyard.training.export_loader import load_exported
from shipyard.training.mlflow_store import client
from shipyard.training.model_versions import list_versions, resolve
from shipyard.training.publish import publish

pytestmark = pytest.mark.slow


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """The process runs in a git checkout whose HEAD is KNOWN_COMMIT; nothing from the caller's
    environment (a submitted job's recorded commit, git or MLflow variables) leaks in."""
    for name in ("SHIPYARD_SOURCE_COMMIT", "MLFLOW_TRACKING_URI", "GIT_DIR", "GIT_WORK_TREE"):
        monkeypatch.delenv(name, raising=False)
    repo = known_repo(tmp_path / "checkout")
    monkeypatch.chdir(repo)
    return repo


def test_publish_uses_the_checkpoints_config_and_records_the_source(checkout, text_run, tmp_path):
    trained = text_run.project
    # The project file changed since training: other units and learning rate.
    base = fresh_workdir(trained, tmp_path / "work")
    project = base.model_copy(
        update={
            "model": base.model.model_copy(update={"units": trained.model.units + 5}),
            "training": base.training.model_copy(update={"learning_rate": 0.5}),
        }
    )
    # The project file lives in the checkout: its commit is the source of what is published.
    project._base_dir = checkout
    # The same weights, recorded without compression (no TFLite: a faster export).
    training = {**trained.training.model_dump(mode="json"), "export": {"compress": False}}
    checkpoint = copy_checkpoint(text_run.result.checkpoint, tmp_path / "ck", training=training)
    result = dataclasses.replace(text_run.result, checkpoint=checkpoint)

    first = publish(project, result)
    export = first.export
    assert export.path == os.path.join(project.runs_dir, result.run_name, "export")
    assert export.signature.model_config == trained.model.model_dump(mode="json")
    assert export.signature.model_config["units"] != project.model.units
    assert export.variants == {}  # the run's own training.export.compress
    texts = ["win a free prize now", "see you at lunch"]
    ids = text_run.model.predict(load_exported(export.path).vectorize(texts), verbose=0)
    np.testing.assert_allclose(load_exported(export.path).predict_raw(texts), ids, atol=1e-5)

    version = first.version
    assert (version.name, version.version) == (project.registered_model_name, 1)
    assert version.aliases == ["champion"]  # a model's first version becomes champion
    assert version.tags["source_commit"] == KNOWN_COMMIT
    assert version.tags["source_dirty"] == "false"
    assert version.tags["corpus_content_hash"] == text_run.corpus.content_hash
    assert version.tags["checkpoint"] == checkpoint
    run = client(project).get_run(version.run_id)
    assert run.data.params["model.units"] == str(trained.model.units)
    assert run.data.params["training.learning_rate"] == str(trained.training.learning_rate)
    assert run.data.params["training.export.compress"] == "False"
    assert run.data.tags["mlflow.source.git.commit"] == KNOWN_COMMIT
    assert any(line.startswith("registered") and "version 1" in line for line in first.describe())

    # An uncommitted change in the checkout: the next version says so, and champion stays.
    (checkout / "f.txt").write_text("v2\n")
    second = publish(project, result)
    assert second.version.version == 2
    assert second.version.tags["source_commit"] == KNOWN_COMMIT
    assert second.version.tags["source_dirty"] == "true"
    assert second.version.aliases == []
    assert resolve(project, "champion").version == 1
    assert [(v.version, v.aliases) for v in list_versions(project)] == [
        (1, ["champion"]),
        (2, []),
    ]


def test_a_run_without_a_checkpoint_is_refused(text_run, tmp_path):
    project = fresh_workdir(text_run.project, tmp_path / "work")
    with pytest.raises(ShipyardError, match="no checkpoint"):
        publish(project, dataclasses.replace(text_run.result, checkpoint=None))
