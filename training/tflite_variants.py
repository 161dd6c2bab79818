"""TFLite variants of an export (dynamic-range int8, float16), each with its size and accuracy
next to the full model's, measured on the same split.

A variant that cannot convert is reported with the reason, not raised: the full SavedModel is what
serving needs, the variants are for the edge.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from shipyard.errors import first_line
from shipyard.training.export_loader import load_exported
from shipyard.training.signature import OUTPUT, SAVED_MODEL, SERVING_KEY, Variant, write_signature
from shipyard.training.split_stream import predict_split, scoring_split

if TYPE_CHECKING:
    from shipyard.corpus.manifest import PreparedCorpus
    from shipyard.training.export_writer import ExportResult

TFLITE_VARIANTS = ("tflite_int8", "tflite_float16")
FOLDER = "tflite"


def add_tflite_variants(
    result: ExportResult, corpus: PreparedCorpus, names: tuple[str, ...] = TFLITE_VARIANTS
) -> ExportResult:
    """Convert the export's SavedModel (to each of `names`), score each conversion and the full
    model on the test split (validation when there is none), and record it all in the
    signature."""
    from shipyard.training.metrics import classification_metrics

    exported = load_exported(result.path)
    columns = exported.raw_columns
    split = scoring_split(corpus)
    full_probs = labels = None
    if split:
        full_probs, labels = predict_split(exported.predict_raw, corpus, split, columns)
        result.accuracy = classification_metrics(full_probs, labels, corpus.num_classes)["accuracy"]
        result.accuracy_split = split
    os.makedirs(os.path.join(result.path, FOLDER), exist_ok=True)
    for name in names:
        if name not in TFLITE_VARIANTS:
            raise ValueError(f"unknown TFLite variant {name!r} (one of {TFLITE_VARIANTS})")
        file = os.path.join(FOLDER, f"model_{name.removeprefix('tflite_')}.tflite")
        path = os.path.join(result.path, file)
        started = time.perf_counter()
        try:
            blob = convert(result.saved_model, float16=name == "tflite_float16")
            with open(path, "wb") as f:
                f.write(blob)
            variant = Variant(file=file, bytes=os.path.getsize(path))
            if split:
                runner = TFLiteRunner(path, exported.signature.columns)
                probs, _ = predict_split(runner.predict, corpus, split, columns, batch_size=256)
                variant.accuracy = classification_metrics(probs, labels, corpus.num_classes)[
                    "accuracy"
                ]
                variant.accuracy_split = split
                variant.max_abs_diff_vs_full = float(np.max(np.abs(probs - full_probs)))
            variant.seconds = round(time.perf_counter() - started, 1)
        except Exception as exc:  # a variant that cannot convert must not fail the run
            if os.path.exists(path):
                os.remove(path)
            variant = Variant(error=f"{type(exc).__name__}: {first_line(exc)}")
        result.variants[name] = variant
    full = Variant(
        file=SAVED_MODEL, bytes=result.bytes, accuracy=result.accuracy, accuracy_split=split
    )
    result.signature.variants = {"full": full, **result.variants}
    write_signature(result.path, result.signature)
    return result


def convert(saved_model: str, float16: bool) -> bytes:
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

    def __init__(self, path: str, columns: Mapping[str, str]):
        self.interpreter = tf.lite.Interpreter(model_path=path)
        self.runner = self.interpreter.get_signature_runner(SERVING_KEY)
        self.columns = dict(columns)

    def predict(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        feed = {}
        for name, dtype in self.columns.items():
            values = batch[name]
            if dtype == "float32":
                feed[name] = np.asarray(values, np.float32)
            else:
                feed[name] = np.array([str(v).encode() for v in values], dtype=object)
        return np.asarray(self.runner(**feed)[OUTPUT])
