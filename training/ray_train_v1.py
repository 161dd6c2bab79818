"""Ray Train's V1 API, in one box: the only module that selects it and imports its trainer.

Horovod runs only on V1: in Ray 2.60 the default (V2) `HorovodTrainer` is a stub that raises, and
the switch (`RAY_TRAIN_V2_ENABLED=0`) is read once, when `ray.train` is first imported. So the
selection is an explicit call made before that import (never a side effect of importing a
module), the worker processes get the same switch through the job's runtime environment
(`shipyard.cluster.runtime.WORKER_ENV`), and the trainer class is checked to really be V1's: a
future Ray that drops V1 fails here with the supported version named, not deep inside a run.

V1 is a deliberate choice, so the deprecation notices it triggers (Ray's V2 migration hints,
and Ray Tune's "Passing a Trainer to the Tuner is deprecated", ray-project/ray#49454) are
silenced here, and only those.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shipyard.errors import ShipyardError

if TYPE_CHECKING:
    from ray.train import RunConfig
    from ray.train.horovod import HorovodTrainer

SUPPORTED_RAY = "2.60.0"  # the version pinned in pyproject.toml; see ../shared/DESIGN.md
# The notices V1 use triggers on purpose (matched as message prefixes, in any warning category).
KNOWN_V1_NOTICES = (
    r"Passing a Trainer to the Tuner is deprecated",
    r".*Ray Train V2",
    r".*RAY_TRAIN_V2_ENABLED",
)


def select_v1() -> None:
    """Select V1 in this process (idempotent). Fails when `ray.train` already came up as V2."""
    from shipyard.cluster.runtime import ensure_train_v1

    already = "ray.train" in sys.modules
    ensure_train_v1()
    if already:
        from ray.train.v2._internal.constants import is_v2_enabled

        if is_v2_enabled():
            raise ShipyardError(
                "ray.train was imported with its V2 API before shipyard selected V1;"
                " set RAY_TRAIN_V2_ENABLED=0 before importing ray.train"
            )
    quiet_v1_notices()


def require_v1() -> None:
    """For modules that subclass Ray Train's V1 classes: check, without changing anything, that
    V1 was selected before they were imported (worker processes get it from the runtime env)."""
    import os

    if os.environ.get("RAY_TRAIN_V2_ENABLED") != "0":
        raise ShipyardError(
            "Ray Train's V1 API is not selected: call"
            " shipyard.training.ray_train_v1.select_v1() before importing this module"
        )


def quiet_v1_notices() -> None:
    """Silence the V1 notices listed above and, unless verbose, Ray Tune's experiment banner
    (its results folder and a TensorBoard hint into /tmp/ray): shipyard prints where to look."""
    import os

    from shipyard.verbosity import is_verbose

    for message in KNOWN_V1_NOTICES:
        warnings.filterwarnings("ignore", message=message)
    if not is_verbose():
        # The legacy reporter at verbose=0 prints nothing; the new one always prints a banner.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def horovod_trainer() -> type[HorovodTrainer]:
    """Ray Train's V1 `HorovodTrainer`, checked to be the real one, as shipyard subclasses it
    (`shipyard.training.horovod_trainer`: its trainable can be reused by the next trial)."""
    select_v1()
    import ray
    from ray.train.data_parallel_trainer import DataParallelTrainer
    from ray.train.horovod import HorovodTrainer

    if not (isinstance(HorovodTrainer, type) and issubclass(HorovodTrainer, DataParallelTrainer)):
        raise ShipyardError(
            f"Ray {ray.__version__} has no V1 HorovodTrainer; shipyard needs Ray Train's V1 API"
            f" (supported: ray=={SUPPORTED_RAY}, the version pyproject.toml pins)"
        )
    from shipyard.training.horovod_trainer import HorovodTrainer as Reusable

    return Reusable


def new_horovod_trainer(
    loop: Callable[[dict], None],
    config: dict,
    *,
    workers: int,
    cpus_per_worker: float,
    use_gpu: bool = False,
    gpus_per_worker: float = 1,
    placement_strategy: str = "PACK",
    run_config: RunConfig,
    **kwargs: Any,
) -> HorovodTrainer:
    """A `HorovodTrainer` the way every shipyard path needs it: one bundle per worker, shipyard's
    Horovod backend (which also runs several Ray nodes on one host), and a coordinator that
    takes no CPU (else 2 workers x 1 CPU on a 2-CPU node wait forever for a third)."""
    from ray.train import ScalingConfig

    from shipyard.training.horovod_backend import SharedHostHorovodConfig

    trainer_cls = horovod_trainer()
    resources = {"CPU": float(cpus_per_worker)}
    if use_gpu:
        resources["GPU"] = float(gpus_per_worker)
    return trainer_cls(
        train_loop_per_worker=loop,
        train_loop_config=config,
        horovod_config=SharedHostHorovodConfig(),
        scaling_config=ScalingConfig(
            num_workers=workers,
            use_gpu=use_gpu,
            resources_per_worker=resources,
            trainer_resources={"CPU": 0},
            placement_strategy=placement_strategy,
        ),
        run_config=run_config,
        **kwargs,
    )


def interruptible():
    """A block in which Ctrl-C interrupts `fit()` (KeyboardInterrupt) instead of ending it.

    Trainer.fit and Tuner.fit run on Ray Tune, which by default catches SIGINT, stops the run
    "gracefully" and returns its result as if it had finished (and keeps its handler installed
    for the next Ctrl-C): `shipyard train` would then export and register the half-trained
    model. Interrupted, nothing is published and the last checkpoint stays for `--resume`."""
    from shipyard.temporary_env import temporary_env

    return temporary_env("TUNE_DISABLE_SIGINT_HANDLER", "1")
