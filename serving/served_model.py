"""One registered model version in a serving replica: loaded once, called on fixed batch sizes.

The export's compiled signature is called directly (never eager `model(x)` or Keras `predict`,
which retrace on every new batch shape). Batches are padded up to a few fixed sizes that are all
run once at start, so the first requests under load pay no tracing or allocation cost, and a
TFLite variant (whose interpreter reallocates its tensors on every shape change) keeps its shapes.
Imports TensorFlow and the light loader only: no Ray, no MLflow.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from shipyard.errors import UserInputError
from shipyard.training.export_loader import ExportedModel
from shipyard.training.signature import OUTPUT


def padded_sizes(max_batch_size: int) -> list[int]:
    """The batch sizes a replica runs: powers of 4 below the largest batch, then the largest.

    Padding wastes at most 3/4 of a batch's rows, and only a handful of shapes exist."""
    sizes, size = [], 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 4
    return [*sizes, max_batch_size]


@dataclass(frozen=True)
class ModelIdentity:
    """What answered: shown in every prediction and in `GET /v1/model`."""

    name: str
    version: int | None
    variant: str
    corpus_content_hash: str
    metrics: dict[str, float]


class ServedModel:
    """Probabilities for validated raw inputs, on the export's signature or a TFLite variant."""

    def __init__(
        self,
        path: str,
        *,
        variant: str = "full",
        max_batch_size: int = 32,
        version: int | None = None,
        metrics: Mapping[str, float] | None = None,
    ):
        self.export = ExportedModel(path)
        signature = self.export.signature
        self.labels: list[str] = list(signature.labels)
        self.columns: dict[str, str] = dict(signature.columns)
        self.sizes = padded_sizes(max_batch_size)
        self.identity = ModelIdentity(
            name=signature.name,
            version=version,
            variant=variant,
            corpus_content_hash=signature.corpus.content_hash,
            metrics=dict(metrics or {}),
        )
        if variant == "full":
            fn = self.export.serving_fn
            self._call = lambda feed: fn(**{k: tf.constant(v) for k, v in feed.items()})[
                OUTPUT
            ].numpy()
        else:
            self._call = self._tflite(variant)
        self.warm_up()

    @property
    def is_text(self) -> bool:
        return list(self.columns) == ["text"]

    def probabilities(self, columns: Mapping[str, list[Any]]) -> np.ndarray:
        """(n, k) class probabilities for n raw inputs given as columns (k = number of labels,
        binary models included)."""
        n = len(next(iter(columns.values())))
        feed = self.export.as_columns(dict(columns))
        out = []
        for start in range(0, n, self.sizes[-1]):
            chunk = {k: v[start : start + self.sizes[-1]] for k, v in feed.items()}
            rows = len(next(iter(chunk.values())))
            size = next(s for s in self.sizes if s >= rows)
            out.append(self._call(_pad(chunk, size))[:rows])
        probs = np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)
        if probs.shape[1] == 1:  # binary exports give P(labels[1])
            probs = np.concatenate([1.0 - probs, probs], axis=1)
        return probs.astype(np.float32, copy=False)

    def warm_up(self) -> None:
        """Run every padded size once, so no request pays for the first call of a shape."""
        blank = {
            name: [0.0 if dtype == "float32" else "warm up"] for name, dtype in self.columns.items()
        }
        for size in self.sizes:
            self.probabilities({k: v * size for k, v in blank.items()})

    def _tflite(self, variant: str):
        from shipyard.training.tflite_variants import TFLiteRunner

        info = self.export.signature.variants.get(variant)
        if info is None or not info.file:
            known = [name for name, v in self.export.signature.variants.items() if v.file]
            raise UserInputError(
                f"serving.variant: {variant!r} is not a variant of this export"
                f" (it has: full{''.join(', ' + k for k in known)})"
            )
        runner = TFLiteRunner(os.path.join(self.export.path, info.file), self.columns)
        return runner.predict


def _pad(feed: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    rows = len(next(iter(feed.values())))
    if rows == size:
        return feed
    return {k: np.concatenate([v, np.repeat(v[-1:], size - rows)]) for k, v in feed.items()}
