"""Load an exported model for inference: TensorFlow, NumPy and the signature, nothing else.

What a serving replica or a notebook imports to predict. It imports no Ray, no corpus code (no
Parquet readers) and no MLflow, and sets no environment variable; the op libraries the signature
names (e.g. `tensorflow_text` for NFKC normalization inside the tokenizer) are imported by name
before the graph is loaded, since TensorFlow cannot load ops it has not seen registered.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from shipyard.errors import UserInputError
from shipyard.training.signature import (
    OUTPUT,
    SAVED_MODEL,
    VECTORIZE_KEY,
    ExportSignature,
    export_root,
    read_signature,
)

# Import names whose pip distribution is spelled differently (for the error message).
PIP_NAMES = {"tensorflow_text": "tensorflow-text"}


class ExportedModel:
    """An export loaded with plain `tf.saved_model.load`, exactly as a serving process would."""

    def __init__(self, path: str):
        self.path = export_root(path)
        self.signature: ExportSignature = read_signature(self.path)
        import_op_libraries(self.signature.op_libraries, self.path)
        self._loaded = tf.saved_model.load(os.path.join(self.path, SAVED_MODEL))
        self.serving_fn = self._loaded.signatures[self.signature.serving_signature]

    @property
    def labels(self) -> list[str]:
        return self.signature.labels

    @property
    def num_classes(self) -> int:
        return self.signature.num_classes

    @property
    def raw_columns(self) -> list[str]:
        """The shard columns that hold this model's raw input."""
        return list(self.signature.columns)

    def predict_raw(self, data: Any, batch_size: int = 256) -> np.ndarray:
        """Probabilities for raw texts (a sequence of str) or raw rows (a list of dicts, or a dict
        of columns). Shape (n, 1) for binary models, (n, k) otherwise."""
        columns = self.as_columns(data)
        n = len(next(iter(columns.values())))
        if n == 0:
            return np.zeros((0, self.signature.width), np.float32)
        out = []
        for start in range(0, n, batch_size):
            feed = {k: tf.constant(v[start : start + batch_size]) for k, v in columns.items()}
            out.append(self.serving_fn(**feed)[OUTPUT].numpy())
        return np.concatenate(out)

    def vectorize(self, texts: Sequence[str]) -> np.ndarray:
        """The token ids the model reads (`ids` models only)."""
        if VECTORIZE_KEY not in self._loaded.signatures:
            raise UserInputError(
                f"{self.path}: no {VECTORIZE_KEY!r} signature (ids models have one; this one reads"
                f" {self.signature.inputs!r})"
            )
        text = tf.constant(np.asarray([str(t) for t in texts], dtype=object))
        return self._loaded.signatures[VECTORIZE_KEY](text=text)["ids"].numpy()

    def as_columns(self, data: Any) -> dict[str, np.ndarray]:
        """Raw input as the signature's tensors: None becomes "" (text, categories) or NaN
        (numbers, which the model fills with the training mean)."""
        spec = self.signature.columns
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


def import_op_libraries(names: Sequence[str], where: str) -> None:
    """Import the modules that register the graph's custom ops; a clear error when one is
    missing (TensorFlow itself would say only "Op type not registered")."""
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise UserInputError(
                f"{where}: the model needs the op library {name!r}, which cannot be imported"
                f" ({exc}); install it: pip install {PIP_NAMES.get(name, name)}"
            ) from None


def load_exported(path: str) -> ExportedModel:
    return ExportedModel(path)


def predict_raw(model: ExportedModel | str, data: Any, batch_size: int = 256) -> np.ndarray:
    """Convenience: probabilities from an export folder or a loaded export."""
    exported = model if isinstance(model, ExportedModel) else load_exported(model)
    return exported.predict_raw(data, batch_size=batch_size)
