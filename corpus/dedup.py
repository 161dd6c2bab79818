"""Exact deduplication that streams: an external hash partition on disk, then one bucket at a time.

    cleaned rows -> bucket = hash(key) mod B -> Parquet per bucket (one file per block and bucket)
    -> per bucket: keep one row per key (`clean.dedup_block`) -> Parquet, read back lazily

Every copy of a key lands in the same bucket, so one row per key per bucket is one row per key.
Buckets are sized so that one fits a worker comfortably, and memory stays flat however large the
corpus is: neither the corpus nor a partition of it is held in Ray's object store or in an actor,
unlike Ray's hash shuffle, whose aggregator actors keep their partitions in their heap until the
shuffle ends (measured ~400 MB each for a 130 MB corpus). The later stages read the deduplicated
Parquet several times (profile, split cuts, vocabulary, encoding); from local disk that is cheap.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shipyard.corpus import clean
from shipyard.corpus.memory import release_memory

log = logging.getLogger(__name__)
BUCKET_BYTES = 16 << 20  # of input text per bucket: ~3x that in memory while it is deduplicated
ROWS_PER_FILE = 1 << 16  # deduplicated output: files (so blocks) small enough to spread the work
_HEX_VALUE = np.zeros(256, dtype=np.uint64)
_HEX_VALUE[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint64)


def bucket_count(total_bytes: int, cpus: int) -> int:
    """Enough buckets to keep each small, and at least one per CPU so the work spreads."""
    return max(cpus, math.ceil(total_bytes / BUCKET_BYTES))


def exact(ds, work_dir: str, buckets: int, has_split: bool) -> str:
    """`ds` with one row per key, written as Parquet under `work_dir`; returns its folder."""
    import ray.data

    started = time.perf_counter()
    parts = os.path.join(work_dir, "buckets")
    ds.map_batches(_with_bucket, fn_args=(buckets,), batch_format="pyarrow").write_parquet(
        parts, partition_cols=["bucket"]
    )
    found = sorted(
        int(name.split("=", 1)[1]) for name in os.listdir(parts) if name.startswith("bucket=")
    )
    log.debug("dedup: read, clean, bucket %.2f s", time.perf_counter() - started)
    started = time.perf_counter()
    deduped = os.path.join(work_dir, "deduped")
    rows = ray.data.from_items([{"bucket": b} for b in found], override_num_blocks=len(found))
    rows.set_name("dedup")  # what its progress bar says
    rows.map_batches(
        _dedup_buckets, fn_args=(parts, has_split), batch_format="pyarrow"
    ).write_parquet(deduped, max_rows_per_file=ROWS_PER_FILE)
    shutil.rmtree(parts, ignore_errors=True)
    log.debug("dedup: %d buckets %.2f s", len(found), time.perf_counter() - started)
    return deduped


def persist(ds, work_dir: str) -> str:
    """`ds` written as Parquet under `work_dir` (no dedup); returns its folder."""
    path = os.path.join(work_dir, "rows")
    ds.write_parquet(path, max_rows_per_file=ROWS_PER_FILE)
    return path


def _with_bucket(batch: pa.Table, buckets: int) -> pa.Table:
    """The bucket of each row from the first 16 hex digits of its (uniformly random) key."""
    keys = batch["key"].combine_chunks()
    # Keys are 32 hex characters, except the `~status` keys of unusable rows: pad or cut to 16.
    offsets = np.frombuffer(keys.buffers()[1], np.int32)[keys.offset : keys.offset + len(keys) + 1]
    data = np.frombuffer(keys.buffers()[2], np.uint8)
    value = np.zeros(len(keys), dtype=np.uint64)
    digit = np.zeros(len(keys), dtype=np.uint8)
    for i in range(16):
        at = offsets[:-1] + i
        inside = at < offsets[1:]
        digit[:] = 0
        digit[inside] = data[at[inside]]
        value = (value << np.uint64(4)) | _HEX_VALUE[digit]
    bucket = (value % np.uint64(buckets)).astype(np.int32)
    return batch.append_column("bucket", pa.array(bucket))


def _dedup_buckets(batch: pa.Table, parts: str, has_split: bool) -> pa.Table:
    tables = []
    for bucket in batch["bucket"].to_pylist():
        folder = os.path.join(parts, f"bucket={bucket}")
        files = sorted(os.path.join(folder, f) for f in os.listdir(folder))
        table = pq.read_table(files, partitioning=None)
        tables.append(clean.dedup_block(table, has_split))
        del table
        release_memory()
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]
