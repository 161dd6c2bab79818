"""The searchers and PBT on real sweeps: seeded TPE samples the configs Optuna's own TPE sampler
gives for the same space and seed (in the TPE + ASHA sweep shared with test_sweep.py); PBT
exploits a better trial's checkpoint and the exploiting trial goes on from that checkpoint's
epoch with the explored learning rate."""

from __future__ import annotations

import io
import json
import math
import os

import optuna
import pytest
from conftest import TPE_RATES, TPE_SEED, TPE_TRIALS, TPE_UNITS

from shipyard.tuning import sweep

TINY = {
    "data": {"synthetic": {"rows": 1000, "seed": 3}, "vocab_size": 800, "sequence_length": 16},
    "model": {"kind": "lstm_classifier", "embedding_dim": 8, "units": 8},
    "training": {"workers": 1, "epochs": 1, "batch_size": 32, "learning_rate": 0.005},
}


def creation_order(trials):
    """Tune names trial folders <trainable>_<trial id>_<index>_<params>_<date>."""
    return sorted(trials, key=lambda t: int(os.path.basename(t.path).split("_")[2]))


@pytest.mark.slow
def test_tpe_samples_what_a_seeded_tpe_gives_inside_the_space(tpe_asha_sweep):
    """The shared TPE + ASHA sweep (tests/tuning/conftest.py): `model.units` randint [4, 17],
    `training.learning_rate` loguniform [5e-4, 5e-2], TPE seed 7, four trials two at once."""
    result = tpe_asha_sweep.result
    assert len(result.trials) == TPE_TRIALS and result.count("failed") == 0, tpe_asha_sweep.summary
    (low_units, high_units), (low_lr, high_lr) = TPE_UNITS, TPE_RATES
    got = [
        (t.values["model.units"], t.values["training.learning_rate"])
        for t in creation_order(result.trials)
    ]
    for units, lr in got:
        assert isinstance(units, int) and low_units <= units < high_units, got
        assert low_lr <= lr <= high_lr, got
    assert len(set(got)) == TPE_TRIALS, got
    # The same space and seed, straight through Optuna: the same configs in the same order.
    study = optuna.create_study(
        directions=["maximize"], sampler=optuna.samplers.TPESampler(seed=TPE_SEED)
    )
    space = {
        "units": optuna.distributions.IntDistribution(low_units, high_units - 1),
        "lr": optuna.distributions.FloatDistribution(low_lr, high_lr, log=True),
    }
    expected = []
    for _ in range(TPE_TRIALS):
        params = study.ask(space).params
        expected.append((params["units"], params["lr"]))
    assert [u for u, _ in got] == [u for u, _ in expected], (got, expected)
    assert all(math.isclose(a, b) for (_, a), (_, b) in zip(got, expected, strict=True))


@pytest.mark.slow
def test_pbt_exploits_a_checkpoint_and_goes_on_from_its_epoch(ray_local, project_factory):
    """Two trials far apart: one rate learns, the other barely moves. Asynchronous PBT acts on
    the trial that reports, only against the others' reports so far, and clones only a trial it
    checkpointed when that one reported as the better. With two close rates the one reporting
    tends to be the one just ahead, and nothing is exploited. Here the learning trial starts
    first and an epoch takes long enough (8,000 rows) that the other reports again after it
    has been checkpointed, before its last epoch; in 0.25 s epochs it once ran three before the
    learner reported one."""
    project = project_factory(
        {
            **TINY,
            "name": "pbt",
            "data": {**TINY["data"], "synthetic": {"rows": 8000, "seed": 3}},
            "training": {**TINY["training"], "epochs": 4},
            "tuning": {
                "num_samples": 1,
                "search": "grid",
                "scheduler": "pbt",
                "seed": 2,
                "metric": "val_accuracy",
                "mode": "max",
                "perturbation_interval": 1,
                "promote": False,
                "search_space": {"training.learning_rate": {"grid": [5e-2, 1e-5]}},
            },
        }
    )
    result = sweep(project, out=io.StringIO())
    assert len(result.trials) == 2 and result.count("failed") == 0
    with open(os.path.join(result.path, "pbt_global.txt"), encoding="utf-8") as f:
        exploits = [json.loads(line) for line in f if line.strip()]
    assert exploits, "PBT logged no exploit"
    # Each exploit: [trial tag, clone tag, trial iteration, clone iteration, clone config, new].
    continued = []
    for t in result.trials:
        # A trial that exploited may keep only the rows it reported after the exploit.
        for before, row in zip([{}, *t.history], t.history, strict=False):
            start = row.get("resumed_from_epoch") or 0
            trained = row["epoch"] > start  # not a finished run restored to report again
            if trained and start and start != (before.get("resumed_from_epoch") or 0):
                continued.append((t, start, row))
    assert continued, [[r.get("resumed_from_epoch") for r in t.history] for t in result.trials]
    matched = False
    for _trial, start, row in continued:
        assert row["epoch"] == start + 1, row  # the next epoch after the checkpoint's
        for _, _, _, clone_iteration, _, new in exploits:
            lr = new["train_loop_config"]["training"]["learning_rate"]
            if clone_iteration == start and math.isclose(row["learning_rate"], lr, rel_tol=1e-6):
                matched = True  # restored the clone's epoch, trained on with the explored rate
    assert matched, (exploits, [(s, r["learning_rate"]) for _, s, r in continued])
