"""Export a checkpoint as a servable TF SavedModel that takes raw input, plus optional TFLite.

The artifact holds the preprocessing, so serving needs neither shipyard nor training code: `ids`
models get the corpus's own `TextVectorization` (built by the same `build_vectorizer`, from the
manifest's vocabulary, that wrote the shards) in front; `text` models already read strings; tabular
models take a dict of raw columns (missing numbers take the training mean, categories are trimmed,
exactly as the corpus encoder does). The `serving_default` signature takes `text` (string [n]) or
one [n] tensor per column and returns `probs` ((n, 1) P(labels[1]) for binary, (n, k) otherwise).

Layout of an export folder:

    saved_model/      tf.saved_model.load(...).signatures["serving_default"] in any TF process;
                      tf.keras.models.load_model works too where shipyard is importable
    signature.json    labels, kind, inputs, corpus content hash, tokenizer, checkpoint, variants
    tflite/           model_int8.tflite, model_float16.tflite (with `training.export.compress`)
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from shipyard.corpus.manifest import MANIFEST, PreparedCorpus
from shipyard.errors import ShipyardError, UserInputError
from shipyard.project import Project

SAVED_MODEL = "saved_model"
SIGNATURE = "signature.json"
SERVING_KEY = "serving_default"
VECTORIZE_KEY = "vectorize"  # ids models: text -> the ids the model reads
OUTPUT = "probs"
FORMAT_VERSION = 1
TFLITE_VARIANTS = ("tflite_int8", "tflite_float16")


@dataclass
class ExportResult:
    path: str  # the export folder (what the registry logs)
    saved_model: str
    signature: dict
    bytes: int  # size of saved_model/
    variants: dict[str, dict] = field(default_factory=dict)  # name -> path/bytes/accuracy | error
    test_accuracy: float | None = None  # the full model's, measured when variants are made


def export_model(
    checkpoint_dir: str | None, project: Project, corpus: PreparedCorpus, out_dir: str
) -> ExportResult:
    """Rebuild the model, restore the checkpoint's weights and write a raw-input servable.

    Written to a temporary folder beside `out_dir` and renamed into place when complete, so a
    failed export never leaves something that looks servable (an earlier export is replaced).
    """
    from shipyard.training.models import model_kind

    if not checkpoint_dir:
        raise ShipyardError("no checkpoint to export (the run reported none)")
    kind = model_kind(project.model, corpus)
    model = kind.build(project.model, corpus)
    state = restore(model, checkpoint_dir)
    served, signatures, serving_input = _servable(model, kind.inputs, corpus)

    out_dir = os.path.abspath(out_dir)
    tmp = f"{out_dir.rstrip('/')}.partial-{uuid.uuid4().hex[:8]}"
    os.makedirs(tmp)
    try:
        saved = os.path.join(tmp, SAVED_MODEL)
        served.save(saved, save_format="tf", include_optimizer=False, signatures=signatures)
        signature = {
            "format_version": FORMAT_VERSION,
            "name": project.registered_model_name,
            "model_kind": kind.name,
            "inputs": kind.inputs,
            "serving_signature": SERVING_KEY,
            "signatures": sorted(signatures),
            "serving_input": serving_input,
            "output": {
                "name": OUTPUT,
                "shape": [None, 1 if corpus.num_classes == 2 else corpus.num_classes],
                "meaning": "P(labels[1])" if corpus.num_classes == 2 else "P(labels[i])",
            },
            "labels": corpus.labels,
            "num_classes": corpus.num_classes,
            "corpus": {
                "kind": corpus.kind,
                "content_hash": corpus.content_hash,
                "path": corpus.path,
                "manifest": f"{corpus.path.rstrip('/')}/{MANIFEST}",
            },
            "tokenizer": corpus.tokenizer.to_dict() if corpus.kind == "text" else None,
            "features": _feature_spec(corpus) if kind.inputs == "features" else None,
            "model_config": project.model.model_dump(mode="json"),
            "checkpoint": {"path": _absolute(checkpoint_dir), **state},
            "tensorflow": tf.__version__,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "variants": {},
        }
        _write_json(os.path.join(tmp, SIGNATURE), signature)
        _swap_into_place(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    result = ExportResult(
        path=out_dir,
        saved_model=os.path.join(out_dir, SAVED_MODEL),
        signature=signature,
        bytes=dir_bytes(os.path.join(out_dir, SAVED_MODEL)),
    )
    if project.training.export.compress:
        compress(result, corpus)
    return result


def restore(model: tf.keras.Model, checkpoint_dir: str) -> dict:
    """Load the loop's weights into `model`; fail loudly when they do not fit it (a project whose
    model section changed since training would otherwise export untrained weights)."""
    from shipyard.training.loop import STATE, WEIGHTS

    prefix = os.path.join(checkpoint_dir, WEIGHTS)
    if not tf.io.gfile.exists(f"{prefix}.index"):  # gfile: local paths and gs:// alike
        raise UserInputError(f"{checkpoint_dir}: no TensorFlow checkpoint ({WEIGHTS}.index)")
    try:
        status = tf.train.Checkpoint(model=model).read(prefix)
        status.expect_partial()  # the optimizer's slots are not needed to serve
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as exc:
        raise ShipyardError(
            f"{checkpoint_dir}: the checkpoint does not fit model {model.name!r} built from the"
            f" project's model section ({_first_line(exc)})"
        ) from None
    state_file = os.path.join(checkpoint_dir, STATE)
    if tf.io.gfile.exists(state_file):
        with tf.io.gfile.GFile(state_file) as f:
            state = json.load(f)
        return {"epoch": state.get("epoch"), "metrics": state.get("metrics", {})}
    return {"epoch": None, "metrics": {}}


def _servable(model: tf.keras.Model, inputs: str, corpus: PreparedCorpus):
    """(Keras model raw -> probs, {signature name: tf.function}, the raw input spec as JSON).

    `ids` models also get a `vectorize` signature (text -> ids): the encoding inside the
    artifact can be checked against the shards, and explanations can map ids back to tokens.
    """
    text_spec = tf.TensorSpec([None], tf.string, name="text")
    if inputs == "text":

        @tf.function(input_signature=[text_spec])
        def serve_text(text):
            return {OUTPUT: model(tf.reshape(text, [-1]), training=False)}

        return model, {SERVING_KEY: serve_text}, {"text": "string"}
    if inputs == "ids":
        from shipyard.corpus.tokenizer import build_vectorizer

        raw = tf.keras.Input(shape=(), dtype=tf.string, name="text")
        vectorizer = build_vectorizer(corpus.vocabulary, corpus.tokenizer)
        served = tf.keras.Model(raw, model(vectorizer(raw)), name=f"{model.name}_raw")

        @tf.function(input_signature=[text_spec])
        def serve(text):
            return {OUTPUT: served(tf.reshape(text, [-1]), training=False)}

        @tf.function(input_signature=[text_spec])
        def vectorize(text):
            return {"ids": tf.cast(vectorizer(tf.reshape(text, [-1])), tf.int32)}

        return served, {SERVING_KEY: serve, VECTORIZE_KEY: vectorize}, {"text": "string"}

    spec = _feature_spec(corpus)
    means = {name: float(m["mean"]) for name, m in corpus.features["numeric"].items()}
    signature = {
        name: tf.TensorSpec([None], tf.float32 if dtype == "float32" else tf.string, name=name)
        for name, dtype in spec.items()
    }

    @tf.function(input_signature=[signature])
    def serve_rows(rows):
        columns = {}
        for name, value in rows.items():
            if name in means:  # the corpus encoder fills missing numbers with the train mean
                mean = tf.constant(means[name], value.dtype)
                value = tf.where(tf.math.is_nan(value), mean, value)
            else:
                value = tf.strings.strip(value)
            columns[name] = tf.reshape(value, [-1, 1])
        return {OUTPUT: model(columns, training=False)}

    return model, {SERVING_KEY: serve_rows}, spec


def _feature_spec(corpus: PreparedCorpus) -> dict[str, str]:
    numeric = dict.fromkeys(corpus.features["numeric"], "float32")
    return {**numeric, **dict.fromkeys(corpus.features["categorical"], "string")}


# -- loading and predicting ----------------------------------------------------------------------
class ExportedModel:
    """An export loaded with plain `tf.saved_model.load`, exactly as a serving process would."""

    def __init__(self, path: str):
        self.path = _export_root(path)
        with open(os.path.join(self.path, SIGNATURE)) as f:
            self.signature: dict = json.load(f)
        self._loaded = tf.saved_model.load(os.path.join(self.path, SAVED_MODEL))
        self._fn = self._loaded.signatures[self.signature.get("serving_signature", SERVING_KEY)]

    @property
    def labels(self) -> list[str]:
        return self.signature["labels"]

    @property
    def num_classes(self) -> int:
        return self.signature["num_classes"]

    @property
    def raw_columns(self) -> list[str]:
        """The shard columns that hold this model's raw input."""
        return list(self.signature["serving_input"])

    def predict_raw(self, data: Any, batch_size: int = 256) -> np.ndarray:
        """Probabilities for raw texts (a sequence of str) or raw rows (a list of dicts, or a dict
        of columns). Shape (n, 1) for binary models, (n, k) otherwise."""
        columns = self._columns(data)
        n = len(next(iter(columns.values())))
        width = self.signature["output"]["shape"][1]
        if n == 0:
            return np.zeros((0, width), np.float32)
        out = []
        for start in range(0, n, batch_size):
            feed = {k: tf.constant(v[start : start + batch_size]) for k, v in columns.items()}
            out.append(self._fn(**feed)[OUTPUT].numpy())
        return np.concatenate(out)

    def vectorize(self, texts: Sequence[str]) -> np.ndarray:
        """The token ids the model reads (`ids` models only)."""
        if VECTORIZE_KEY not in self._loaded.signatures:
            raise UserInputError(
                f"{self.path}: no {VECTORIZE_KEY!r} signature (ids models have one; this one reads"
                f" {self.signature['inputs']!r})"
            )
        text = tf.constant(np.asarray([str(t) for t in texts], dtype=object))
        return self._loaded.signatures[VECTORIZE_KEY](text=text)["ids"].numpy()

    def _columns(self, data: Any) -> dict[str, np.ndarray]:
        """Raw input as the signature's tensors: None becomes "" (text, categories) or NaN
        (numbers, which the model fills with the training mean)."""
        spec: dict[str, str] = self.signature["serving_input"]
        if isinstance(data, str):
            raise UserInputError("predict_raw takes a list of texts or rows, not one string")
        if isinstance(data, Mapping):
            columns = dict(data)
        elif list(spec) == ["text"]:
            columns = {"text": data}
        else:
            rows = list(data)
            columns = {k: [r.get(k) for r in rows] for k in spec}
        missing = [k for k in spec if k not in columns]
        if missing:
            raise UserInputError(f"input lacks {', '.join(missing)} (the model reads {spec})")
        out = {}
        for name, dtype in spec.items():
            values = columns[name]
            if dtype == "float32":
                if isinstance(values, np.ndarray) and values.dtype.kind == "f":
                    out[name] = values.astype(np.float32, copy=False)
                else:
                    out[name] = np.array([np.nan if v is None else v for v in values], np.float32)
            else:
                out[name] = np.array(["" if v is None else str(v) for v in values], dtype=object)
        return out


