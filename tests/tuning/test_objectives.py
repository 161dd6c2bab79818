"""A two-objective sweep (NSGA-II): the Pareto front is printed and the promoted trial is the best
primary objective among the trials that meet `tuning.constraints`, judged from the values the
trials themselves reported (the loop's final report carries `model_bytes` and `latency_ms`)."""

from __future__ import annotations

import io
import os

import pytest

from shipyard.training.model_versions import get_alias
from shipyard.tuning import format_sweep, sweep

# model_bytes: the embedding alone is vocab x dim x 4 bytes (dim 4: ~16 kB, dim 32: ~128 kB)
BOUND = 60_000


def dominates(a: list[float], b: list[float]) -> bool:
    return all(x >= y for x, y in zip(a, b, strict=True)) and a != b


@pytest.mark.slow
def test_two_objectives_print_a_front_and_promote_within_the_constraint(ray_local, project_factory):
    project = project_factory(
        {
            "name": "pareto",
            "data": {
                "synthetic": {"rows": 1200, "seed": 3},
                "vocab_size": 1000,
                "sequence_length": 16,
            },
            "model": {"kind": "lstm_classifier", "embedding_dim": 8, "units": 8},
            "training": {"workers": 1, "epochs": 2, "batch_size": 32, "learning_rate": 0.01},
            "tuning": {
                "num_samples": 4,
                "search": "optuna",
                "scheduler": "fifo",
                "seed": 5,  # NSGA-II samples all four (embedding_dim, units) pairs
                "objectives": [{"val_accuracy": "max"}, {"model_bytes": "min"}],
                "constraints": {"model_bytes": f"<= {BOUND}"},
                "search_space": {
                    "model.embedding_dim": {"choice": [4, 32]},
                    "model.units": {"choice": [4, 16]},
                },
            },
        }
    )
    result = sweep(project, out=io.StringIO())
    summary = format_sweep(result)
    assert len(result.trials) == 4 and result.count("failed") == 0, summary

    # Every trial reported its serving cost itself, in its last report.
    reported = {}
    for t in result.trials:
        last = t.result.metrics
        assert last["model_bytes"] > 0 and last["latency_ms"] > 0, last
        assert t.score("model_bytes") == last["model_bytes"]
        best_val = max(r["val_accuracy"] for r in t.history if "val_accuracy" in r)
        reported[t.trial_id] = (best_val, last["model_bytes"], t.values["model.embedding_dim"])
    # A bigger embedding is a bigger model (the figure is the weights' real size).
    small = [b for _, b, dim in reported.values() if dim == 4]
    large = [b for _, b, dim in reported.values() if dim == 32]
    assert small and large, f"the seeded search sampled one embedding size only: {reported}"
    assert max(small) <= BOUND < min(large), reported

    # The Pareto front, recomputed from the reported values, is the one printed.
    oriented = {tid: [v, -b] for tid, (v, b, _) in reported.items()}
    front = sorted(
        tid
        for tid, mine in oriented.items()
        if not any(dominates(other, mine) for o, other in oriented.items() if o != tid)
    )
    assert sorted(t.trial_id for t in result.trials if t.pareto) == front
    front_line = next(line for line in summary.splitlines() if line.startswith("Pareto front"))
    assert sorted(front_line.split(": ", 1)[1].split(", ")) == front, summary
    assert "pareto.png" in {os.path.basename(p) for p in result.plots}

    # Promoted: the best val_accuracy among the trials within the bound.
    within = {tid: v for tid, (v, b, _) in reported.items() if b <= BOUND}
    assert len(within) >= 2, f"the seeded search left nothing to choose from: {reported}"
    assert result.best.trial_id in within, (reported, summary)
    assert result.best.score("val_accuracy") == max(within.values()), (reported, summary)
    assert result.best.meets_constraints
    assert all(not t.meets_constraints for t in result.trials if t.trial_id not in within)
    challenger = get_alias(project, "challenger")
    assert challenger.version == result.published.version.version
    assert f"best: {result.best.trial_id} val_accuracy" in summary
