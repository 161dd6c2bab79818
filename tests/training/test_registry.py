"""The MLflow registry on its embedded sqlite store: runs, versions, lineage tags, aliases, the
champion policy, and the `versions` and `promote` commands."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pytest
from export_helpers import compressed_export, fresh_workdir

from shipyard.cli import main
from shipyard.errors import UserInputError
from shipyard.project import Project
from shipyard.source_commit import SourceCommit
from shipyard.training import model_versions as versions
from shipyard.training.checkpoint import read_state
from shipyard.training.export_loader import load_exported
from shipyard.training.mlflow_store import ARTIFACTS_DIR, DB_FILE, client, tracking_uri
from shipyard.training.run_logging import flatten, log_run

pytestmark = pytest.mark.slow

DIRTY = SourceCommit("a1b2c3d4e5" * 4, dirty=True)
CLEAN = SourceCommit("f0e1d2c3b4" * 4, dirty=False)


@dataclass
class Registry:
    project: Project
    workdir: str
    first: versions.RegisteredVersion
    second: versions.RegisteredVersion

    def cli(self, *args: str) -> int:
        """`shipyard COMMAND PROJECT.yaml ARGS`, the project's outputs in this registry's
        workdir, as a user would type it."""
        command, *rest = args
        return main([command, self.project.source_file, "--workdir", self.workdir, *rest])


@pytest.fixture(scope="module")
def text_export(text_run, tmp_path_factory):
    return compressed_export(text_run, tmp_path_factory)


@pytest.fixture(scope="module")
def registry(text_run, text_export, tmp_path_factory):
    """Two registrations of the same run in a fresh workdir (versions 1 and 2, from a dirty and
    a clean checkout), in the embedded store: MLflow's own environment must not leak in."""
    workdir = tmp_path_factory.mktemp("registry")
    project = fresh_workdir(text_run.project, workdir)
    state = read_state(text_run.result.checkpoint)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert not os.path.exists(workdir / DB_FILE), "registry not fresh"
        logged = [
            log_run(project, text_run.result, text_export, state=state, source=source)
            for source in (DIRTY, CLEAN)
        ]
        first, second = (versions.register_version(project, run) for run in logged)
        yield Registry(project, str(workdir), first, second)


