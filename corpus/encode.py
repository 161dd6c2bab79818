"""The final stage: rows -> model inputs and their split, run as Ray Data tasks on every node.

Text goes through `arrow_tokenizer`, which gives exactly the ids of the `TextVectorization` the
exported model contains (proven per code point by its tests) without importing TensorFlow in the
workers. Tabular rows stay raw — the model normalizes them itself from the manifest's statistics —
except that missing numbers take the training mean.
"""

from __future__ import annotations

import collections

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shipyard.corpus import arrow_tokenizer
from shipyard.corpus.split import split_column
from shipyard.corpus.tokenizer_settings import TokenizerSettings

_VOCABULARIES: collections.OrderedDict[str, pa.Array] = collections.OrderedDict()


def _vocabulary(vocab_id: str, vocabulary: list[str]) -> pa.Array:
    """A per-process cache of the vocabulary as Arrow (workers are reused across tasks)."""
    array = _VOCABULARIES.get(vocab_id)
    if array is None:
        array = _VOCABULARIES[vocab_id] = pa.array(vocabulary, pa.string())
        while len(_VOCABULARIES) > 2:
            _VOCABULARIES.popitem(last=False)
    return array


def _label_ids(labels: pa.ChunkedArray | pa.Array, index: dict[str, int]) -> pa.Array:
    names = list(index)
    pos = pc.index_in(labels, value_set=pa.array(names, pa.string()))
    ids = np.array([index[n] for n in names], dtype=np.int32)
    return pa.array(ids[pos.to_numpy(zero_copy_only=False).astype(np.int64)])


def tensor_column(ids: np.ndarray) -> pa.Array:
    """(n, length) int32 -> Ray's fixed-shape tensor column, the type `to_tf` reads as a matrix.

    Built straight from the buffers; Ray's generic `from_numpy` copies element-wise and costs
    ~100x more (about half a second per million rows).
    """
    try:
        from ray.air.util.tensor_extensions.arrow import ArrowTensorTypeV2
    except ImportError:  # another Ray layout: the public, slower way
        from ray.data.extensions import ArrowTensorArray

        return ArrowTensorArray.from_numpy(ids)
    n, length = ids.shape
    offsets = pa.array(np.arange(0, n * length + 1, length, dtype=np.int64))
    storage = pa.LargeListArray.from_arrays(offsets, pa.array(ids.reshape(-1)))
    return pa.ExtensionArray.from_storage(ArrowTensorTypeV2((length,), pa.int32()), storage)


def encode_text(
    batch: pa.Table,
    vocab_id: str,
    vocabulary: list[str],
    settings: TokenizerSettings,
    labels: dict[str, int],
    cuts: dict | None,
) -> pa.Table:
    ids = arrow_tokenizer.encode(batch["text"], _vocabulary(vocab_id, vocabulary), settings)
    return pa.table(
        {
            "key": batch["key"],
            "text": batch["text"],
            "ids": tensor_column(ids),
            "label": _label_ids(batch["label"], labels),
            "split": pc.cast(split_column(batch, cuts), pa.string()),
        }
    )


def encode_tabular(batch: pa.Table, stats: dict, labels: dict[str, int], cuts: dict | None):
    columns: dict[str, pa.Array] = {"key": batch["key"]}
    for name, moments in stats["numeric"].items():
        values = pc.fill_null(batch[name], moments["mean"])
        values = pc.if_else(pc.is_nan(values), moments["mean"], values)
        columns[name] = pc.cast(values, pa.float32())
    for name in stats["categorical"]:
        columns[name] = batch[name]
    columns["label"] = _label_ids(batch["label"], labels)
    columns["split"] = pc.cast(split_column(batch, cuts), pa.string())
    return pa.table(columns)
