"""The Horovod workers a reused trial actor keeps for its next trial.

Started afresh for every trial, a trial's workers cost a process each, Ray Train's, TensorFlow's
and Horovod's imports and TensorFlow's first trace: 3-5 s of every trial on a 2-core machine,
beside trials of a few tens of seconds. When Tune reuses a finished trial's actor for the next
trial (`reuse_actors`, `shipyard.training.horovod_trainer`), that trial asking for the same
workers takes over the last one's: same processes, same placement-group bundles. It is still
its own Horovod run: the rendezvous starts a new round (the same server, its store emptied) and
every rank calls `hvd.init()` again after the last run's `hvd.shutdown()`; the loop clears
Keras' session and seeds its generators as in a fresh process.

Only a run that ended cleanly leaves its workers behind. A run that failed, that the scheduler
stopped, or whose workers died ends them the way Ray Train always does, so a broken worker or a
half-finished collective never carries over. The actor ends what it kept when Tune stops it.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass

from shipyard.training.ray_train_v1 import require_v1

require_v1()  # subclasses Ray Train's V1 classes; imported only once training has selected V1

import ray  # noqa: E402
from ray.exceptions import GetTimeoutError, RayActorError  # noqa: E402
from ray.train._internal.backend_executor import BackendExecutor, InactiveWorkerGroup  # noqa: E402
from ray.train._internal.worker_group import WorkerGroup  # noqa: E402

log = logging.getLogger(__name__)

ANSWER_TIMEOUT_S = 30.0  # a worker slower to answer (a no-op, a clean-up) is not kept or reused


@dataclass
class _Kept:
    worker_group: WorkerGroup
    backend: object  # the run's backend, holding its Horovod rendezvous
    backend_config: object
    shape: tuple  # what a run must ask for to take these workers over


# One per process: a trial actor runs one trial at a time, and keeps one run's workers.
_kept: _Kept | None = None


class ReusingBackendExecutor(BackendExecutor):
    """Ray Train's V1 executor, taking over the kept workers of its actor's last run if they fit
    and keeping its own after a clean run (`keep_workers`)."""

    _keep = False

    def keep_workers(self) -> None:
        """The run ended cleanly: its workers may serve the actor's next run."""
        self._keep = True

    def start(self, *args, **kwargs):
        kept = _take(self._shape())
        if kept is None:
            return super().start(*args, **kwargs)
        self.worker_group, self._backend = kept.worker_group, kept.backend
        # As `start` does for new workers: the driver's Ray Data settings, then a new rendezvous.
        from ray.data import DataContext

        ctx = DataContext.get_current()
        self.worker_group.execute(_set_data_context, ctx)
        self._backend.restart_rendezvous()

    def shutdown(self, graceful_termination: bool = True):
        # Only workers in the trial's own placement group are kept (an executor that made its
        # own group, outside Tune, removes it and them), and only after a clean run.
        if not (self._keep and self.is_started() and self._placement_group is None):
            return super().shutdown(graceful_termination)
        try:
            ray.get(self.worker_group.execute_async(_forget_last_run), timeout=ANSWER_TIMEOUT_S)
        except (RayActorError, GetTimeoutError):
            return super().shutdown(graceful_termination)
        # The run's train-shard coordinators end now, as they do when their run's workers end:
        # the kept workers' handles would keep them until this actor ends, which kills them
        # mid-exit (a SIGTERM traceback from each).
        for coordinator in _split_coordinators(self.dataset_shards):
            coordinator.__ray_terminate__.remote()
        global _kept  # empty: this run's `start` took what its actor kept
        _kept = _Kept(self.worker_group, self._backend, self._backend_config, self._shape())
        self.worker_group = InactiveWorkerGroup()
        self.dataset_shards = None

    def _shape(self) -> tuple:
        resources = tuple(sorted(self._resources_per_worker.items()))
        return (self._num_workers, resources, type(self._backend), self._backend_config)


def release() -> None:
    """End the kept workers, if any (the actor is stopping, or the next run needs others)."""
    global _kept
    kept, _kept = _kept, None
    if kept is None:
        return
    try:
        kept.backend.on_shutdown(kept.worker_group, kept.backend_config)
    finally:
        kept.worker_group.shutdown()


def _take(shape: tuple) -> _Kept | None:
    """The kept workers if they have the shape asked for and all still answer, else None (and
    whatever was kept is ended)."""
    global _kept
    kept = _kept
    if kept is None:
        return None
    if kept.shape != shape:
        release()
        return None
    try:
        ray.get(kept.worker_group.execute_async(_answer), timeout=ANSWER_TIMEOUT_S)
    except (RayActorError, GetTimeoutError) as exc:
        log.info("the last run's workers cannot be reused (%s); starting new ones", exc)
        release()
        return None
    _kept = None
    return kept


def _split_coordinators(shards: list[dict] | None) -> list:
    """The Ray Data actors that stream this run's splits to its workers (one per split)."""
    found = {}
    for per_worker in shards or []:
        for iterator in per_worker.values():
            actor = getattr(iterator, "_coord_actor", None)  # StreamSplitDataIterator's
            if actor is not None:
                found[actor._actor_id] = actor
    return list(found.values())


def _answer() -> None:
    pass


def _forget_last_run() -> None:
    """Drop what the run left on this worker (Keras' session holds its model, the model its input
    pipeline) and collect it, before the next run builds its own."""
    import tensorflow as tf

    tf.keras.backend.clear_session()
    gc.collect()


def _set_data_context(ctx) -> None:
    from ray.data import DataContext

    DataContext._set_current(ctx)
