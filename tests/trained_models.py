"""Tiny corpora's projects and a model trained in this process, for the training and serving
tests.

A Horovod run would take a minute per fixture; the in-process fit writes the very format the loop
writes (`tf.train.Checkpoint(model=..., optimizer=...)` at `<dir>/ckpt` plus `state.json`), and
builds a `TrainResult` with the loop's metric names, so the code under test cannot tell.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import tensorflow as tf

from shipyard.corpus.manifest import PreparedCorpus
from shipyard.project import Project
from shipyard.training.checkpoint import WEIGHTS, CheckpointState, write_state
from shipyard.training.metrics import classification_metrics, scalars
from shipyard.training.models import build, feature_columns, model_kind
from shipyard.training.trainer import TrainResult

TEXT_PROJECT = {
    "name": "tiny_text",
    "data": {"synthetic": {"rows": 900, "seed": 5}, "vocab_size": 1200, "sequence_length": 20},
    "model": {"kind": "lstm_classifier", "embedding_dim": 12, "units": 12},
    "training": {
        "epochs": 2,
        "batch_size": 32,
        "learning_rate": 0.01,
        "export": {"compress": True},
    },
}
TABULAR_PROJECT = {
    "name": "tiny_tabular",
    "data": {"kind": "tabular", "synthetic": {"kind": "tabular", "rows": 600, "seed": 2}},
    "model": {"kind": "mlp", "hidden_units": [16]},
    "training": {"epochs": 1, "batch_size": 32},
}


@dataclass
class Trained:
    project: Project
    corpus: PreparedCorpus
    model: tf.keras.Model
    result: TrainResult


def read_split(corpus: PreparedCorpus, split: str) -> dict[str, np.ndarray]:
    """A whole split's shard columns, read straight from Parquet (independent of the code under
    test)."""
    table = pq.read_table(corpus.split_path(split))
    out = {}
    for name in table.column_names:
        column = table.column(name)
        if name == "ids":
            # to_pylist reads a plain list column and Ray's tensor extension type alike.
            out[name] = np.asarray(column.to_pylist(), dtype=np.int32)
        else:
            out[name] = column.to_numpy(zero_copy_only=False)
    return out


def model_inputs(model_cfg, corpus: PreparedCorpus, rows: dict[str, np.ndarray]):
    """What the loop feeds the model for these shard rows."""
    kind = model_kind(model_cfg, corpus)
    columns = feature_columns(kind, corpus)
    if kind.inputs == "features":
        return {c: rows[c].reshape(-1, 1) for c in columns}
    return rows[columns[0]]


def train_in_process(project: Project, corpus: PreparedCorpus, run_dir: Path) -> Trained:
    """Fit `project.model` for `training.epochs` and write a checkpoint the way the loop does."""
    tf.keras.utils.set_random_seed(project.training.seed)
    model = build(project.model, corpus)
    optimizer = tf.keras.optimizers.legacy.Adam(project.training.learning_rate)
    binary = corpus.num_classes == 2
    model.compile(
        optimizer=optimizer,
        loss="binary_crossentropy" if binary else "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    splits = {s: read_split(corpus, s) for s in ("train", "validation", "test") if corpus.rows(s)}
    kind = model_kind(project.model, corpus)
    if kind.fit_statistics is not None:  # as the loop does, with one rank: the sum is the input
        train_rows = {c: splits["train"][c] for c in feature_columns(kind, corpus)}
        kind.fit_statistics(model, iter([train_rows]), lambda values: values)
    x = model_inputs(project.model, corpus, splits["train"])
    y = splits["train"]["label"].astype(np.float32 if binary else np.int64)
    if binary:
        y = y.reshape(-1, 1)
    history: list[dict] = []
    board = tf.keras.callbacks.TensorBoard(str(run_dir / "tensorboard"))
    for epoch in range(project.training.epochs):
        started = time.perf_counter()
        logs = model.fit(
            x, y, batch_size=project.training.batch_size, epochs=1, verbose=0, callbacks=[board]
        ).history
        row = {
            "epoch": epoch + 1,
            "epoch_seconds": time.perf_counter() - started,
            "train_loss": logs["loss"][-1],
            "train_accuracy": logs["accuracy"][-1],
            "timestamp": time.time(),
            "training_iteration": epoch + 1,
        }
        val = splits["validation"]
        probs = model.predict(model_inputs(project.model, corpus, val), verbose=0)
        row.update(scalars(classification_metrics(probs, val["label"], corpus.num_classes), "val"))
        history.append(row)
    metrics = dict(history[-1])
    for split, prefix in (("train", "final_train"), ("validation", "val"), ("test", "test")):
        rows = splits[split]
        probs = model.predict(model_inputs(project.model, corpus, rows), verbose=0)
        result = classification_metrics(probs, rows["label"], corpus.num_classes)
        metrics.update(scalars(result, prefix))
        metrics[f"{prefix}_confusion_matrix"] = json.dumps(result["confusion_matrix"])

    trial = run_dir / "HorovodTrainer_00000"
    checkpoint = trial / f"checkpoint_{project.training.epochs - 1:06d}"
    checkpoint.mkdir(parents=True)
    tf.train.Checkpoint(model=model, optimizer=optimizer).write(str(checkpoint / WEIGHTS))
    plain = {k: v for k, v in metrics.items() if isinstance(v, int | float | str)}
    state = CheckpointState(
        epoch=project.training.epochs,
        model=project.model.model_dump(mode="json"),
        training=project.training.model_dump(mode="json"),
        corpus_content_hash=corpus.content_hash,
        corpus_path=corpus.path,
        metrics=plain,
    )
    write_state(str(checkpoint), state)
    result = TrainResult(
        run_name=run_dir.name,
        run_dir=str(trial),
        checkpoint=str(checkpoint),
        metrics=metrics,
        corpus=corpus,
        history=history,
    )
    return Trained(project, corpus, model, result)