def load_exported(path: str) -> ExportedModel:
    return ExportedModel(path)


def predict_raw(model: ExportedModel | str, data: Any, batch_size: int = 256) -> np.ndarray:
    """Convenience: probabilities from an export folder or a loaded export."""
    exported = model if isinstance(model, ExportedModel) else load_exported(model)
    return exported.predict_raw(data, batch_size=batch_size)


def _export_root(path: str) -> str:
    path = os.path.abspath(path)
    if os.path.isfile(os.path.join(path, SIGNATURE)):
        return path
    parent = os.path.dirname(path)
    if os.path.basename(path) == SAVED_MODEL and os.path.isfile(os.path.join(parent, SIGNATURE)):
        return parent
    raise UserInputError(f"{path}: not a shipyard export (no {SIGNATURE})")


# -- the corpus split as raw input ---------------------------------------------------------------
def split_batches(
    corpus: PreparedCorpus, split: str, columns: Sequence[str], batch_size: int = 2048
) -> Iterator[dict[str, np.ndarray]]:
    """Raw columns and labels of a split, streamed from its Parquet shards in the driver.

    No Ray needed: evaluation reads one split once, sequentially, at Parquet speed; the model, not
    the read, is the cost.
    """
    import pyarrow.dataset as pads

    if not corpus.rows(split):
        raise UserInputError(f"{corpus.path}: the {split!r} split is empty or missing")
    dataset = pads.dataset(corpus.split_path(split), format="parquet")
    wanted = [*columns, "label"]
    for batch in dataset.to_batches(columns=wanted, batch_size=batch_size):
        if batch.num_rows:
            yield {c: batch.column(c).to_numpy(zero_copy_only=False) for c in wanted}


