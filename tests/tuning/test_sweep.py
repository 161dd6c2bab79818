"""Real sweeps: Ray Tune over 1-worker Horovod trials, two at once on 2 CPUs, tiny LSTMs."""

from __future__ import annotations

import csv
import io
import os

import pytest

from shipyard.training.mlflow_store import client
from shipyard.training.model_versions import get_alias
from shipyard.tuning import format_sweep, sweep

TINY = {
    "data": {"synthetic": {"rows": 1500, "seed": 3}, "vocab_size": 1000, "sequence_length": 16},
    "model": {"kind": "lstm_classifier", "embedding_dim": 8, "units": 8},
    "training": {"workers": 1, "epochs": 3, "batch_size": 32, "learning_rate": 0.005},
}


@pytest.mark.slow
def test_asha_sweep_stops_trials_ranks_tracks_and_promotes(ray_local, project_factory):
    project = project_factory(
        {
            **TINY,
            "name": "asha",
            "tuning": {
                "num_samples": 4,
                "search": "random",
                "scheduler": "asha",
                "metric": "val_accuracy",
                "mode": "max",
                "search_space": {
                    "training.learning_rate": {"loguniform": [5e-4, 5e-2]},
                    "model.units": {"choice": [4, 8, 16]},
                },
            },
        }
    )
    out = io.StringIO()
    result = sweep(project, out=out)
    summary = format_sweep(result)
    assert result.concurrency == 2  # two 1-worker trials fit on 2 CPUs
    assert len(result.trials) == 4 and result.count("failed") == 0
    # ASHA stopped at least one trial before max_t, seen in the trials' epoch counts.
    epochs = sorted(t.epochs for t in result.trials)
    assert epochs[0] < 3 and epochs[-1] == 3, epochs
    assert result.count("stopped") == sum(e < 3 for e in epochs)
    # Ranked best first by the sweep's metric.
    scores = [t.score("val_accuracy") for t in result.trials]
    assert scores == sorted(scores, reverse=True)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3 and "best val_accuracy" in lines[-1] and "0 running" in lines[-1]
    with open(result.csv, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["trial_id"] for r in rows] == [t.trial_id for t in result.trials]
    assert {"curves.png", "params.png"} <= {os.path.basename(p) for p in result.plots}
    # MLflow: one parent, a child per trial.
    mlc = client(project)
    parent = mlc.get_run(result.mlflow_parent)
    children = mlc.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{result.mlflow_parent}'"
    )
    trial_children = [r for r in children if r.data.tags.get("shipyard.trial_id")]
    assert sorted(r.data.tags["shipyard.trial_id"] for r in trial_children) == sorted(
        t.trial_id for t in result.trials
    )
    # Promotion: the best trial, registered from its checkpoint with its own config.
    best = result.best
    assert best is result.trials[0]
    challenger = get_alias(project, "challenger")
    assert challenger.version == result.published.version.version
    params = mlc.get_run(challenger.run_id).data.params
    assert params["model.units"] == str(best.values["model.units"])
    assert float(params["training.learning_rate"]) == best.values["training.learning_rate"]
    assert "challenger version 1 on test" in summary, summary


@pytest.mark.slow
def test_grid_tries_every_combination(ray_local, project_factory):
    project = project_factory(
        {
            **TINY,
            "name": "grid",
            "training": {**TINY["training"], "epochs": 1},
            "tuning": {
                "search": "grid",
                "scheduler": "fifo",
                "promote": False,
                "search_space": {
                    "model.units": {"grid": [4, 8]},
                    "training.learning_rate": {"choice": [0.01, 0.02]},
                },
            },
        }
    )
    result = sweep(project, out=io.StringIO())
    combos = sorted(
        (t.values["model.units"], t.values["training.learning_rate"]) for t in result.trials
    )
    assert combos == [(4, 0.01), (4, 0.02), (8, 0.01), (8, 0.02)]
    assert all(t.state == "done" and t.epochs == 1 for t in result.trials)
    assert result.published is None
