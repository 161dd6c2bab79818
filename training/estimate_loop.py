"""What `shipyard estimate` measures on every Horovod worker, inside the real training loop.

`training.loop.train_loop_per_worker` does its whole set-up as for a run (threads, `hvd.init`,
corpus, model, `DistributedOptimizer`, the tf.data pipeline, callbacks, Reporter) and, when its
config carries a `profile`, hands those very pieces to `profile_worker` instead of training. So
the start-up, the steps and the epoch end timed here are the ones `shipyard train` pays, not a
re-creation of them.

Each rank measures, then all ranks' numbers go to the driver in one report:
- steps: the interval between consecutive batch ends of a short `model.fit` with the loop's own
  callbacks (the first `warmup` include tracing and the variable broadcast);
- the allreduce of the gradients: a grouped allreduce of zero tensors shaped like the trainable
  variables, inside a `tf.function` as the optimizer issues it, timed in isolation (median of a
  few). Horovod's timeline would show the same collective, but only inside a step where it
  overlaps with backprop, and it needs a file per run parsed afterwards; the isolated call gives
  the number the scaling model needs directly. A one-float allreduce gives the per-collective
  latency and a larger probe the bandwidth;
- an evaluation pass over the validation split (else test): once to trace the predict function,
  once reading only, a few times steady; and a read-only pass over the train shard (what the
  final evaluation reads);
- a few real epoch ends through the loop's `Reporter` (validation metrics, checkpoint on rank 0,
  the Ray report) and, on rank 0, the serving-cost measurement the final epoch makes.
"""

from __future__ import annotations

import json
import statistics
import time

import tensorflow as tf

PROFILE_KEY = "shipyard_profile"  # the final report's metric holding every rank's numbers (JSON)
ALLREDUCE_REPEATS, ALLREDUCE_WARMUP = 20, 3
EPOCH_ENDS = 3  # Reporter epoch ends timed (the driver takes the median)
EVAL_REPEATS = 3  # steady evaluation passes timed (likewise)


def profile_worker(
    settings: dict,
    *,
    model: tf.keras.Model,
    data: tf.data.Dataset,
    callbacks: list,
    eval_batches,
    splits: list[str],
    reporter,
    dense_gradients: bool,
) -> None:
    """Time `settings["steps"]` training steps and a few epoch ends on this rank, then report every
    rank's measurements (rank order) under PROFILE_KEY. Every rank makes the same collective calls
    in the same order, and reports the same number of times (the Reporter's, then ours)."""
    import horovod.tensorflow as hvd_tf
    import ray
    import ray.train

    from shipyard.training.loop import CompiledPredict, gather_predictions

    out: dict = {
        "rank": hvd_tf.rank(),
        "node": ray.get_runtime_context().get_node_id(),
        "set_up_at": time.time(),
        "dense_gradients": bool(dense_gradients),
    }
    timer = StepTimer()
    history = model.fit(
        data, steps_per_epoch=settings["steps"], epochs=1, callbacks=[*callbacks, timer], verbose=0
    )
    out["epoch_end_seconds"] = time.perf_counter() - timer.last_end  # Keras's own epoch end
    out["train_begin_at"] = timer.began_at
    out["step_seconds"] = timer.steps
    out.update(gradient_sizes(model))
    out.update(allreduce_times(model, settings["probe_bytes"]))

    split = next((s for s in ("validation", "test") if s in splits), None)
    if split is not None:
        predict = CompiledPredict(model)
        out.update(eval_times(predict, eval_batches, split, gather_predictions))
    # The final evaluation reads the train shard once more: a new pass of Ray's streaming split,
    # which costs more per row than the evaluation splits' in-memory reads.
    out["train_read_rows"], out["train_read_seconds"] = read_pass(eval_batches, "train")

    # Epoch ends as every epoch of a run has them: the Reporter's validation pass, rank 0's
    # checkpoint and the report (profiles run with checkpoint_every 1 and EPOCH_ENDS + 1 epochs,
    # so each is checkpointed and none is the final one). Several, because one slow report on a
    # busy machine would otherwise be multiplied by every epoch of the prediction.
    reporter.set_model(model)
    logs = {name: float(values[-1]) for name, values in history.history.items()}
    out["reporter_seconds"] = []
    for epoch in range(EPOCH_ENDS):
        started = time.perf_counter()
        reporter.on_epoch_end(epoch, logs)
        out["reporter_seconds"].append(time.perf_counter() - started)
    if hvd_tf.rank() == 0 and split is not None:
        started = time.perf_counter()
        reporter.serving_cost()
        out["serving_cost_seconds"] = time.perf_counter() - started
    out["reported_at"] = time.time()
    everyone = hvd_tf.allgather_object(out)
    # `epoch`/`best_epoch` name the Reporter's checkpoints as the run's, like a finished run
    # (the weights never change between them, so the first stays the best).
    report = {"epoch": EPOCH_ENDS, "best_epoch": 1, PROFILE_KEY: json.dumps(everyone)}
    ray.train.report(report)


