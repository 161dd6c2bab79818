"""Ranking, the Pareto front, constraints and divergence on hand-made trials (no Ray)."""

from __future__ import annotations

import math

from shipyard.tuning.progress import DivergedStopper
from shipyard.tuning.results import TrialSummary, best_trial, diverged, judge

GOALS = [("val_accuracy", "max"), ("latency_ms", "min")]


def trial(tid: str, acc: float, ms: float, state: str = "done") -> TrialSummary:
    return TrialSummary(tid, {}, state, 3, 1.0, {"val_accuracy": acc, "latency_ms": ms})


def test_front_and_constrained_promotion():
    trials = [
        trial("fast", 0.80, 1.0),
        trial("best", 0.95, 9.0),
        trial("mid", 0.90, 4.0),
        trial("worse", 0.85, 5.0),  # beaten by mid on both
        trial("broken", 0.99, 0.5, state="failed"),
    ]
    ranked = judge(trials, GOALS, [("latency_ms", "<=", 5.0)])
    assert [t.trial_id for t in ranked] == ["best", "mid", "worse", "fast", "broken"]
    assert {t.trial_id for t in ranked if t.pareto} == {"fast", "best", "mid"}
    assert best_trial(ranked, GOALS[0], constrained=True).trial_id == "mid"
    assert best_trial(ranked, GOALS[0], constrained=False).trial_id == "best"
    none_fit = judge([trial("a", 0.9, 9.0)], GOALS, [("latency_ms", "<", 1.0)])
    assert best_trial(none_fit, GOALS[0], constrained=True) is None


def test_a_nan_loss_is_divergence_but_a_report_without_training_is_not():
    assert diverged({"epoch": 2, "resumed_from_epoch": 0, "train_loss": math.nan}) == (
        "training diverged: train_loss is nan at epoch 2"
    )
    assert diverged({"epoch": 1, "train_loss": math.inf})
    assert diverged({"epoch": 3, "resumed_from_epoch": 0, "train_loss": 0.4}) is None
    # PBT restored a finished run only to report again: no step ran, so no loss.
    assert diverged({"epoch": 4, "resumed_from_epoch": 4, "train_loss": math.nan}) is None
    stop = DivergedStopper()
    assert stop("t", {"epoch": 1, "train_loss": math.nan}) and not stop.stop_all()
    assert not stop("t", {"epoch": 1, "train_loss": 0.7})