def test_versions_runs_and_lineage(registry, text_run, text_export):
    project, first, second = registry.project, registry.first, registry.second
    export = text_export
    corpus = text_run.corpus
    name = project.registered_model_name
    assert (first.name, first.version, second.version) == (name, 1, 2)
    # The embedded store and its artifacts live in the project's workdir.
    assert tracking_uri(project) == f"sqlite:///{project.workdir_path / 'mlflow.db'}"
    assert os.path.isfile(project.workdir_path / "mlflow.db")
    assert first.local_path.startswith(str(project.workdir_path / ARTIFACTS_DIR))

    for version, source in ((first, DIRTY), (second, CLEAN)):
        assert version.tags["corpus_content_hash"] == corpus.content_hash
        assert version.tags["corpus_manifest"] == os.path.join(corpus.path, "manifest.json")
        assert version.tags["source_commit"] == source.commit
        assert version.tags["checkpoint_epoch"] == str(text_run.project.training.epochs)
    assert (first.tags["source_dirty"], second.tags["source_dirty"]) == ("true", "false")

    mlc = client(project)
    run = mlc.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.kind"] == "lstm_classifier"
    assert run.data.params["training.export.compress"] == "True"
    assert run.data.params["model.hidden_units"] == "[64, 32]"
    assert run.data.metrics["test_accuracy"] == pytest.approx(
        text_run.result.metrics["test_accuracy"]
    )
    assert run.data.metrics["export_tflite_int8_bytes"] == export.variants["tflite_int8"].bytes
    # Export accuracies are named by the split they were measured on.
    assert run.data.metrics["export_full_test_accuracy"] == pytest.approx(export.accuracy)
    assert run.data.metrics["export_tflite_int8_test_accuracy"] == pytest.approx(
        export.variants["tflite_int8"].accuracy
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

    # The artifact path is a loadable export that predicts like the one that was logged.
    path = versions.artifact_path(project, f"models:/{name}/1")
    texts = ["win a free prize now", "see you at lunch"]
    np.testing.assert_allclose(
        load_exported(path).predict_raw(texts),
        load_exported(export.path).predict_raw(texts),
        atol=1e-6,
    )


def test_the_first_version_is_champion_and_aliases_move_only_on_purpose(registry):
    project = registry.project
    name = project.registered_model_name
    assert (registry.first.aliases, registry.second.aliases) == (["champion"], [])
    listed = versions.list_versions(project)
    assert [(v.version, v.aliases) for v in listed] == [(1, ["champion"]), (2, [])]

    versions.set_alias(project, "challenger", 2)
    for ref, version in [
        (f"models:/{name}@champion", 1),
        (f"{name}@challenger", 2),
        (f"models:/{name}/2", 2),
        (f"{name}/1", 1),
        (f"{name}:2", 2),
        ("@champion", 1),
        ("champion", 1),
        ("2", 2),
        (name, 2),  # the bare name: the newest version
    ]:
        assert versions.resolve(project, ref).version == version, ref

    moved = versions.promote(project, f"{name}:2")
    assert (moved.previous, moved.version) == (1, 2)
    assert moved.describe() == f"{name}@champion: version 1 -> version 2"
    assert versions.resolve(project, "champion").version == 2
    assert versions.promote(project, "2").describe() == f"{name}@champion is already version 2"
    # MODEL@alias: the version another alias names.
    back = versions.promote(project, f"{name}@champion", alias="stable")
    assert (back.previous, back.version, back.alias) == (None, 2, "stable")
    assert back.describe() == f"{name}@stable: no version -> version 2"
    versions.promote(project, "1")  # as the module found it: champion on 1, challenger on 2
    client(project).delete_registered_model_alias(name, "stable")
    assert versions.resolve(project, "champion").version == 1


def test_cli_promote_and_versions(registry, text_run, capsys):
    name = registry.project.registered_model_name
    assert registry.cli("promote", f"{name}:2") == 0
    assert capsys.readouterr().out.strip() == f"{name}@champion: version 1 -> version 2"
    assert registry.cli("promote", f"{name}/1", "--alias", "challenger") == 0
    assert "challenger: version 2 -> version 1" in capsys.readouterr().out
    assert registry.cli("promote", "1") == 0
    assert capsys.readouterr().out.strip() == f"{name}@champion: version 2 -> version 1"

    assert registry.cli("versions") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(name)
    header, one, two, footer = lines[1:]
    assert header.split() == [
        "version",
        "aliases",
        "val_acc",
        "test_acc",
        "corpus",
        "commit",
        "created",
    ]
    m = text_run.result.metrics
    hash12 = text_run.corpus.content_hash[:12]
    assert one.split()[:6] == [
        "1",
        "challenger,champion",
        f"{m['val_accuracy']:.4f}",
        f"{m['test_accuracy']:.4f}",
        hash12,
        DIRTY.commit[:10] + "*",
    ]
    assert two.split()[:6] == ["2", "-", one.split()[2], one.split()[3], hash12, CLEAN.commit[:10]]
    assert "uncommitted changes" in footer


def test_cli_bad_references_are_exit_2(registry, capsys):
    name = registry.project.registered_model_name
    for args, message in [
        (("promote", f"{name}:9"), "has no version 9"),
        (("promote", "nobody"), "no version with alias 'nobody'"),
        (("promote", "1", "--alias", "latest"), "not an alias name"),
        (("promote", f"{name}:x"), "with a number"),
        (("versions", "nobody"), f"no registered model 'nobody' (registered: {name})"),
    ]:
        assert registry.cli(*args) == 2, args
        assert message in capsys.readouterr().err, args
    assert versions.resolve(registry.project, "champion").version == 1  # nothing moved


def test_unknown_references_are_bad_input(registry):
    project = registry.project
    name = project.registered_model_name
    for ref in ("nobody", f"{name}/9", f"{name}:9", f"{name}@nobody", "other_model@champion"):
        with pytest.raises(UserInputError):
            versions.resolve(project, ref)
    with pytest.raises(UserInputError, match="no version 9"):
        versions.set_alias(project, "champion", 9)


def test_a_model_without_versions_says_so(tmp_path, text_run, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    project = fresh_workdir(text_run.project, tmp_path)
    assert versions.describe_versions(project) == []
    assert "no registered versions yet" in versions.format_versions([], "tiny_text")


def test_flatten_keeps_nested_names():
    flat = flatten({"training": {"export": {"compress": True}, "workers": 2}, "x": [1]})
    assert flat == {"training.export.compress": True, "training.workers": 2, "x": "[1]"}
