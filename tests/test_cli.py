"""The front door: bad input exits 2 with one line naming the file or field, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shipyard.cli import main, split_overrides

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shipyard.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def test_split_overrides():
    rest, overrides = split_overrides(
        ["train", "p.yaml", "--training.workers", "4", "--model.kind=mlp", "--workdir", "/x"]
    )
    assert rest == ["train", "p.yaml"]
    assert overrides == [("training.workers", "4"), ("model.kind", "mlp"), ("workdir", "/x")]


@pytest.mark.parametrize(
    "doc_or_path, expected",
    [
        (None, "missing.yaml: project file not found"),
        ({"name": "t", "data": {"synthetic": {"rows": 10}}, "oops": 1}, "oops: unknown field"),
        (
            {"name": "t", "data": {"synthetic": {"rows": 10}}, "training": {"workers": -2}},
            "training.workers: must be >= 1 (got -2)",
        ),
        ({"name": "t", "data": {"source": "nowhere/x.tsv"}}, "data.source: "),
    ],
    ids=["missing-file", "unknown-key", "negative-workers", "missing-data"],
)
def test_train_bad_input_exits_2_with_one_line(tmp_path, doc_or_path, expected):
    if doc_or_path is None:
        path = tmp_path / "missing.yaml"
    else:
        path = tmp_path / "p.yaml"
        path.write_text(yaml.safe_dump(doc_or_path), encoding="utf-8")
    proc = run_cli("train", str(path))
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_bad_model_kind_exits_2_naming_the_choices(tmp_path, capsys):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "data": {"synthetic": {"rows": 10}}}))
    assert main(["train", str(path), "--model.kind", "bert"]) == 2
    err = capsys.readouterr().err
    assert "model.kind" in err and "transformer_classifier" in err and "mlp" in err


def test_unknown_command_exits_2(capsys):
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_doctor_reports_horovod_build():
    proc = run_cli("doctor", "--no-cluster")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "tensorflow_ops  True" in proc.stdout
    assert "gloo            True" in proc.stdout
    for name in ("python", "ray", "tensorflow", "horovod", "pyarrow", "mlflow"):
        assert f"  {name}" in proc.stdout


def test_doctor_sees_cluster_cpus():
    proc = run_cli("doctor")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.strip().startswith("CPU"))
    assert float(line.split()[1]) >= 1


def test_doctor_names_the_fix_for_a_horovod_without_tensorflow_ops():
    from shipyard.cluster.doctor import diagnose, problems

    report = diagnose(check_cluster=False)
    assert report.ok, report.problems  # this install is right ...
    versions = dict(report.versions)
    # ... and the two classic broken builds each get one line with the fix.
    no_ops = problems(versions, {"tensorflow_ops": False})
    no_gloo = problems(versions, {"tensorflow_ops": True, "gloo": False, "mpi": False})
    for found in (no_ops, no_gloo):
        assert len(found) == 1 and "--no-build-isolation" in found[0]
        assert "HOROVOD_WITH_GLOO=1" in found[0]
    assert "no TensorFlow ops" in no_ops[0] and "without Gloo" in no_gloo[0]
