"""`shipyard demo`: what can fail without running it. The demo itself (minutes of Ray, Horovod,
Tune and Serve) is run by `make demo`, not here; these check its settings, its refusals, its
timing table, and that a failing or interrupted step still stops what it started."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shipyard import demo
from shipyard.cli import main
from shipyard.errors import ShipyardError, UserInputError
from shipyard.project import load_project

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo.yaml"


def test_the_default_project_is_the_repositorys_demo():
    assert demo.DEFAULT_PROJECT == DEMO and DEMO.is_file()


def test_seconds_read_as_a_person_would_say_them():
    assert demo.format_seconds(4.24) == "4.2 s"
    assert demo.format_seconds(58.4) == "58 s"
    assert demo.format_seconds(187) == "3m 07s"


def test_timing_table_aligns_steps_states_and_the_total():
    steps = [
        demo.StepTiming(1, "start Ray", 5.3),
        demo.StepTiming(2, "retrain", 0.01, "skipped", "not available yet"),
        demo.StepTiming(10, "predict, explain, feedback", 75.0, "failed"),
    ]
    assert demo.format_timings(steps).splitlines() == [
        "   #  step                            time",
        "   1  start Ray                      5.3 s",
        "   2  retrain                        0.0 s  skipped  (not available yet)",
        "  10  predict, explain, feedback    1m 15s  failed",
        "      total                         1m 20s",
    ]
    result = demo.DemoResult("p.yaml", Path("/w"), steps)
    assert not result.ok and result.total_seconds == pytest.approx(80.31)
    assert demo.DemoResult("p.yaml", Path("/w"), steps[:2]).ok  # skipped is not a failure


def test_settings_on_two_cores_let_training_run_beside_two_replicas(tmp_path):
    project = load_project(DEMO)
    o = demo.demo_overrides(project, workdir=tmp_path, port=4321, cores=2)
    # 2 workers x 1 CPU + 2 replicas x 0.5 CPU + 1 CPU for a Ray Data read task.
    assert o["cluster.num_cpus"] == 4
    assert o["serving.replica_cpus"] == 0.5
    assert (o["serving.min_replicas"], o["serving.max_replicas"]) == (1, 2)
    assert o["serving.port"] == 4321 and o["workdir"] == str(tmp_path)
    big = demo.demo_overrides(project, workdir=tmp_path, port=1, cores=16)
    assert big["cluster.num_cpus"] == 16
    own = project.with_overrides({"cluster.num_cpus": 6})
    assert demo.demo_overrides(own, workdir=tmp_path, port=1, cores=2)["cluster.num_cpus"] == 6


def test_the_project_is_isolated_and_the_users_overrides_win(tmp_path):
    p = demo.demo_project(
        DEMO,
        [("serving.max_replicas", "1"), ("serving.min_replicas", "1")],
        workdir=tmp_path / "w",
        port=4321,
        cores=2,
    )
    assert p.workdir_path == tmp_path / "w"
    assert p.corpus_dir.startswith(str(tmp_path / "w"))
    assert p.runs_dir.startswith(str(tmp_path / "w"))
    assert p.serving.max_replicas == 1 and p.serving.port == 4321
    assert p.serving.feedback_path is None  # the default: <workdir>/feedback


def test_a_workdir_that_is_not_empty_is_refused(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "mlflow.db").write_text("")
    with pytest.raises(UserInputError, match="not empty"):
        demo.demo_project(DEMO, [("workdir", str(tmp_path / "old"))], workdir=tmp_path, port=1)
    p = demo.demo_project(DEMO, [("workdir", str(tmp_path / "new"))], workdir=tmp_path, port=1)
    assert p.workdir_path == tmp_path / "new"


def test_projects_the_demo_cannot_run_are_refused_naming_why(tmp_path):
    with pytest.raises(UserInputError, match="synthetic text corpus"):
        demo.demo_project(REPO / "examples" / "sms_spam.yaml", (), workdir=tmp_path, port=1)
    with pytest.raises(UserInputError, match="embedded Ray"):
        demo.demo_project(DEMO, [("cluster.address", "127.0.0.1:6379")], workdir=tmp_path, port=1)


def test_held_out_texts_are_new_rows_of_the_same_generator():
    from shipyard.corpus.synth import SynthSpec, iter_text_batches

    project = load_project(DEMO)
    texts, labels = demo.held_out_texts(project, 132)
    assert len(texts) == len(set(texts)) == 132
    assert set(labels) == {"ham", "spam"}
    assert demo.held_out_texts(project, 132) == (texts, labels)  # seeded
    spec = SynthSpec(**project.data.synthetic.model_dump())
    corpus = {t for b in iter_text_batches(spec) for t in b.column("text").to_pylist()}
    assert not corpus & set(texts)


def test_the_cli_exits_2_naming_a_missing_project(capsys):
    assert main(["demo", "no/such/project.yaml"]) == 2
    assert "project file not found" in capsys.readouterr().err


def test_a_failing_step_still_stops_what_the_demo_started(tmp_path, monkeypatch):
    lines: list[str] = []
    project = demo.demo_project(DEMO, (), workdir=tmp_path / "w", port=1, cores=2)
    run = demo._Demo(project, "demo.yaml", 2, lines.append)
    stopped = []
    monkeypatch.setattr(run, "stop", lambda: stopped.append(True))

    def broken():
        raise ShipyardError("training run demo-1 failed: boom")

    run.steps = [("one", "here", lambda: None), ("two", "there", broken), ("three", "x", None)]
    with pytest.raises(ShipyardError, match="boom"):
        run.run()
    assert stopped == [True]
    states = [(s.name, s.state) for s in run.result.steps]
    assert states == [("one", "ok"), ("two", "failed"), ("stop", "ok")]
    text = "\n".join(lines)
    assert "[2/4] two · there" in text and "failed: training run demo-1 failed: boom" in text
    assert "timings (stopped: training run demo-1 failed: boom)" in text
    assert "mlflow ui --backend-store-uri sqlite:///" in text


def test_an_interrupted_step_is_marked_and_still_stops(tmp_path, monkeypatch):
    lines: list[str] = []
    project = demo.demo_project(DEMO, (), workdir=tmp_path / "w", port=1, cores=2)
    run = demo._Demo(project, "demo.yaml", 2, lines.append)
    stopped = []
    monkeypatch.setattr(run, "stop", lambda: stopped.append(True))

    def interrupted():
        raise KeyboardInterrupt

    run.steps = [("one", "here", interrupted)]
    with pytest.raises(KeyboardInterrupt):
        run.run()
    assert stopped == [True]
    assert [s.state for s in run.result.steps] == ["interrupted", "ok"]
    assert "timings (stopped: interrupted)" in "\n".join(lines)


def test_the_demo_sets_aside_what_would_send_its_work_elsewhere(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with demo._isolated_env(demo.ISOLATED_ENV) as saved:
        assert "MLFLOW_TRACKING_URI" not in os.environ
        assert saved == {"MLFLOW_TRACKING_URI": "http://tracking.example:5000"}
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://tracking.example:5000"
    assert "RAY_ADDRESS" not in os.environ


def test_ctrl_c_stays_the_demos_while_tune_runs(monkeypatch):
    """Ray Tune (under every Ray Train V1 fit) installs its own SIGINT handler, which ends the run
    as if it had finished and stays installed after it; the demo's environment turns it off."""
    import signal

    from ray.tune import tune

    monkeypatch.delenv("TUNE_DISABLE_SIGINT_HANDLER", raising=False)
    before = signal.getsignal(signal.SIGINT)
    try:
        with demo._env(demo.DEMO_ENV):
            tune._setup_signal_catching()
            assert signal.getsignal(signal.SIGINT) is before
        tune._setup_signal_catching()  # without it: Tune's handler replaces the default
        assert signal.getsignal(signal.SIGINT) is not before
    finally:
        signal.signal(signal.SIGINT, before)
