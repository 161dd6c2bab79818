"""The project file: every example loads, bad fields are named with the value received."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from shipyard.errors import ConfigError, UserInputError
from shipyard.project import load_project

EXAMPLES = sorted(Path(__file__).resolve().parents[1].joinpath("examples").glob("*.yaml"))


def write(tmp_path: Path, doc: dict, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


MINIMAL = {"name": "t", "data": {"synthetic": {"rows": 100}}}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_runnable_as_written(example):
    """Each example loads, names its own file, reads files that exist (on the real datasets when
    ../shared/data is here) and asks for a model kind that can read its kind of corpus."""
    from shipyard.training.models import KINDS

    project = load_project(example)
    assert project.name == example.stem
    kind = KINDS[project.model.kind]
    assert kind.corpus == project.data.kind, f"{project.model.kind} cannot read {project.data.kind}"
    files = [project.data.source] if project.data.source else []
    files += list((project.data.source_splits or {}).values())
    assert files or project.data.synthetic
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    if files and not shared.is_dir():
        pytest.skip("../shared/data is absent: the example's files are checked in CI")
    for file in files:
        assert os.path.isfile(project.path(file)), f"{example.name}: {file} does not exist"
    assert project.training.workers >= 1 and project.training.epochs >= 1


def test_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {"demo.yaml", "sms_spam.yaml"} <= names


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    doc = {**MINIMAL, "training": {"wokers": 2}}
    with pytest.raises(ConfigError) as err:
        load_project(write(tmp_path, doc))
    assert "training.wokers: unknown field (did you mean 'workers'?)" in str(err.value)


def test_bound_error_names_field_and_value(tmp_path):
    doc = {**MINIMAL, "training": {"workers": 0}}
    with pytest.raises(ConfigError) as err:
        load_project(write(tmp_path, doc))
    assert "training.workers: must be >= 1 (got 0)" in str(err.value)


def test_literal_error_lists_choices(tmp_path):
    doc = {**MINIMAL, "model": {"kind": "gpt"}}
    with pytest.raises(ConfigError) as err:
        load_project(write(tmp_path, doc))
    message = str(err.value)
    assert "model.kind" in message and "'gpt'" in message
    assert "lstm_classifier" in message and "ngram_classifier" in message


def test_overrides_are_validated_like_the_file(tmp_path):
    path = write(tmp_path, MINIMAL)
    project = load_project(path, [("training.workers", "4"), ("training.use_gpu", "true")])
    assert project.training.workers == 4 and project.training.use_gpu is True
    with pytest.raises(ConfigError, match=r"training\.epochs: must be >= 1 \(got -3\)"):
        load_project(path, [("training.epochs", "-3")])
    with pytest.raises(ConfigError, match=r"serving\.nope: unknown field"):
        load_project(path, [("serving.nope", "1")])


def test_exactly_one_source(tmp_path):
    doc = {"name": "t", "data": {"source": "x.csv", "synthetic": {"rows": 10}}}
    with pytest.raises(ConfigError, match="exactly one of source, synthetic, source_splits"):
        load_project(write(tmp_path, doc))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(UserInputError, match="project file not found"):
        load_project(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_project(bad)


def test_relative_paths_resolve_against_the_project_file(tmp_path):
    sub = tmp_path / "proj"
    sub.mkdir()
    doc = {"name": "t", "data": {"source": "../data/x.csv"}}
    project = load_project(write(sub, doc))
    assert project.path(project.data.source) == str(tmp_path / "data" / "x.csv")
    assert project.path("s3://bucket/x") == "s3://bucket/x"
    assert project.workdir_path == sub / ".shipyard" / "t"


def test_with_overrides_returns_a_new_validated_project(tmp_path):
    sub = tmp_path / "proj"
    sub.mkdir()
    doc = {"name": "t", "data": {"source": "../data/x.csv"}, "training": {"epochs": 5}}
    project = load_project(write(sub, doc))
    changed = project.with_overrides({"training.learning_rate": 0.01, "model.units": 8})
    assert changed.training.learning_rate == 0.01 and changed.model.units == 8
    assert changed.training.epochs == 5  # untouched fields are kept
    assert project.training.learning_rate == 1e-3  # the original is not changed
    # Paths still resolve against the original file's folder.
    assert changed.path(changed.data.source) == str(tmp_path / "data" / "x.csv")
    with pytest.raises(ConfigError, match=r"training\.workers: must be >= 1 \(got 0\)"):
        project.with_overrides({"training.workers": 0})
    with pytest.raises(ConfigError, match=r"model\.kind: must be one of .*\(got 'bogus'\)"):
        project.with_overrides({"model.kind": "bogus"})
