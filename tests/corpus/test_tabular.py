"""German credit (tabular): space-separated, no header, numeric vs categorical columns detected,
statistics and category vocabularies learned from the training split only."""

from __future__ import annotations

import numpy as np
import pytest
from corpus_helpers import read_split

from shipyard.corpus.prepare import prepare
from shipyard.project import load_project

pytestmark = pytest.mark.usefixtures("ray_local")
REPO = __import__("pathlib").Path(__file__).resolve().parents[2]
# german.doc: attributes 2, 5, 8, 11, 13, 16, 18 are numerical (1-based), the rest categorical.
NUMERIC = ["f1", "f4", "f7", "f10", "f12", "f15", "f17"]


@pytest.fixture(scope="module")
def credit(shared_data, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("credit")
    project = load_project(REPO / "examples" / "german_credit.yaml", [("workdir", str(workdir))])
    return project, prepare(project)


def test_rows_labels_and_stratified_splits(credit):
    _, result = credit
    manifest = result.manifest
    assert manifest["kind"] == "tabular"
    assert manifest["counts"]["read"] == 1_000 and manifest["counts"]["kept"] == 1_000
    assert manifest["labels"] == ["1", "2"]  # label_map {"1": 0, "2": 1}: good, bad
    assert manifest["splits"]["train"]["labels"] == {"1": 560, "2": 240}
    assert manifest["splits"]["test"]["labels"] == {"1": 70, "2": 30}


def test_numeric_and_categorical_columns_are_detected(credit):
    _, result = credit
    features = result.manifest["features"]
    assert list(features["numeric"]) == NUMERIC
    categorical = features["categorical"]
    assert len(categorical) == 13
    assert sorted(categorical["f0"]) == ["A11", "A12", "A13", "A14"]  # checking account status
    schema = result.manifest["schema"]
    assert schema["f4"] == "float32" and schema["f0"] == "string" and schema["label"] == "int32"


def test_statistics_come_from_train_only(credit, shared_data):
    _, result = credit
    features = result.manifest["features"]
    train = read_split(result.corpus, "train")
    everything = np.loadtxt(
        shared_data / "german_credit_statlog" / "german.data", dtype=str, delimiter=" "
    )
    differs = 0
    for name in NUMERIC:
        values = np.asarray(train[name], dtype=np.float64)
        assert features["numeric"][name]["mean"] == pytest.approx(values.mean(), rel=1e-6)
        assert features["numeric"][name]["std"] == pytest.approx(values.std(), rel=1e-6)
        all_rows = everything[:, int(name[1:])].astype(np.float64)
        differs += abs(all_rows.mean() - values.mean()) > 1e-9
    assert differs >= 5  # the full-data means are not what was recorded
    for name, vocabulary in features["categorical"].items():
        assert set(vocabulary) == set(train[name].to_pylist())
        counts = [train[name].to_pylist().count(v) for v in vocabulary]
        assert counts == sorted(counts, reverse=True)  # most frequent first
