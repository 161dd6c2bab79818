"""Real sweeps: Ray Tune over 1-worker Horovod trials, two at once on 2 CPUs, tiny LSTMs (the
sweeps themselves are shared with other tests: tests/tuning/conftest.py)."""

from __future__ import annotations

import csv
import os
import re

import pytest
from conftest import (
    ASHA_EPOCHS,
    DIVERGING_RATE,
    GRID_EPOCHS,
    GRID_RATES,
    GRID_UNITS,
    TPE_TRIALS,
)

from shipyard.training.mlflow_store import client
from shipyard.training.model_versions import get_alias


@pytest.mark.slow
def test_asha_sweep_stops_trials_ranks_tracks_and_promotes(tpe_asha_sweep):
    """The shared TPE + ASHA sweep (tests/tuning/conftest.py): four trials of up to 3 epochs."""
    project, result, summary = tpe_asha_sweep.project, tpe_asha_sweep.result, tpe_asha_sweep.summary
    assert result.concurrency == 2  # two 1-worker trials fit on 2 CPUs
    assert len(result.trials) == TPE_TRIALS and result.count("failed") == 0, summary
    # ASHA stopped at least one trial before max_t, seen in the trials' epoch counts.
    epochs = sorted(t.epochs for t in result.trials)
    assert epochs[0] < ASHA_EPOCHS and epochs[-1] == ASHA_EPOCHS, epochs
    assert result.count("stopped") == sum(e < ASHA_EPOCHS for e in epochs)
    # Ranked best first by the sweep's metric.
    scores = [t.score("val_accuracy") for t in result.trials]
    assert scores == sorted(scores, reverse=True)
    lines = tpe_asha_sweep.progress.splitlines()
    assert len(lines) >= 3 and "best val_accuracy" in lines[-1] and "0 running" in lines[-1]
    # The best so far is each trial's best epoch, as the table ranks them: it never gets worse.
    shown = [float(m) for m in re.findall(r"best val_accuracy (\d\.\d+)", "\n".join(lines))]
    assert shown == sorted(shown) and shown[-1] == round(scores[0], 4), lines
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
def test_grid_tries_every_combination(grid_sweep):
    """The shared grid (tests/tuning/conftest.py): a `grid` and a `choice` dimension, 2 values
    each, so the four trials prove both are enumerated and crossed."""
    result = grid_sweep.result
    combos = sorted(
        (t.values["model.units"], t.values["training.learning_rate"]) for t in result.trials
    )
    assert combos == [(u, r) for u in GRID_UNITS for r in sorted(GRID_RATES)], grid_sweep.summary
    # Every combination ran to its end: the sensible rate for all its epochs, the diverging one
    # failed (test_failures.py checks how).
    for t in result.trials:
        diverging = t.values["training.learning_rate"] == DIVERGING_RATE
        expected = ("failed", 0) if diverging else ("done", GRID_EPOCHS)
        assert (t.state, t.epochs) == expected, grid_sweep.summary
    assert result.published is None
