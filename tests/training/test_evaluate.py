"""`evaluate` and its CLI: a registered version re-scored on the corpus equals a direct score."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shipyard.cli import main
from shipyard.training import registry
from shipyard.training.evaluate import evaluate, format_table
from shipyard.training.metrics import classification_metrics
from shipyard.training.models import KINDS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registered(text_run, text_export, tmp_path_factory):
    """Version 1 as champion, in a tracking store named by MLFLOW_TRACKING_URI (as on a team
    server), so this module does not share the registry test's embedded store."""
    db = tmp_path_factory.mktemp("tracking") / "eval.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
        version = registry.log_run(text_run.project, text_run.result, text_export)
        registry.set_alias(text_run.project, "champion", version.version)
        yield text_run.project, version


def direct(kit, text_run, split: str) -> dict:
    """The in-memory model on the shard's ids, scored without any of the evaluate code."""
    rows = kit.read_split(text_run.corpus, split)
    probs = text_run.model.predict(rows["ids"], verbose=0)
    return classification_metrics(probs, rows["label"], text_run.corpus.num_classes)


def test_evaluate_a_registered_alias_equals_a_direct_score(kit, registered, text_run):
    project, version = registered
    got = evaluate(f"{project.registered_model_name}@champion", project)
    want = direct(kit, text_run, "test")
    assert got["version"] == version.version and got["split"] == "test"
    assert got["count"] == want["count"] == text_run.corpus.rows("test")
    assert got["accuracy"] == want["accuracy"]
    assert got["confusion_matrix"] == want["confusion_matrix"]
    assert got["loss"] == pytest.approx(want["loss"], abs=1e-5)
    assert got["roc_auc"] == pytest.approx(want["roc_auc"], abs=1e-6)
    assert got["corpus_matches"] is True


def test_evaluate_an_export_folder_on_another_split(kit, registered, text_run, text_export):
    project, _ = registered
    got = evaluate(text_export.path, project, split="validation")
    want = direct(kit, text_run, "validation")
    assert got["version"] is None and got["split"] == "validation"
    assert (got["accuracy"], got["count"]) == (want["accuracy"], want["count"])
    table = format_table(got)
    assert "accuracy" in table and f"{want['accuracy']:.4f}" in table
    for label in text_run.corpus.labels:
        assert label in table


def test_cli_evaluate_prints_json_and_a_table(registered, capsys):
    project, version = registered
    assert main(["evaluate", project.source_file, "champion", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["version"] == version.version and 0 <= out["accuracy"] <= 1
    assert np.array(out["confusion_matrix"]).sum() == out["count"]

    assert main(["evaluate", project.source_file, "1", "--split", "validation"]) == 0
    assert "confusion matrix" in capsys.readouterr().out


def test_cli_evaluate_bad_reference_is_exit_2(registered, capsys):
    project, _ = registered
    assert main(["evaluate", project.source_file, "nosuchalias"]) == 2
    assert "no version with alias 'nosuchalias'" in capsys.readouterr().err


def test_cli_models_lists_every_kind(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for kind in KINDS.values():
        assert kind.name in out and kind.when[:40] in out
