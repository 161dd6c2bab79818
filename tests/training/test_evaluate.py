"""`evaluate` and its CLI: a registered version re-scored on the corpus equals a direct score."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from export_helpers import compressed_export

from shipyard.cli import main
from shipyard.corpus.manifest import PreparedCorpus
from shipyard.source_commit import SourceCommit
from shipyard.training.checkpoint import read_state
from shipyard.training.evaluate import evaluate, format_table
from shipyard.training.metrics import classification_metrics
from shipyard.training.model_versions import register_version
from shipyard.training.models import KINDS
from shipyard.training.run_logging import log_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def text_export(text_run, tmp_path_factory):
    return compressed_export(text_run, tmp_path_factory)


@pytest.fixture(scope="module")
def registered(text_run, text_export, tmp_path_factory):
    """One version, in a tracking store named by MLFLOW_TRACKING_URI (as on a team server), so
    this module does not share the registry test's embedded store. Nothing sets an alias: the
    first version of a model is champion by policy, which is what the README evaluates."""
    db = tmp_path_factory.mktemp("tracking") / "eval.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
        state = read_state(text_run.result.checkpoint)
        run = log_run(
            text_run.project, text_run.result, text_export, state=state, source=SourceCommit()
        )
        version = register_version(text_run.project, run)
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


def test_another_corpus_is_scored_and_named(registered, text_run, monkeypatch):
    """A version evaluated on a corpus it was not trained on: scored, and the summary names
    both corpora."""
    project, _ = registered
    corpus = text_run.corpus
    other = PreparedCorpus(corpus.path, {**corpus.manifest, "content_hash": "d" * 64})
    monkeypatch.setattr(PreparedCorpus, "load", classmethod(lambda cls, path: other))
    got = evaluate("champion", project)
    assert got["corpus_matches"] is False
    assert f"trained on corpus {corpus.content_hash[:12]}, this is {'d' * 12}" in format_table(got)


def run_evaluate(registered, **env) -> subprocess.CompletedProcess:
    """`shipyard evaluate` in a fresh process, as a person runs it."""
    project, _ = registered
    base = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL",)}
    base.pop("SHIPYARD_VERBOSE", None)
    return subprocess.run(
        [sys.executable, "-m", "shipyard.cli", "evaluate", project.source_file, "champion"],
        capture_output=True,
        text=True,
        env={**base, "MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"], **env},
        timeout=600,
    )


def test_cli_evaluate_output_is_for_people(registered):
    """Only the summary: no TensorFlow start-up lines, no absl or MLflow warnings; with
    SHIPYARD_VERBOSE=1 the engines speak again."""
    quiet = run_evaluate(registered)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert quiet.stdout.splitlines()[0] == "champion (version 1) on test"
    assert "confusion matrix" in quiet.stdout
    assert quiet.stderr.strip() == ""

    verbose = run_evaluate(registered, SHIPYARD_VERBOSE="1")
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    assert verbose.stdout.splitlines()[0] == "champion (version 1) on test"
    assert "tensorflow" in verbose.stderr  # the check above can fail: this is what it hides


def test_cli_models_lists_every_kind(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for kind in KINDS.values():
        assert kind.name in out and kind.when[:40] in out
