"""Exact dedup by buckets on disk: every copy of a key meets the others in one bucket."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from shipyard.corpus import clean, dedup


def _keys(n: int) -> pa.Array:
    h = clean.hash64(pa.array([f"doc {i}" for i in range(n)]), "shipyard.dedup.a")
    return clean.hex_keys(h, clean.mix64(h))


def test_buckets_depend_only_on_the_key_and_spread_evenly():
    keys = _keys(40_000)
    batch = pa.table({"key": pa.concat_arrays([keys, pa.array(["~empty", "~too_long", "~e"])])})
    buckets = dedup._with_bucket(batch, 8)["bucket"].to_numpy()
    assert buckets.min() >= 0 and buckets.max() < 8
    counts = np.bincount(buckets[:40_000], minlength=8)
    assert counts.min() > 4_600 and counts.max() < 5_400  # 5,000 each, give or take
    # The same key in another batch, in another position, lands in the same bucket.
    again = dedup._with_bucket(pa.table({"key": keys[::-1]}), 8)["bucket"].to_numpy()
    assert np.array_equal(again[::-1], buckets[:40_000])


def test_bucket_count_grows_with_the_corpus_and_covers_every_cpu():
    assert dedup.bucket_count(1_000, cpus=4) == 4
    assert dedup.bucket_count(10 * dedup.BUCKET_BYTES, cpus=2) == 10
