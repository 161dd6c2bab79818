"""The per-worker Horovod training loop that Ray Train's `HorovodTrainer` runs on every worker.

Horovod done the standard way: `hvd.init()`, threads from the CPUs the worker was given, one GPU per
local rank, learning rate scaled by `hvd.size()` with warm-up, `DistributedOptimizer`, variables
broadcast from rank 0, metrics averaged across ranks. Each worker streams its own disjoint shard
(`ray.train.get_dataset_shard`, split with equal row counts so every rank runs the same number of
steps and no allreduce waits for a rank that has finished).

Rank 0 writes a checkpoint (model and optimizer state, plus the epoch) every `checkpoint_every`
epochs; after a failure Ray Train restarts the whole worker group and every rank resumes from the
last checkpoint. Validation metrics are computed from all ranks' predictions gathered together.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np
import tensorflow as tf

from shipyard.errors import ShipyardError
from shipyard.training.checkpoint import STATE, WEIGHTS, CheckpointState, read_state, write_state

__all__ = [
    "REPORTS_SERVING_METRICS",
    "STATE",
    "WEIGHTS",
    "TrainingDiverged",
    "train_loop_per_worker",
]

# The final report carries the kept model's serving cost (rank 0): `model_bytes`, the size of its
# weights, and `latency_ms`, the median time of one single-row prediction in this worker.
REPORTS_SERVING_METRICS = True
LATENCY_CALLS, LATENCY_WARMUP = 50, 5

CHUNK_ROWS = 4096  # rows per hand-over from Ray Data to tf.data
SHUFFLE_ROWS = 8192  # tf.data's shuffle buffer, in rows: two chunks, so rows mix across them
CACHE_SHARD_BYTES = 512 << 20  # `cache_shard="auto"` keeps a worker's train shard up to this
DENSE_EMBEDDING_VALUES = 16_000_000  # 64 MB of float32: `sparse_as_dense="auto"` goes dense below
_DTYPES = {"string": tf.string, "int32": tf.int32, "int64": tf.int64, "float32": tf.float32}


class TrainingDiverged(ShipyardError):
    """An epoch's training loss is NaN or infinite: nothing trained after it is worth its CPUs.

    Raised by every rank at the same epoch (the loss it checks is the one Horovod's
    `MetricAverageCallback` averaged over all ranks, so every rank sees the same value), before
    that epoch is evaluated or reported; the message's first line is what a sweep lists for the
    trial."""


def train_loop_per_worker(config: dict) -> None:
    """One rank's training run. `config["quiet"]` (a sweep's trials, unless --verbose): no Keras
    line per epoch, since the sweep prints its own progress, and Horovod's own log only when
    fatal. A trial the scheduler stops has its workers killed, and the surviving rank's Horovod
    logs the closed connection as an error. A trial that really fails still reports its error."""
    from shipyard.training.ray_train_v1 import select_v1

    select_v1()
    import ray.train

    _configure_threads(config["threads"])
    from shipyard.verbosity import quiet_engines

    quiet_engines()  # TensorFlow's slow-callback warnings and Ray Data's plans: verbose only
    import horovod.tensorflow as hvd_tf
    import horovod.tensorflow.keras as hvd

    from shipyard.training.horovod_backend import leave_together

    if config.get("quiet"):
        # A sweep's trial (see `quiet` below). Horovod reads its log level at its first message.
        os.environ.setdefault("HOROVOD_LOG_LEVEL", "fatal")
    hvd.init()
    _pin_gpu(hvd.local_rank())
    # Where each rank runs, in rank order: reported so placement (PACK/SPREAD) is visible.
    worker_nodes = hvd_tf.allgather_object(ray.get_runtime_context().get_node_id())

    from shipyard.project import ModelConfig, TrainingConfig
    from shipyard.training.models import feature_columns, model_kind

    corpus = _load_corpus(config["corpus_path"], config["corpus_content_hash"])
    mcfg = ModelConfig(**config["model"])
    tcfg = TrainingConfig(**config["training"])
    # A sweep's worker may have run the actor's last trial (shipyard.training.kept_workers, which
    # cleared its Keras session): neither its precision policy nor its generators carry over.
    mixed = tcfg.mixed_precision and tf.config.list_physical_devices("GPU")
    tf.keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    tf.keras.utils.set_random_seed(tcfg.seed)

    kind = model_kind(mcfg, corpus)
    model = kind.build(mcfg, corpus)
    lr = tcfg.learning_rate * (hvd.size() if tcfg.scale_learning_rate else 1)
    binary = corpus.num_classes == 2
    model.compile(
        optimizer=hvd.DistributedOptimizer(
            tf.keras.optimizers.legacy.Adam(lr),
            sparse_as_dense=_sparse_as_dense(tcfg.sparse_as_dense, model),
        ),
        loss="binary_crossentropy" if binary else "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )

    columns = feature_columns(kind, corpus)
    start_epoch, saved = 0, None
    # Horovod's optimizer is a copy of the Adam it wraps; that copy holds the moments and steps.
    state = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            saved = read_state(d)
            saved.check_corpus(corpus.content_hash, "resume")
            state.read(os.path.join(d, WEIGHTS)).expect_partial()
            start_epoch = saved.epoch
        # The optimizer's state comes back, its learning rate is this run's: a resumed run or a
        # PBT trial exploiting another's checkpoint goes on with the rate it was configured with.
        tf.keras.backend.set_value(model.optimizer.lr, lr)
    elif kind.fit_statistics is not None:
        # Statistics of the whole train split (IDF, say) that the model holds as weights: every
        # rank counts its own shard, one allreduce sums them, so all ranks set the same values.
        kind.fit_statistics(model, _shard_batches(columns), _allreduce_sum)

    record = {
        "model": mcfg.model_dump(mode="json"),
        "training": tcfg.model_dump(mode="json"),
        "corpus_content_hash": corpus.content_hash,
        "corpus_path": corpus.path,
    }
    batch = tcfg.batch_size
    rows_per_worker = corpus.rows("train") // hvd.size()

    def train_data():
        """This rank's train shard as one endless tf.data pipeline, `steps` batches per epoch.

        Ray Data hands over chunks of CHUNK_ROWS rows (its per-batch Python work is paid per
        chunk, not per step), and tf.data shuffles rows across chunks and batches them in C++. A
        shard small enough is kept after the first epoch: every later epoch would otherwise wait
        for Ray Data to start streaming again and to fill the shuffle buffer (measured 1.7 s of a
        12 s epoch). The pipeline repeats instead of ending with each epoch, so Keras keeps one
        iterator for the whole run: a new iterator per epoch means tearing down the old one,
        which waits for tf.data's autotuning thread to wake (measured up to 7 s per epoch
        boundary inside Ray workers, while the other ranks wait for this one in the allreduce).
        """
        shard = ray.train.get_dataset_shard("train")
        names = [*columns, "label"]

        def chunks():
            for b in shard.iter_batches(batch_size=CHUNK_ROWS, batch_format="numpy"):
                yield tuple(b[c] for c in names)

        schema = corpus.manifest["schema"]
        spec = tuple(_tensor_spec(schema[c]) for c in names)
        ds = tf.data.Dataset.from_generator(chunks, output_signature=spec)
        if _cache_shard(tcfg.cache_shard, schema, names, rows_per_worker):
            ds = ds.cache()
        ds = ds.unbatch()
        ds = ds.shuffle(SHUFFLE_ROWS, seed=tcfg.seed + hvd.rank(), reshuffle_each_iteration=True)
        ds = ds.batch(batch).repeat()
        ds = ds.map(_to_model_inputs)  # a reshape and a cast: not worth parallel calls
        # Fixed sizes, no autotuning: destroying an autotuned iterator when `fit` returns waits
        # for tf.data's model thread, 8-10 s on one rank of every run (the others wait for it
        # in the closing barrier); an epoch is as fast without it.
        options = tf.data.Options()
        options.autotune.enabled = False
        return ds.prefetch(2).with_options(options)

    def _to_model_inputs(*tensors):
        *x, y = tensors
        if kind.inputs == "features":  # Keras tabular inputs are (batch, 1) columns
            x = {c: tf.reshape(v, (-1, 1)) for c, v in zip(columns, x, strict=True)}
        else:
            x = x[0]
        if binary:
            y = tf.cast(tf.reshape(y, (-1, 1)), tf.float32)
        return x, y

    def eval_batches(name: str, owned_only: bool = True):
        """This rank's rows of an evaluation split, as (features, labels) numpy batches.

        Evaluation splits are not cut into equal shards (that drops rows); every rank sees the
        whole split and keeps the rows whose key hashes to it, so together the ranks cover every
        row exactly once. The train split is already a disjoint shard.
        """
        rank, size = hvd.rank(), hvd.size()
        for b in ray.train.get_dataset_shard(name).iter_batches(
            batch_size=batch * 4, batch_format="numpy"
        ):
            if name != "train" and size > 1 and owned_only:
                owner = np.array([int(k[:8], 16) % size for k in b["key"]])
                b = {k: v[owner == rank] for k, v in b.items()}
            if not len(b["label"]):
                continue
            if kind.inputs == "features":
                x = {c: b[c].reshape(-1, 1) for c in columns}
            else:
                x = b[columns[0]]
            yield x, b["label"]

    steps = max(1, -(-rows_per_worker // batch))
    splits = [s for s in ("train", "validation", "test") if s in config["splits"]]
    callbacks = [
        _takes_tensor_logs(hvd.callbacks.BroadcastGlobalVariablesCallback(0)),
        hvd.callbacks.MetricAverageCallback(),
    ]
    if tcfg.warmup_epochs and hvd.size() > 1 and start_epoch < tcfg.warmup_epochs:
        callbacks.append(
            _takes_tensor_logs(
                hvd.callbacks.LearningRateWarmupCallback(
                    initial_lr=lr,
                    warmup_epochs=tcfg.warmup_epochs,
                    steps_per_epoch=steps,
                    verbose=0,
                )
            )
        )
    reporter = Reporter(
        hvd,
        state,
        eval_batches,
        splits,
        corpus.num_classes,
        tcfg,
        start_epoch,
        worker_nodes,
        record,
    )
    if saved is not None:
        reporter.set_model(model)
        reporter.resume_from(saved)
    callbacks.append(reporter)
    if hvd.rank() == 0 and config.get("tensorboard_dir"):
        callbacks.append(tf.keras.callbacks.TensorBoard(config["tensorboard_dir"]))
    if start_epoch >= tcfg.epochs:
        # Resumed a finished run: every rank evaluates and reports once more, through the
        # Reporter on every rank (its gathers are collective: a rank that skipped them would
        # leave the others waiting forever).
        reporter.set_model(model)
        reporter.on_epoch_end(tcfg.epochs - 1, {})
        leave_together()
        return
    if "profile" in config:
        # `shipyard estimate`: this very set-up, timed for a few steps and one epoch's end
        # instead of trained (shipyard.training.estimate_loop).
        from shipyard.training.estimate_loop import profile_worker

        profile_worker(
            config["profile"],
            model=model,
            data=train_data(),
            callbacks=[c for c in callbacks if c is not reporter],
            eval_batches=eval_batches,
            splits=splits,
            reporter=reporter,
            dense_gradients=_sparse_as_dense(tcfg.sparse_as_dense, model),
        )
        leave_together()
        return
    try:
        model.fit(
            train_data(),
            steps_per_epoch=steps,
            initial_epoch=start_epoch,
            epochs=tcfg.epochs,
            callbacks=callbacks,
            verbose=2 if hvd.rank() == 0 and not config.get("quiet") else 0,
        )
    except TrainingDiverged:
        leave_together()  # every rank raised at the same epoch: leave together, then fail
        raise
    leave_together()


def _load_corpus(path: str, content_hash: str):
    """The corpus by path, checked to be the one the driver planned with (a corpus prepared
    again in between would give this rank other rows, labels or vocabulary than the others)."""
    from shipyard.corpus.manifest import PreparedCorpus
    from shipyard.errors import UserInputError

    try:
        corpus = PreparedCorpus.load(path)
    except UserInputError as exc:
        import ray

        node = ray.get_runtime_context().get_node_id()[:12]
        raise UserInputError(
            f"worker on node {node}: cannot read the corpus at {path} ({exc}); on a cluster,"
            " put the corpus on storage every node reaches (data.output: s3://..., gs://...)"
        ) from None
    if corpus.content_hash != content_hash:
        raise UserInputError(
            f"{path}: the corpus changed after training was planned (content"
            f" {corpus.content_hash[:12]}, expected {content_hash[:12]}); run again"
        )
    return corpus


def _shard_batches(columns: list[str]):
    """This rank's train shard once, as {column: numpy array} batches."""
    import ray.train

    shard = ray.train.get_dataset_shard("train")
    for b in shard.iter_batches(batch_size=CHUNK_ROWS, batch_format="numpy"):
        yield {c: b[c] for c in columns}


