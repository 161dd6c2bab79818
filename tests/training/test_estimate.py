"""`shipyard estimate`: one real 2-worker profile predicts a real run; the cost model's shape.

One profile serves every test here (each Horovod fit costs ~20 s, most of it start-up): it is
requested for 8 workers, which this 2-CPU cluster can never hold, so it is flagged, profiled on
the 2 that fit and extrapolated; its scaling row for 2 workers is the prediction for the real
2-worker run the fixture then times.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from dataclasses import dataclass

import pytest

from shipyard.cli import main
from shipyard.project import Project
from shipyard.training.estimate import (
    Estimate,
    ring_factor,
    sweep_prediction,
    sweep_trial_epochs,
)

TINY = {
    "name": "tiny_estimate",
    "data": {"synthetic": {"rows": 1500, "seed": 4}, "vocab_size": 1500, "sequence_length": 16},
    "model": {"kind": "lstm_classifier", "embedding_dim": 16, "units": 16},
    "training": {"workers": 2, "epochs": 2, "batch_size": 32, "learning_rate": 0.005},
    "tuning": {
        "num_samples": 8,
        "search": "random",
        "scheduler": "asha",
        "search_space": {"training.learning_rate": {"loguniform": [0.001, 0.01]}},
    },
}


@dataclass
class Profiled:
    project: Project
    estimate: Estimate
    measured_seconds: float  # train(project, publish=False), timed right after the estimate
    messages: list[str]


class _Collect(logging.Handler):
    def __init__(self, into: list[str]):
        super().__init__(logging.INFO)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


@pytest.fixture(scope="module")
def profiled(ray_local, session_project_factory) -> Profiled:
    from shipyard.training import train
    from shipyard.training.estimate import estimate

    project = session_project_factory(TINY)  # its corpus is not prepared yet
    messages: list[str] = []
    logger = logging.getLogger("shipyard.training.estimate")
    handler, level = _Collect(messages), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        result = estimate(project, workers=8, steps=20, publish=False, price_per_hour=0.5)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    started = time.perf_counter()
    train(project, publish=False)
    return Profiled(project, result, time.perf_counter() - started, messages)


def _row(estimate: Estimate, workers: int):
    return next(r for r in estimate.scaling if r.workers == workers)


@pytest.mark.slow
def test_the_prediction_for_a_short_real_run_is_within_30_percent(profiled):
    est = profiled.estimate
    predicted = _row(est, 2).train_seconds
    # The row is exactly the run's predicted parts (driver, start-up, steps, epoch ends, final
    # evaluation, teardown) for 2 workers and the project's epochs.
    assert predicted == pytest.approx(sum(est.profile.train_parts(2, est.epochs).values()))
    error = abs(predicted - profiled.measured_seconds) / profiled.measured_seconds
    report = "\n".join(
        [*est.describe(), f"2 workers: predicted {predicted:.1f} s, measured"
         f" {profiled.measured_seconds:.1f} s ({error:.0%} off)"]
    )  # fmt: skip
    print(report)  # shown with -rP: the closing note quotes it
    assert error <= 0.30, report


@pytest.mark.slow
def test_the_scaling_table_follows_the_ring_allreduce_model(profiled):
    p = profiled.estimate.profile
    assert p.workers == 2 and p.gradient_bytes == 4 * p.trainable_parameters > 0
    assert p.bandwidth is not None and p.bandwidth > 0  # measured between the 2 ranks
    rows = profiled.estimate.scaling
    assert [r.workers for r in rows] == [1, 2, 4, 8, 16]
    one = _row(profiled.estimate, 1)
    assert one.allreduce_seconds == 0.0 and one.step_seconds == p.compute_seconds
    # The profiled row reproduces the measured step: compute + modelled allreduce at 2 workers.
    assert _row(profiled.estimate, 2).step_seconds == pytest.approx(p.step_seconds)
    per_byte = p.gradient_bytes / p.bandwidth
    for r in rows:
        assert r.step_seconds == pytest.approx(p.compute_seconds + r.allreduce_seconds)
        assert r.steps_per_epoch == math.ceil((p.train_rows // r.workers) / p.batch_size)
        latency = p.latency_seconds * (r.workers - 1) / (p.workers - 1)
        # Beyond the latency, the allreduce is 2(N-1)/N x bytes / bandwidth.
        expected = latency + ring_factor(r.workers) * per_byte if r.workers > 1 else 0.0
        assert r.allreduce_seconds == pytest.approx(expected)
    assert all(a.allreduce_seconds < b.allreduce_seconds for a, b in itertools.pairwise(rows))
    assert ring_factor(2) == 1.0 and ring_factor(16) == pytest.approx(1.875)


@pytest.mark.slow
def test_a_request_that_can_never_be_scheduled_is_flagged_and_still_estimated(profiled):
    est = profiled.estimate
    assert est.workers == 8 and est.schedulable_workers == 2 and est.profile.workers == 2
    assert est.flags[0].startswith("can never be scheduled on this cluster: 8 workers x 1 CPU")
    assert any("profiled on 2 workers (the most that fit)" in f for f in est.flags)
    assert est.train.workers == 8 and est.train.parts == est.profile.train_parts(8, 2)
    assert est.train.wall_seconds > 0 and est.train.cost == pytest.approx(
        est.train.worker_hours * 0.5
    )
    assert not _row(est, 8).schedulable and _row(est, 2).schedulable
    text = "\n".join(est.describe())
    assert "FLAG         can never be scheduled on this cluster" in text
    assert "training on 8 workers" in text and "scaling" in text
    json.dumps(est.to_dict())  # --json prints it
    # The corpus was not prepared: the estimate prepared it first and said so.
    assert "corpus not prepared: preparing it first" in profiled.messages
    assert est.prepare_seconds is not None and est.prepare_seconds > 0


@pytest.mark.slow
def test_asha_spends_fewer_trial_epochs_than_fifo_for_the_same_sweep(profiled):
    project, p = profiled.project, profiled.estimate.profile
    four = project.with_overrides({"training.epochs": 4})
    asha = sweep_prediction(four, p, None)
    fifo = sweep_prediction(four.with_overrides({"tuning.scheduler": "fifo"}), p, None)
    assert fifo.total_trial_epochs == 8 * 4
    # Rungs at 1 and 2 epochs (grace 1, rf 2): 4 trials stop at 1, 2 at 2, 2 run all 4.
    assert sorted(asha.trial_epochs) == [1, 1, 1, 1, 2, 2, 4, 4]
    assert asha.total_trial_epochs < fifo.total_trial_epochs
    assert asha.wall_seconds < fifo.wall_seconds and asha.worker_hours < fifo.worker_hours
    assert asha.concurrency == fifo.concurrency == 1  # one 2-worker trial fits 2 CPUs
    # Every trial pays its own start-up; a trial stopped early skips the final evaluation.
    assert min(asha.trial_seconds) > p.startup_seconds
    pbt = four.tuning.model_copy(update={"scheduler": "pbt"})
    assert sweep_trial_epochs(pbt, 4, 8) == [4] * 8


def test_asha_trial_epochs_follow_its_rungs():
    from shipyard.project import TuningConfig

    def asha(**fields) -> TuningConfig:
        return TuningConfig(scheduler="asha", **fields)

    # rf 3, max_t 9: rungs 1 and 3; a third past the first, a ninth (at least one) past the next.
    assert sweep_trial_epochs(asha(reduction_factor=3), 9, 9) == [1] * 6 + [3] * 2 + [9]
    assert sweep_trial_epochs(asha(grace_period=5), 3, 4) == [3] * 4  # no rung before the end
    assert sweep_trial_epochs(asha(max_t=2), 4, 2) == [1, 2]  # max_t ends trials early
    assert sweep_trial_epochs(asha(), 1, 3) == [1, 1, 1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--workers", "0"], "--workers: must be >= 1 (got 0)"),
        (["--workers", "two"], "--workers: must be an integer (got 'two')"),
        (["--gpus-per-worker", "-1"], "--gpus-per-worker: must be >= 0 (got -1)"),
        (["--price-per-hour", "nan"], "--price-per-hour: must be >= 0 (got nan)"),
        (["--steps", "2"], "--steps: must be >= 5 (got 2)"),
    ],
)
def test_bad_option_values_exit_2_naming_the_option(argv, message, capsys):
    assert main(["estimate", "project.yaml", *argv]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"shipyard: error: {message}"