def predict_split(
    predict, corpus: PreparedCorpus, split: str, columns: Sequence[str], batch_size: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """(probs, labels) for a whole split through `predict(columns_dict) -> probs`."""
    probs, labels = [], []
    for batch in split_batches(corpus, split, columns, batch_size):
        labels.append(batch.pop("label"))
        probs.append(predict(batch))
    return np.concatenate(probs), np.concatenate(labels)


# -- compression ---------------------------------------------------------------------------------
def compress(result: ExportResult, corpus: PreparedCorpus) -> ExportResult:
    """Add TFLite variants (dynamic-range int8, float16) with size and test accuracy next to the
    full model's. A variant that cannot convert is reported with the reason, not raised: the
    full SavedModel is what serving needs, the variants are for the edge."""
    from shipyard.training.metrics import classification_metrics

    exported = load_exported(result.path)
    columns = exported.raw_columns
    split = next((s for s in ("test", "validation") if corpus.rows(s)), None)
    key = f"{split}_accuracy"
    full_probs = labels = None
    if split:
        full_probs, labels = predict_split(exported.predict_raw, corpus, split, columns)
        metrics = classification_metrics(full_probs, labels, corpus.num_classes)
        result.test_accuracy = metrics["accuracy"]
    folder = os.path.join(result.path, "tflite")
    os.makedirs(folder, exist_ok=True)
    for name in TFLITE_VARIANTS:
        path = os.path.join(folder, f"model_{name.removeprefix('tflite_')}.tflite")
        started = time.perf_counter()
        try:
            blob = _convert(result.saved_model, float16=name == "tflite_float16")
            with open(path, "wb") as f:
                f.write(blob)
            variant: dict[str, Any] = {"path": path, "bytes": os.path.getsize(path)}
            if split:
                runner = TFLiteRunner(path, exported.signature)
                probs, _ = predict_split(runner.predict, corpus, split, columns, batch_size=256)
                metrics = classification_metrics(probs, labels, corpus.num_classes)
                variant[key] = metrics["accuracy"]
                variant["max_abs_diff_vs_full"] = float(np.max(np.abs(probs - full_probs)))
            variant["seconds"] = round(time.perf_counter() - started, 1)
            result.variants[name] = variant
        except Exception as exc:  # a variant that cannot convert must not fail the run
            if os.path.exists(path):
                os.remove(path)
            result.variants[name] = {"error": f"{type(exc).__name__}: {_first_line(exc)}"}
    described = {"full": {"file": SAVED_MODEL, "bytes": result.bytes, key: result.test_accuracy}}
    for name, variant in result.variants.items():
        described[name] = {k: v for k, v in variant.items() if k != "path"}
        if "path" in variant:
            described[name]["file"] = os.path.relpath(variant["path"], result.path)
    result.signature["variants"] = described
    _write_json(os.path.join(result.path, SIGNATURE), result.signature)
    return result


def _convert(saved_model: str, float16: bool) -> bytes:
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=[SERVING_KEY])
    # String ops, the vocabulary table and ragged n-grams are not TFLite builtins: SELECT_TF_OPS
    # keeps them as TensorFlow kernels (the Flex delegate, linked into TensorFlow's interpreter).
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS,
        tf.lite.OpsSet.SELECT_TF_OPS,
    ]
    converter.optimizations = [tf.lite.Optimize.DEFAULT]  # alone: dynamic-range int8 weights
    if float16:
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


class TFLiteRunner:
    """Runs a converted variant through its signature, one resized batch at a time."""

    def __init__(self, path: str, signature: dict):
        self.interpreter = tf.lite.Interpreter(model_path=path)
        self.runner = self.interpreter.get_signature_runner(SERVING_KEY)
        self.spec: dict[str, str] = signature["serving_input"]

    def predict(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        feed = {}
        for name, dtype in self.spec.items():
            values = batch[name]
            if dtype == "float32":
                feed[name] = np.asarray(values, np.float32)
            else:
                feed[name] = np.array([str(v).encode() for v in values], dtype=object)
        return np.asarray(self.runner(**feed)[OUTPUT])


# -- helpers -------------------------------------------------------------------------------------
def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


def dir_bytes(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files
    )


def _write_json(path: str, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, ensure_ascii=False, default=str)
        f.write("\n")


def _swap_into_place(tmp: str, out: str) -> None:
    old = None
    if os.path.exists(out):
        old = f"{out}.old-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
    os.rename(tmp, out)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0][:300] if lines else type(exc).__name__
