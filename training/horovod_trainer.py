"""Ray Train's V1 `HorovodTrainer`, with a Tune trainable that the next trial can reuse.

A sweep's trial is a Tune actor that coordinates the trial's Horovod workers. Started afresh for
every trial, that actor costs a process, Ray Tune's and Ray Train's imports and a placement group:
3-4 s between one trial's end and the next one's start on a 2-core machine, beside trials of a
few tens of seconds. Tune reuses a finished trial's actor for the next (`reuse_actors`) when the
trainable can reset to a new config, and Ray's V1 trainable says it can but keeps the config it
merged for its first trial (`TrainTrainable._merged_config` is computed once, in `setup`), so a
reused actor would train the first trial's hyperparameters again. This trainable merges the new
trial's config on reset, and a reused actor hands its last trial's workers to the next trial
(`shipyard.training.kept_workers`): each trial is still its own Horovod run.
"""

from __future__ import annotations

import copy

from shipyard.training.ray_train_v1 import require_v1

require_v1()  # subclasses Ray Train's V1 classes; imported only once training has selected V1

from ray.train.horovod import HorovodTrainer as _RayHorovodTrainer  # noqa: E402
from ray.tune.utils.util import deep_update  # noqa: E402

from shipyard.training import kept_workers  # noqa: E402


class HorovodTrainer(_RayHorovodTrainer):
    """`ray.train.horovod.HorovodTrainer` whose trainable resets correctly (see the module).

    Named like Ray's: Tune names trials and their folders after the trainer class
    (`HorovodTrainer_00000`)."""

    _backend_executor_cls = kept_workers.ReusingBackendExecutor

    def _run_training(self, training_iterator) -> None:
        super()._run_training(training_iterator)
        # Every rank returned and the run's results are reported: its workers are reusable.
        training_iterator._backend_executor.keep_workers()

    def _generate_trainable_cls(self):
        base = super()._generate_trainable_cls()

        class ReusableTrainTrainable(base):
            def setup(self, config, **trainer_kwargs):
                # Ray merges the trial's config into these in place; keep them as they came.
                self._trainer_kwargs = _copied(trainer_kwargs)
                super().setup(config, **trainer_kwargs)

            def reset_config(self, new_config):
                kwargs = _copied(self._trainer_kwargs)
                run_config = kwargs.pop("run_config", None)
                merged = deep_update(kwargs, new_config, new_keys_allowed=True)
                merged["run_config"] = run_config
                # Tune reuses an actor only for a trial asking for the same resources.
                merged["scaling_config"] = self._merged_config["scaling_config"]
                self._merged_config = merged
                return super().reset_config(new_config)

            def cleanup(self):
                try:
                    super().cleanup()
                finally:
                    kept_workers.release()

        ReusableTrainTrainable.__name__ = base.__name__
        return ReusableTrainTrainable


def _copied(trainer_kwargs: dict) -> dict:
    """A deep copy of the trainer's arguments, except the datasets: those stay by reference
    (a sweep's shared, read-once shards)."""
    return {k: v if k == "datasets" else copy.deepcopy(v) for k, v in trainer_kwargs.items()}
