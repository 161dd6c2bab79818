"""The front door: bad input exits 2 with one line naming the file or field, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shipyard.cli import build_parser, main, split_overrides, split_verbose
from shipyard.commands.jobs import script_arguments
from shipyard.verbosity import VERBOSE_ENV, is_verbose

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


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    """No recorded cluster, no address, verbosity as the test leaves it undone afterwards."""
    monkeypatch.setenv("SHIPYARD_STATE_DIR", str(tmp_path / "state"))
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", VERBOSE_ENV):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return tmp_path / "state"


def test_double_dash_ends_shipyards_own_options():
    argv = ["submit", "--script", "t.py", "--", "--data.dir", "/x", "--workdir=/w", "--verbose"]
    argv, verbose = split_verbose(argv)
    assert not verbose  # after `--`, even --verbose is the script's
    rest, overrides = split_overrides(argv)
    assert overrides == []
    args = build_parser().parse_args(rest)
    assert args.script == "t.py"
    assert script_arguments(args) == ["--data.dir", "/x", "--workdir=/w", "--verbose"]
    # Before `--` the same words are shipyard's.
    rest, overrides = split_overrides(["train", "p.yaml", "--data.dir", "/x", "--", "--a.b", "1"])
    assert overrides == [("data.dir", "/x")] and rest == ["train", "p.yaml", "--", "--a.b", "1"]


@pytest.mark.parametrize(
    "argv, command",
    [
        (["cluster", "up", "--nodes", "2", "--training.workers", "3"], "cluster up"),
        (["jobs", "list", "--data.dir=/x"], "jobs list"),
        (["doctor", "--no-cluster", "--workdir", "/tmp/w"], "doctor"),
        (["submit", "--script", "t.py", "--training.workers", "3"], "submit"),
        (["cluster", "status", "--model.kind", "mlp", "--data.seed", "1"], "cluster status"),
    ],
)
def test_commands_without_a_project_refuse_overrides(state_dir, capsys, argv, command):
    assert main(argv) == 2
    err = capsys.readouterr().err
    overrides = [
        a.split("=")[0] for a in argv if a.startswith("--") and ("." in a or "workdir" in a)
    ]
    assert err.startswith(f"shipyard: error: {command}: {', '.join(overrides)}: "), err
    assert "project file" in err
    assert not state_dir.exists()  # refused before anything ran: no cluster was started


def test_submit_offers_only_actions_that_exist(tmp_path, state_dir, capsys):
    project = tmp_path / "p.yaml"
    project.write_text(yaml.safe_dump({"name": "t", "data": {"synthetic": {"rows": 10}}}))
    assert main(["submit", str(project), "deploy"]) == 2
    assert (
        "action: must be one of train, sweep, prepare, serve (got 'deploy')"
        in capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        main(["submit", "--help"])
    assert "train, sweep, prepare or serve" in capsys.readouterr().out
    # Every action the job can run is a command of this CLI.
    from shipyard.cli import build_parser
    from shipyard.cluster.jobs import ACTIONS

    commands = build_parser()._subparsers._group_actions[0].choices
    assert all(words[0] in commands for words in ACTIONS.values())


def test_verbose_anywhere_before_double_dash_is_exported(state_dir, capsys):
    assert not is_verbose()
    assert main(["cluster", "down", "--verbose"]) == 0
    assert "nothing to stop" in capsys.readouterr().out
    assert os.environ[VERBOSE_ENV] == "1" and is_verbose()  # child processes inherit it


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
    assert "tensorflow/core" not in proc.stderr, proc.stderr  # TF's C++ notices: --verbose only
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