def _allreduce_sum(values: np.ndarray) -> np.ndarray:
    import horovod.tensorflow as hvd_tf

    total = hvd_tf.allreduce(tf.constant(values), op=hvd_tf.Sum, name="fit_statistics")
    return total.numpy()


def _takes_tensor_logs(callback: tf.keras.callbacks.Callback) -> tf.keras.callbacks.Callback:
    """Horovod's batch-hook callbacks never read the batch logs, but Keras converts those logs to
    NumPy for any batch-hook callback that does not declare it accepts tensors: a host sync after
    every step that stops TensorFlow from queueing the next one."""
    callback._supports_tf_logs = True
    return callback


def _cache_shard(setting: bool | str, schema: dict, columns: list[str], rows: int) -> bool:
    if setting != "auto":
        return bool(setting)
    return rows * sum(_row_bytes(schema[c]) for c in columns) <= CACHE_SHARD_BYTES


def _row_bytes(column_type: str) -> int:
    """A column's bytes per row, from its manifest type; strings are guessed generously."""
    name, width = _parse_type(column_type)
    size = 256 if name == "string" else 8 if name.endswith("64") else 4
    return size * (width or 1)


def _sparse_as_dense(setting: bool | str, model: tf.keras.Model) -> bool:
    """Small embedding tables go dense: their gradients join the one fused allreduce of every
    other gradient, instead of allgathers whose sizes Horovod must first exchange every step.
    Large tables stay sparse: the rows a batch touches are far fewer than the table."""
    if setting != "auto":
        return bool(setting)
    values = sum(
        int(np.prod(w.shape))
        for layer in model.submodules
        if isinstance(layer, tf.keras.layers.Embedding)
        for w in layer.trainable_weights
    )
    return values <= DENSE_EMBEDDING_VALUES


