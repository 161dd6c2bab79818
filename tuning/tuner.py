"""Ray Tune over a Ray Train V1 `HorovodTrainer`: building the Tuner, and restoring one.

This is where shipyard passes a Trainer to `tune.Tuner` (and to `Tuner.restore`). Ray 2.60 warns
that this is deprecated (ray-project/ray#49454) because Ray Train V2 drops it; V2 has no
`HorovodTrainer` at all, so V1 and this integration are deliberate. `select_v1()` (the one V1 box,
`shipyard.training.ray_train_v1`) selects V1 and silences exactly that notice and V1's migration
hints; nothing else is filtered here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shipyard.training.ray_train_v1 import select_v1

if TYPE_CHECKING:
    from ray import tune
    from ray.train.horovod import HorovodTrainer


def new_tuner(
    trainer: HorovodTrainer,
    *,
    param_space: dict,
    tune_config: tune.TuneConfig,
    run_config: tune.RunConfig,
) -> tune.Tuner:
    select_v1()
    from ray import tune

    return tune.Tuner(
        trainer, param_space=param_space, tune_config=tune_config, run_config=run_config
    )


def can_restore(path: str) -> bool:
    select_v1()
    from ray import tune

    return tune.Tuner.can_restore(path)


def restore_tuner(path: str, trainer: HorovodTrainer, *, param_space: dict) -> tune.Tuner:
    """The sweep at `path` where it stopped: finished trials stay finished, unfinished ones go on
    from their last checkpoint, errored ones stay errored."""
    select_v1()
    from ray import tune

    return tune.Tuner.restore(
        path,
        trainable=trainer,
        resume_unfinished=True,
        resume_errored=False,
        restart_errored=False,
        param_space=param_space,
    )
