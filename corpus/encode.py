"""The final stage: rows -> model inputs, run as Ray Data `map_batches` on every node.

Text goes through the same `TextVectorization` the exported model will contain (built once per
actor from the manifest's vocabulary). Tabular rows stay raw — the model normalizes them itself
from the manifest's statistics — except that missing numbers take the training mean.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shipyard.corpus.tokenizer import TokenizerSettings, build_vectorizer, encode


class EncodeText:
    def __init__(self, vocabulary: list[str], settings: TokenizerSettings, labels: dict[str, int]):
        self.vectorizer = build_vectorizer(vocabulary, settings)
        self.labels = labels

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            "key": batch["key"],
            "text": batch["text"],
            "ids": encode(batch["text"], self.vectorizer),
            "label": np.array([self.labels[x] for x in batch["label"]], dtype=np.int32),
            "split": batch["split"],
        }


def encode_tabular(batch: pa.Table, stats: dict, labels: dict[str, int]) -> pa.Table:
    columns: dict[str, pa.Array] = {"key": batch["key"]}
    for name, moments in stats["numeric"].items():
        values = pc.fill_null(batch[name], moments["mean"])
        values = pc.if_else(pc.is_nan(values), moments["mean"], values)
        columns[name] = pc.cast(values, pa.float32())
    for name in stats["categorical"]:
        columns[name] = batch[name]
    columns["label"] = pa.array([labels[x] for x in batch["label"].to_pylist()], pa.int32())
    columns["split"] = batch["split"]
    return pa.table(columns)
