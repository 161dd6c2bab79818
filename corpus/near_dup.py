"""Near-duplicate removal with MinHash + LSH on Ray Data, without gathering the corpus anywhere.

Only three small things ever reach the driver: the MinHash parameters, the ids of LSH buckets that
more than one row fell into, and the rows of those buckets. Everything proportional to the corpus
(signatures, bucket ids, the bucket count) stays in Ray Data blocks, so the corpus can be far larger
than driver memory; the signature dataset is materialized once in the object store (which spills to
disk) because both LSH passes read it and MinHash is the expensive step.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import ray

from shipyard.corpus.clean import mix64
from shipyard.errors import UserInputError

# Largest prime below 2**32: with a, b < P and 32-bit shingle hashes, a*x + b < 2**64, so the
# universal hash (a*x + b) mod P is exact in uint64 and every signature slot fits in uint32.
_PRIME = np.uint64(4_294_967_291)
# Not a Unicode code point: pads short texts to one full shingle and never equals real text.
_PAD = np.uint32(0xFFFFFFFF)
_POLY = np.uint64(0x100000001B3)  # odd multiplier of the rolling shingle hash
# Bounds the (perms x shingles) uint64 work array per step (~32 MB) whatever the document sizes.
_WORK_ELEMENTS = 1 << 22
_BATCH_ROWS = 4096
_SIG = "sig"
_BUCKET = "bucket"
_KEY = "key"


def near_duplicate_keys(
    ds: ray.data.Dataset,
    *,
    text_column: str = "text",
    key_column: str = "key",
    threshold: float = 0.8,
    num_perm: int = 64,
    shingle: int = 5,
    seed: int = 0,
) -> set[str]:
    """Keys of rows to drop: for every cluster of near-duplicates (estimated Jaccard >= threshold
    over character `shingle`-grams), all but the row with the smallest key."""
    if not 0.0 < threshold <= 1.0:
        raise UserInputError(f"threshold: must be in (0, 1] (got {threshold})")
    if num_perm < 1:
        raise UserInputError(f"num_perm: must be >= 1 (got {num_perm})")
    if shingle < 1:
        raise UserInputError(f"shingle: must be >= 1 (got {shingle})")
    bands, rows = lsh_bands(threshold, num_perm)
    a, b = _permutations(num_perm, seed)

    def signatures(batch: pa.Table) -> pa.Table:
        sig = minhash_signatures(batch.column(text_column), a, b, shingle)
        slots = pa.FixedSizeListArray.from_arrays(pa.array(sig.ravel(), pa.uint32()), num_perm)
        return pa.table({_KEY: batch.column(key_column), _SIG: slots})

    sigs = ds.select_columns([key_column, text_column]).map_batches(
        signatures, batch_format="pyarrow", batch_size=_BATCH_ROWS
    )
    sigs.set_name("near-dup")  # what its progress bars say (later passes derive from it)
    sigs = sigs.materialize()

    def bucket_ids(batch: pa.Table) -> dict[str, np.ndarray]:
        return {_BUCKET: _band_buckets(_sig_matrix(batch, num_perm), bands, rows).ravel()}

    # Keys are unique and the band index is part of every bucket id, so a bucket holding more than
    # one row holds more than one key: those are the LSH candidates.
    # At most one shuffle partition per signature block (a block's bucket ids are smaller than the
    # block): Ray's default of 200 would drown a small corpus in near-empty tasks.
    partitions = min(
        sigs.num_blocks(), ray.data.DataContext.get_current().default_hash_shuffle_parallelism
    )
    counts = (
        sigs.map_batches(bucket_ids, batch_format="pyarrow", batch_size=_BATCH_ROWS)
        .groupby(_BUCKET, num_partitions=max(1, partitions))
        .count()
    )
    colliding = _colliding_buckets(counts)
    if colliding.size == 0:
        return set()
    colliding_ref = ray.put(colliding)

    def candidate_rows(batch: pa.Table) -> pa.Table:
        sig = _sig_matrix(batch, num_perm)
        buckets = _band_buckets(sig, bands, rows)  # (n, bands)
        wanted = _isin_sorted(buckets, ray.get(colliding_ref))
        row, _ = np.nonzero(wanted)
        take = pa.array(row, type=pa.int64())
        return pa.table(
            {
                _BUCKET: pa.array(buckets[wanted], type=pa.int64()),
                _KEY: batch.column(_KEY).take(take),
                _SIG: batch.column(_SIG).take(take),
            }
        )

    candidates = sigs.map_batches(candidate_rows, batch_format="pyarrow", batch_size=_BATCH_ROWS)
    tables = list(candidates.iter_batches(batch_format="pyarrow", batch_size=None))
    if not tables:
        return set()
    return _cluster_drops(pa.concat_tables(tables), threshold, num_perm)


def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """Bands b and rows r (b * r == num_perm) whose S-curve threshold (1/b)^(1/r) is nearest
    `threshold`: pairs well above it share a bucket almost surely, pairs well below almost never."""
    best = min(
        (abs((1.0 / b) ** (1.0 / (num_perm // b)) - threshold), b)
        for b in range(1, num_perm + 1)
        if num_perm % b == 0
    )
    return best[1], num_perm // best[1]


def minhash_signatures(
    texts: pa.Array | pa.ChunkedArray, a: np.ndarray, b: np.ndarray, shingle: int
) -> np.ndarray:
    """(rows, num_perm) uint32 MinHash of each text's character `shingle`-grams.

    Works on code points, not bytes, so Chinese (no spaces) shingles like any other script. Each
    shingle gets a deterministic 32-bit hash (rolling polynomial + splitmix64 mixing, never
    Python's salted `hash()`), then every permutation is the universal hash (a*x + b) mod P.
    """
    strings = texts.fill_null("").to_pylist()
    n = len(strings)
    lengths = np.fromiter(map(len, strings), dtype=np.int64, count=n)
    points = np.frombuffer("".join(strings).encode("utf-32-le"), dtype=np.uint32)
    text_start = np.concatenate([[0], np.cumsum(lengths)])
    # A text shorter than `shingle` is one shingle: its whole text padded with a non-character.
    windows = np.maximum(lengths - shingle + 1, 1)
    out = np.empty((n, a.size), dtype=np.uint32)
    lo = 0
    while lo < n:
        # Row groups of bounded shingle count keep the work array small even for huge documents.
        hi = int(np.searchsorted(np.cumsum(windows[lo:]), _WORK_ELEMENTS // a.size, "right"))
        hi = lo + max(hi, 1)
        chars = points[text_start[lo] : text_start[hi]]
        x = _shingle_hashes(chars, lengths[lo:hi], windows[lo:hi], shingle)
        firsts = np.concatenate([[0], np.cumsum(windows[lo:hi])[:-1]])
        step = max(1, _WORK_ELEMENTS // x.size)
        for p in range(0, a.size, step):
            # (perms, shingles) layout: reduceat along the contiguous axis is several times faster.
            v = a[p : p + step, None] * x[None, :]
            v += b[p : p + step, None]
            np.remainder(v, _PRIME, out=v)
            out[lo:hi, p : p + step] = np.minimum.reduceat(v, firsts, axis=1).T
        lo = hi
    return out


def _shingle_hashes(
    chars: np.ndarray, lengths: np.ndarray, windows: np.ndarray, shingle: int
) -> np.ndarray:
    """32-bit hash (as uint64) of every shingle of consecutive texts, text after text."""
    n = lengths.size
    # Each text is followed by `shingle` pad slots so no window reaches into the next text.
    stride = lengths + shingle
    slot = np.concatenate([[0], np.cumsum(stride)[:-1]])
    padded = np.full(int(stride.sum()), _PAD, dtype=np.uint32)
    padded[np.arange(chars.size) + shingle * np.repeat(np.arange(n), lengths)] = chars
    first = np.concatenate([[0], np.cumsum(windows)[:-1]])
    starts = np.repeat(slot, windows) + (np.arange(int(windows.sum())) - np.repeat(first, windows))
    h = np.zeros(starts.size, dtype=np.uint64)
    for offset in range(shingle):
        h *= _POLY
        h += padded[starts + offset]
    return mix64(h) >> np.uint64(32)


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded a in [1, P), b in [0, P) for the universal hashes; same seed, same signatures."""
    rng = np.random.default_rng([seed, 0x4D48])
    a = rng.integers(1, _PRIME, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, _PRIME, size=num_perm, dtype=np.uint64)
    return a, b


def _sig_matrix(batch: pa.Table, num_perm: int) -> np.ndarray:
    """(rows, num_perm) view of the fixed-size-list signature column."""
    column = batch.column(_SIG).combine_chunks()
    return column.flatten().to_numpy().reshape(-1, num_perm)


def _band_buckets(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) int64 bucket ids: a hash of (band index, the band's signature values)."""
    h = np.broadcast_to(np.arange(bands, dtype=np.uint64) + np.uint64(1), (sig.shape[0], bands))
    h = mix64(h)
    by_band = sig.reshape(sig.shape[0], bands, rows).astype(np.uint64)
    for j in range(rows):
        h ^= by_band[:, :, j]
        h = mix64(h)
    return h.view(np.int64)


def _colliding_buckets(counts: ray.data.Dataset) -> np.ndarray:
    """Sorted ids of buckets with more than one row: small, since most buckets hold one row."""

    def shared(batch: pa.Table) -> dict[str, np.ndarray]:
        # The count column is the other one; naming it here avoids a schema fetch (an execution).
        count = next(name for name in batch.column_names if name != _BUCKET)
        keep = batch.column(count).to_numpy() > 1
        return {_BUCKET: batch.column(_BUCKET).to_numpy()[keep]}

    parts = [
        batch[_BUCKET]
        for batch in counts.map_batches(shared, batch_format="pyarrow").iter_batches(
            batch_format="numpy", batch_size=None
        )
    ]
    return np.sort(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)


def _isin_sorted(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Elementwise membership in a sorted array, by binary search (no hashing of the set)."""
    at = np.minimum(np.searchsorted(sorted_set, values), sorted_set.size - 1)
    return sorted_set[at] == values


def _cluster_drops(candidates: pa.Table, threshold: float, num_perm: int) -> set[str]:
    """Verify bucket-mates by estimated Jaccard, union-find them, keep each cluster's min key."""
    keys = sorted(set(candidates.column(_KEY).to_pylist()))
    index = {k: i for i, k in enumerate(keys)}
    member = np.fromiter(
        (index[k] for k in candidates.column(_KEY).to_pylist()), np.int64, len(candidates)
    )
    sig = np.empty((len(keys), num_perm), dtype=np.uint32)
    sig[member] = _sig_matrix(candidates, num_perm)
    bucket = candidates.column(_BUCKET).to_numpy()
    # Sorted by (bucket, member) so each bucket's rows are contiguous whatever the block order.
    order = np.lexsort((member, bucket))
    bucket, member = bucket[order], member[order]
    bounds = np.flatnonzero(np.diff(bucket)) + 1
    firsts = np.concatenate([[0], bounds])
    sizes = np.diff(np.concatenate([firsts, [bucket.size]]))
    pairs = [np.stack([member[firsts[sizes == 2]], member[firsts[sizes == 2] + 1]], axis=1)]
    for first, size in zip(firsts[sizes > 2], sizes[sizes > 2], strict=True):
        i, j = np.triu_indices(int(size), 1)
        group = member[first : first + size]
        pairs.append(np.stack([group[i], group[j]], axis=1))
    # A pair sharing several bands is verified once.
    pairs = np.unique(np.concatenate(pairs), axis=0)
    need = threshold * num_perm - 1e-9
    parent = list(range(len(keys)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for lo in range(0, len(pairs), 1 << 16):
        chunk = pairs[lo : lo + (1 << 16)]
        same = (sig[chunk[:, 0]] == sig[chunk[:, 1]]).sum(axis=1) >= need
        for i, j in chunk[same].tolist():
            ri, rj = root(i), root(j)
            # The smaller index (= smaller key, keys are sorted) becomes the root: it is kept.
            parent[max(ri, rj)] = min(ri, rj)
    return {keys[i] for i in range(len(keys)) if root(i) != i}