def _tensor_spec(column_type: str) -> tf.TensorSpec:
    """A manifest schema entry as a batch's TensorSpec."""
    name, width = _parse_type(column_type)
    return tf.TensorSpec((None, width) if width else (None,), _DTYPES[name])


def _parse_type(column_type: str) -> tuple[str, int | None]:
    """A manifest schema entry ("string", "float32", "int32[64]") as (dtype name, width or None)."""
    name, _, width = column_type.partition("[")
    return name, int(width.rstrip("]")) if width else None


def _configure_threads(threads: int) -> None:
    """Match TensorFlow's thread pools to the CPUs Ray gave this worker; oversubscription on a
    shared node costs more than it gains."""
    tf.config.threading.set_intra_op_parallelism_threads(max(1, threads))
    tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))


def _pin_gpu(local_rank: int) -> None:
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
        tf.config.set_visible_devices(gpus[local_rank % len(gpus)], "GPU")


class CompiledPredict:
    """The model's inference as one compiled function for every batch size: NumPy batches in,
    NumPy probabilities out.

    `predict_on_batch` traces again for each new batch shape: an evaluation split's short last
    batch, the rows a rank owns, the one-row latency probe. Each trace costs more than
    predicting a small split; this function is traced once, with the batch dimension open."""

    def __init__(self, model: tf.keras.Model):
        self.specs = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), model.input)
        self.width = int(model.outputs[0].shape[-1])  # probabilities per row
        self._compiled = tf.function(
            lambda x: model(x, training=False), input_signature=[self.specs]
        )

    def __call__(self, x) -> np.ndarray:
        tensors = tf.nest.map_structure(
            lambda v, spec: tf.convert_to_tensor(np.asarray(v, spec.dtype.as_numpy_dtype)),
            x,
            self.specs,
        )
        return self._compiled(tensors).numpy()