class StepTimer(tf.keras.callbacks.Callback):
    """Wall time between consecutive batch ends (the first from `on_train_begin`): what an epoch
    is made of, data pipeline and callbacks included. It never reads the batch logs, so Keras
    keeps them as tensors and adds no host sync per step (the loop's own callbacks do the same);
    on a GPU the intervals are therefore dispatch times, on CPU the steps themselves."""

    def __init__(self):
        super().__init__()
        self._supports_tf_logs = True
        self.began_at = 0.0
        self.last_end = 0.0
        self.steps: list[float] = []

    def on_train_begin(self, logs=None):
        self.began_at = time.time()
        self.last_end = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        self.steps.append(now - self.last_end)
        self.last_end = now


def gradient_sizes(model: tf.keras.Model) -> dict:
    """Parameters, and the bytes one step's gradients allreduce (dense: one value per trainable
    parameter, in the variable's dtype)."""
    trainable = model.trainable_variables
    return {
        "parameters": int(model.count_params()),
        "trainable_parameters": int(sum(v.shape.num_elements() for v in trainable)),
        "gradient_bytes": int(sum(v.shape.num_elements() * v.dtype.size for v in trainable)),
    }


def allreduce_times(model: tf.keras.Model, probe_bytes: int) -> dict:
    """Median seconds of a grouped allreduce of: one float (latency), tensors shaped like the
    gradients, and a `probe_bytes` float32 buffer (bandwidth). Zero on a single rank."""
    import horovod.tensorflow as hvd_tf

    if hvd_tf.size() == 1:
        return {"latency_seconds": 0.0, "allreduce_seconds": 0.0, "probe_seconds": 0.0}
    shapes = {
        "latency": [tf.zeros((1,), tf.float32)],
        "allreduce": [tf.zeros(v.shape, v.dtype) for v in model.trainable_variables],
        "probe": [tf.zeros((max(1, probe_bytes // 4),), tf.float32)],
    }
    return {f"{name}_seconds": _median_allreduce(name, t) for name, t in shapes.items()}


def _median_allreduce(name: str, tensors: list[tf.Tensor]) -> float:
    import horovod.tensorflow as hvd_tf

    @tf.function
    def reduce(values):
        return hvd_tf.grouped_allreduce(values, op=hvd_tf.Average, name=f"estimate_{name}")

    times = []
    for i in range(ALLREDUCE_WARMUP + ALLREDUCE_REPEATS):
        started = time.perf_counter()
        reduce(tensors)[0].numpy()  # waits for the collective
        if i >= ALLREDUCE_WARMUP:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def read_pass(eval_batches, split: str) -> tuple[int, float]:
    """Rows this rank keeps of one pass over a split, and the seconds the pass took."""
    rows = 0
    started = time.perf_counter()
    for _, y in eval_batches(split):
        rows += len(y)
    return rows, time.perf_counter() - started


def eval_times(predict, eval_batches, split: str, gather_predictions) -> dict:
    """One evaluation split as the Reporter evaluates it: the first pass (which traces the
    predict function), a pass that only reads (every rank reads the whole split and keeps its
    rows), and the median of a few steady passes; plus the rows this rank predicted."""
    rows = 0

    def counted():
        nonlocal rows
        for x, y in eval_batches(split):
            rows += len(y)
            yield x, y

    started = time.perf_counter()
    gather_predictions(predict, counted())
    first = time.perf_counter() - started
    _, read = read_pass(eval_batches, split)
    steady = []
    for _ in range(EVAL_REPEATS):
        rows = 0
        started = time.perf_counter()
        gather_predictions(predict, counted())
        steady.append(time.perf_counter() - started)
    return {
        "eval_split": split,
        "eval_first_seconds": first,
        "eval_read_seconds": read,
        "eval_seconds": statistics.median(steady),
        "eval_rows_predicted": rows,
    }
