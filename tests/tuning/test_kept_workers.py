"""A reused trial actor hands its Horovod workers to the next trial
(`shipyard.training.kept_workers`): fewer worker processes than trials, and nothing of the last
trial carries over into the next one's training."""

from __future__ import annotations

import io

import pytest

from shipyard.tuning import sweep


def _train_worker_ids() -> set[str]:
    """Every Ray Train worker actor this cluster has started (alive or not). Ray's state API
    needs the dashboard, which the tests' Ray runs without; the GCS's own table does not."""
    from ray._private import state

    return {
        actor_id
        for actor_id, actor in state.actors().items()
        if actor["ActorClassName"] == "RayTrainWorker"
    }


@pytest.mark.slow
def test_next_trials_take_over_the_workers_and_train_as_on_new_ones(ray_local, project_factory):
    """Three 2-worker trials one after another (2 CPUs hold one): `model.units` 8, then 4, then
    8 again. The third trial runs on processes that trained two models before it, and its
    epochs' losses are those of the first trial, which ran on new ones."""
    project = project_factory(
        {
            "name": "kept",
            "data": {
                "synthetic": {"rows": 800, "seed": 3},
                "vocab_size": 600,
                "sequence_length": 16,
            },
            "model": {"kind": "lstm_classifier", "embedding_dim": 8, "units": 8},
            "training": {"workers": 2, "epochs": 2, "batch_size": 32},
            "tuning": {
                "search": "grid",
                "scheduler": "fifo",
                "promote": False,
                "search_space": {"model.units": {"grid": [8, 4, 8]}},
            },
        }
    )
    before = _train_worker_ids()
    result = sweep(project, out=io.StringIO())
    started = _train_worker_ids() - before

    assert result.concurrency == 1 and result.count("done") == 3
    assert len(started) == 2, f"{len(started)} worker processes for 3 trials of 2 workers"
    first, second, third = sorted(result.trials, key=lambda t: t.trial_id)
    assert [t.values["model.units"] for t in (first, second, third)] == [8, 4, 8]

    def losses(trial) -> list[float]:
        return [row[k] for row in trial.history for k in ("train_loss", "val_loss")]

    assert len(losses(first)) == 4  # 2 epochs
    assert losses(third) == pytest.approx(losses(first), rel=1e-6)
    assert losses(second) != pytest.approx(losses(first), rel=1e-3)  # the units did matter
