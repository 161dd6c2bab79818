"""Real sweeps shared by the tuning tests that only read their results.

Every trial costs a Tune trial start, a Horovod rendezvous and a TensorFlow import in its worker,
so two sweeps each serve two tests:
- `grid_sweep`: the grid that `test_sweep.py` checks for exhaustiveness is also the sweep in which
  `test_failures.py` checks that a diverging trial fails and the others go on;
- `tpe_asha_sweep`: seeded Optuna TPE under ASHA, in which `test_searchers.py` checks the sampled
  configs and `test_sweep.py` checks ASHA's stopping, the ranking, tracking and promotion.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pytest

from shipyard.project import Project
from shipyard.tuning import SweepResult, format_sweep, sweep

DIVERGING_RATE = 3e38  # near float32's largest: the LSTM's weights overflow in the first epoch
GRID_UNITS = [4, 8]
GRID_RATES = [0.01, DIVERGING_RATE]
GRID_EPOCHS = 2


@dataclass
class SharedSweep:
    project: Project
    result: SweepResult
    summary: str  # format_sweep(result)
    progress: str = ""  # the live progress lines the sweep printed


@pytest.fixture(scope="session")
def grid_sweep(ray_local, session_project_factory) -> SharedSweep:
    """`model.units` grid [4, 8] x `training.learning_rate` choice [0.01, 3e38] (a grid search
    tries every listed value of a choice too): four trials, two at once; the two at 3e38 diverge
    in their first epoch, the two at 0.01 run their 2 epochs."""
    project = session_project_factory(
        {
            "name": "grid",
            "data": {
                "synthetic": {"rows": 800, "seed": 3},
                "vocab_size": 600,
                "sequence_length": 16,
            },
            "model": {"kind": "lstm_classifier", "embedding_dim": 8, "units": 8},
            "training": {"workers": 1, "epochs": GRID_EPOCHS, "batch_size": 32},
            "tuning": {
                "search": "grid",
                "scheduler": "fifo",
                "promote": False,
                "search_space": {
                    "model.units": {"grid": GRID_UNITS},
                    "training.learning_rate": {"choice": GRID_RATES},
                },
            },
        }
    )
    out = io.StringIO()
    result = sweep(project, out=out)
    return SharedSweep(project, result, format_sweep(result), out.getvalue())


TPE_SEED = 7
TPE_TRIALS = 4
ASHA_EPOCHS = 3  # ASHA's max_t (grace period 1, reduction factor 2: rungs at epochs 1 and 2)
TPE_UNITS = [4, 17]  # randint: 4..16
TPE_RATES = [5e-4, 5e-2]  # loguniform


@pytest.fixture(scope="session")
def tpe_asha_sweep(ray_local, session_project_factory) -> SharedSweep:
    """Four trials, two at once, of `model.units` x `training.learning_rate` sampled by TPE (seed
    7), stopped early by ASHA, the best promoted."""
    project = session_project_factory(
        {
            "name": "asha",
            "data": {
                "synthetic": {"rows": 1500, "seed": 3},
                "vocab_size": 1000,
                "sequence_length": 16,
            },
            "model": {"kind": "lstm_classifier", "embedding_dim": 8, "units": 8},
            "training": {
                "workers": 1,
                "epochs": ASHA_EPOCHS,
                "batch_size": 32,
                "learning_rate": 0.005,
            },
            "tuning": {
                "num_samples": TPE_TRIALS,
                "search": "optuna",
                "scheduler": "asha",
                "seed": TPE_SEED,
                "metric": "val_accuracy",
                "mode": "max",
                "search_space": {
                    "model.units": {"randint": TPE_UNITS},
                    "training.learning_rate": {"loguniform": TPE_RATES},
                },
            },
        }
    )
    out = io.StringIO()
    result = sweep(project, out=out)
    return SharedSweep(project, result, format_sweep(result), out.getvalue())