def gather_predictions(predict: CompiledPredict, dataset) -> tuple[np.ndarray, np.ndarray]:
    """Every rank's predictions and labels for its shard, concatenated on every rank."""
    import horovod.tensorflow as hvd_tf

    probs, labels = [], []
    for x, y in dataset:
        probs.append(predict(x))
        labels.append(np.asarray(y).reshape(-1))
    width = predict.width
    local_p = np.concatenate(probs) if probs else np.zeros((0, width), np.float32)
    local_y = np.concatenate(labels) if labels else np.zeros((0,), np.int64)
    all_p = hvd_tf.allgather(tf.constant(local_p.astype(np.float32))).numpy()
    all_y = hvd_tf.allgather(tf.constant(local_y.astype(np.int64))).numpy()
    return all_p, all_y


class Reporter(tf.keras.callbacks.Callback):
    """Per epoch: validation on gathered predictions, a checkpoint when due, one Ray report.

    It also keeps the best checkpointed epoch by `checkpoint_metric` and stops training early
    when `early_stopping` says so. Every input to those decisions is computed from all ranks'
    gathered predictions, so every rank decides the same and they stop on the same epoch.

    The final epoch (the last, or the one training stopped at) evaluates train, validation and
    test with the best epoch's weights: the model that is exported and registered. Every rank
    reports the same number of times (Ray Train requires it); only rank 0 attaches checkpoints,
    which always hold the epoch's own weights and optimizer state (what a resume continues from).
    """

    def __init__(self, hvd, state, eval_batches, splits, num_classes, tcfg, start, nodes, record):
        super().__init__()
        self.start_epoch, self.worker_nodes = start, json.dumps(nodes)
        self.hvd, self.state, self.eval_batches = hvd, state, eval_batches
        self.splits, self.num_classes, self.tcfg = splits, num_classes, tcfg
        self.record = record  # the effective config and corpus, written into every checkpoint
        self.epoch_start = time.perf_counter()
        self.best: tuple[float, int, list] | None = None  # (score, epoch, weights)
        self.stopping = tcfg.early_stopping
        self.since_improved = 0
        self.stop_best: float | None = None

    def resume_from(self, saved: CheckpointState) -> None:
        """The checkpoint training resumed from is the best so far until an epoch beats it."""
        self._track_best(saved.metrics, saved.epoch)

    def set_model(self, model):
        super().set_model(model)
        self.predict = CompiledPredict(model)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        import ray.train
        from ray.train import Checkpoint

        logs = logs or {}
        loss = float(logs.get("loss", np.nan))
        if "loss" in logs and not np.isfinite(loss):
            # Before evaluating: NaN weights would fail later, in the metrics, with a message
            # that names neither the loss nor the epoch. (A finished run restored only to report
            # again passes no logs: it trained nothing, so it has no loss to check.)
            rate = float(tf.keras.backend.get_value(self.model.optimizer.lr))
            raise TrainingDiverged(
                f"training diverged: train_loss is {loss} at epoch {epoch + 1} (learning rate"
                f" {rate:g}); lower training.learning_rate"
            )
        report = {
            "epoch": epoch + 1,
            "resumed_from_epoch": self.start_epoch,
            "worker_nodes": self.worker_nodes,
            "epoch_seconds": time.perf_counter() - self.epoch_start,
            "train_loss": loss,
            "train_accuracy": float(logs.get("accuracy", np.nan)),
            "learning_rate": float(tf.keras.backend.get_value(self.model.optimizer.lr)),
            "optimizer_steps": int(self.model.optimizer.iterations.numpy()),
        }
        if "validation" in self.splits:
            started = time.perf_counter()
            report.update(self._evaluate("validation", "val"))
            report["validation_seconds"] = time.perf_counter() - started
        due = (epoch + 1) % self.tcfg.checkpoint_every == 0
        if due:
            self._track_best(report, epoch + 1)
        stop = self._should_stop(report)
        final = stop or epoch + 1 >= self.tcfg.epochs
        if stop:
            self.model.stop_training = True
            report["stopped_early"] = True
        with tempfile.TemporaryDirectory() as d:
            checkpoint = None
            if self.hvd.rank() == 0 and (due or final):
                self._write_checkpoint(d, epoch + 1, report)
                checkpoint = Checkpoint.from_directory(d)
            if final:
                report.update(self._final_evaluation(epoch + 1))
            ray.train.report(report, checkpoint=checkpoint)

    def _evaluate(self, split: str, prefix: str, confusion: bool = False) -> dict:
        from shipyard.training.metrics import classification_metrics, scalars

        probs, labels = gather_predictions(self.predict, self.eval_batches(split))
        result = classification_metrics(probs, labels, self.num_classes)
        out = scalars(result, prefix)
        if confusion:
            out[f"{prefix}_confusion_matrix"] = json.dumps(result["confusion_matrix"])
        return out

    def _track_best(self, report: dict, epoch: int) -> None:
        value = report.get(self.tcfg.checkpoint_metric)
        if value is None or not np.isfinite(value):
            return
        score = value if self.tcfg.checkpoint_mode == "max" else -value
        if self.best is None or score > self.best[0]:
            self.best = (score, epoch, self.model.get_weights())

    def _should_stop(self, report: dict) -> bool:
        rule = self.stopping
        if rule is None or rule.metric not in report:
            return False
        value = report[rule.metric]
        sign = 1.0 if rule.mode == "max" else -1.0
        if self.stop_best is None or sign * (value - self.stop_best) > rule.min_delta:
            self.stop_best, self.since_improved = value, 0
            return False
        self.since_improved += 1
        return self.since_improved >= rule.patience

    def _write_checkpoint(self, folder: str, epoch: int, report: dict) -> None:
        self.state.write(os.path.join(folder, WEIGHTS))
        write_state(folder, CheckpointState(epoch=epoch, metrics=_plain(report), **self.record))

    def _final_evaluation(self, epoch: int) -> dict:
        """Train, validation and test metrics of the model that will be exported: the best
        checkpointed epoch's weights (the last epoch's when nothing was scored)."""
        best_epoch = epoch
        if self.best is not None and self.best[1] != epoch:
            best_epoch = self.best[1]
            self.model.set_weights(self.best[2])
        out: dict = {"best_epoch": best_epoch}
        prefixes = {"train": "final_train", "validation": "final_val", "test": "test"}
        for split in ("train", "validation", "test"):
            if split in self.splits:
                out.update(self._evaluate(split, prefixes[split], confusion=True))
        if self.hvd.rank() == 0:
            out.update(self.serving_cost())
        return out

    def serving_cost(self) -> dict:
        """Size of the kept model and the median latency of one single-row prediction through the
        compiled predict function (how serving calls it), on one real row of an evaluation split.
        On `cpus_per_worker: 1` that is one CPU thread. Rank 0 only: it reads a split no other
        rank is waiting on (evaluation splits are whole on every rank, not streamed shards)."""
        out = {"model_bytes": int(sum(w.numpy().nbytes for w in self.model.weights))}
        split = next((s for s in ("validation", "test") if s in self.splits), None)
        if split is None:
            return out
        x, _ = next(self.eval_batches(split, owned_only=False))
        one = {k: v[:1] for k, v in x.items()} if isinstance(x, dict) else x[:1]
        times = []
        for i in range(LATENCY_WARMUP + LATENCY_CALLS):
            started = time.perf_counter()
            self.predict(one)
            if i >= LATENCY_WARMUP:
                times.append(time.perf_counter() - started)
        out["latency_ms"] = float(np.median(times) * 1000)
        return out


def _plain(report: dict) -> dict:
    return {k: v for k, v in report.items() if isinstance(v, int | float | str)}
