"""How the worker loop reads its settings: shard caching, dense embedding gradients, specs."""

from __future__ import annotations

import tensorflow as tf

from shipyard.training import loop


def _with_embedding(rows: int, dim: int) -> tf.keras.Model:
    inputs = tf.keras.Input((4,), dtype=tf.int32)
    pooled = tf.keras.layers.GlobalAveragePooling1D()(tf.keras.layers.Embedding(rows, dim)(inputs))
    return tf.keras.Model(inputs, tf.keras.layers.Dense(1)(pooled))


def test_small_embedding_tables_are_allreduced_dense_and_large_ones_stay_sparse():
    assert loop._sparse_as_dense("auto", _with_embedding(10_000, 50)) is True
    assert loop._sparse_as_dense("auto", _with_embedding(400_000, 64)) is False  # 25.6M values
    assert loop._sparse_as_dense(False, _with_embedding(10, 2)) is False
    assert loop._sparse_as_dense(True, _with_embedding(400_000, 64)) is True


def test_shards_are_cached_up_to_the_byte_budget():
    schema = {"ids": "int32[64]", "label": "int32"}  # 260 bytes a row
    fits = loop.CACHE_SHARD_BYTES // 260
    assert loop._cache_shard("auto", schema, ["ids", "label"], fits) is True
    assert loop._cache_shard("auto", schema, ["ids", "label"], fits + 1) is False
    assert loop._cache_shard(False, schema, ["ids", "label"], 10) is False


def test_manifest_types_become_batch_tensor_specs():
    assert loop._tensor_spec("int32[64]") == tf.TensorSpec((None, 64), tf.int32)
    assert loop._tensor_spec("string") == tf.TensorSpec((None,), tf.string)
    assert loop._tensor_spec("float32") == tf.TensorSpec((None,), tf.float32)
