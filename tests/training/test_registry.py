"""The MLflow registry on its embedded sqlite store: runs, versions, lineage tags, aliases."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from shipyard.errors import UserInputError
from shipyard.training import registry
from shipyard.training.export import load_exported

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def logged(text_run, text_export):
    """Two registrations of the same run in a fresh workdir: versions 1 and 2, in the embedded
    store (MLflow's own environment must not leak in)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        project = text_run.project
        assert not os.path.exists(project.workdir_path / registry.DB_FILE), "registry not fresh"
        first = registry.log_run(project, text_run.result, text_export)
        second = registry.log_run(project, text_run.result, text_export)
        yield project, first, second


def expected_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def test_versions_runs_lineage_and_aliases(logged, text_run, text_export):
    project, first, second = logged
    corpus = text_run.corpus
    name = project.registered_model_name
    assert (first.name, first.version, second.version) == (name, 1, 2)
    # The embedded store and its artifacts live in the project's workdir.
    assert registry.tracking_uri(project) == f"sqlite:///{project.workdir_path / 'mlflow.db'}"
    assert os.path.isfile(project.workdir_path / "mlflow.db")
    assert first.local_path.startswith(str(project.workdir_path / registry.ARTIFACTS_DIR))

    for version in (first, second):
        assert version.tags["corpus_content_hash"] == corpus.content_hash
        assert version.tags["git_commit"] == expected_commit()
        assert version.tags["corpus_manifest"] == os.path.join(corpus.path, "manifest.json")

    mlc = registry.client(project)
    run = mlc.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.kind"] == "lstm_classifier"
    assert run.data.params["training.export.compress"] == "True"
    assert run.data.params["model.hidden_units"] == "[64, 32]"
    assert run.data.metrics["test_accuracy"] == pytest.approx(
        text_run.result.metrics["test_accuracy"]
    )
    assert (
        run.data.metrics["export_tflite_int8_bytes"] == text_export.variants["tflite_int8"]["bytes"]
    )
    val_loss = mlc.get_metric_history(first.run_id, "val_loss")
    assert sorted(m.step for m in val_loss) == [1, 2]
    assert [d.dataset.digest for d in run.inputs.dataset_inputs] == [corpus.content_hash[:32]]

    def artifacts(path=None) -> set[str]:
        return {a.path for a in mlc.list_artifacts(first.run_id, path)}

    assert {"plots", "model", "corpus", "tensorboard"} <= artifacts()
    assert {
        "plots/confusion_matrix_test.png",
        "plots/confusion_matrix_val.png",
        "plots/training_curves.png",
    } <= artifacts("plots")
    assert {"model/saved_model", "model/signature.json", "model/tflite"} <= artifacts("model")

    # Aliases: set, listed, resolved in every spelling.
    registry.set_alias(project, "champion", 1)
    registry.set_alias(project, "challenger", 2)
    listed = registry.list_versions(project)
    assert [(v.version, v.aliases) for v in listed] == [(1, ["champion"]), (2, ["challenger"])]
    assert registry.get_alias(project, "champion").version == 1
    for ref, version in [
        (f"models:/{name}@champion", 1),
        (f"{name}@challenger", 2),
        (f"models:/{name}/2", 2),
        (f"{name}/1", 1),
        ("champion", 1),
        ("2", 2),
        (name, 2),  # the bare name: the newest version
    ]:
        assert registry.resolve(project, ref).version == version, ref

    # Moving an alias moves what it resolves to.
    registry.set_alias(project, "champion", 2)
    assert registry.resolve(project, f"{name}@champion").version == 2

    # The artifact path is a loadable export that predicts like the one that was logged.
    path = registry.artifact_path(project, f"models:/{name}@champion")
    texts = ["win a free prize now", "see you at lunch"]
    np.testing.assert_allclose(
        load_exported(path).predict_raw(texts),
        load_exported(text_export.path).predict_raw(texts),
        atol=1e-6,
    )


def test_unknown_references_are_bad_input(logged):
    project, _, _ = logged
    name = project.registered_model_name
    for ref in ("nobody", f"{name}/9", f"{name}@nobody", "other_model@champion"):
        with pytest.raises(UserInputError):
            registry.resolve(project, ref)
    with pytest.raises(UserInputError, match="no version 9"):
        registry.set_alias(project, "champion", 9)


def test_flatten_keeps_nested_names():
    flat = registry.flatten({"training": {"export": {"compress": True}, "workers": 2}, "x": [1]})
    assert flat == {"training.export.compress": True, "training.workers": 2, "x": "[1]"}
