"""Seeded, stratified, exact train/validation/test splits without a global sort.

Each row gets a uniform draw `u` from a hash of its dedup key and the seed, so the assignment of a
document never depends on block order or cluster size. Per label, the rows with the smallest `u`
go to train, the next to validation, the rest to test, with exactly round(n * fraction) rows each.
The cut points are found in two cheap distributed passes: a 4096-bin histogram of `u` per label,
then only the rows inside the bins that hold a cut (about n/4096 of them) reach the driver.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

BINS = 4096
SPLITS = ("train", "validation", "test")


def add_draw(batch: pa.Table, seed: int) -> pa.Table:
    salt = str(seed).encode()
    u = [
        int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8, salt=salt[:16]).digest()) / 2**64
        for k in batch["key"].to_pylist()
    ]
    return batch.append_column("u", pa.array(u, pa.float64()))


def _histogram(batch: pa.Table) -> pa.Table:
    labels = batch["label"].to_numpy(zero_copy_only=False)
    bins = np.minimum((batch["u"].to_numpy() * BINS).astype(np.int64), BINS - 1)
    out_labels, out_hist = [], []
    for label in np.unique(labels):
        out_labels.append(label)
        out_hist.append(np.bincount(bins[labels == label], minlength=BINS).tolist())
    return pa.table({"label": pa.array(out_labels, pa.string()), "hist": out_hist})


def _in_bins(batch: pa.Table, wanted: dict[str, set[int]]) -> pa.Table:
    labels = batch["label"].to_numpy(zero_copy_only=False)
    bins = np.minimum((batch["u"].to_numpy() * BINS).astype(np.int64), BINS - 1)
    keep = np.array(
        [b in wanted.get(lab, ()) for lab, b in zip(labels, bins, strict=True)], dtype=bool
    )
    return batch.select(["label", "u"]).filter(pa.array(keep))


def stratified_cuts(ds, fractions: tuple[float, float]) -> dict[str, tuple[float, float]]:
    """Per label, the draws below which a row is train (first) or train/validation (second)."""
    totals: dict[str, np.ndarray] = {}
    for row in ds.map_batches(_histogram, batch_format="pyarrow").iter_rows():
        hist = np.asarray(row["hist"], dtype=np.int64)
        totals[row["label"]] = totals.get(row["label"], 0) + hist
    ranks: dict[str, list[tuple[int, int, int]]] = {}  # label -> (rank, bin, rank within bin)
    wanted: dict[str, set[int]] = {}
    for label, hist in totals.items():
        n = int(hist.sum())
        cum = np.cumsum(hist)
        for frac in (fractions[0], fractions[0] + fractions[1]):
            rank = round(n * frac)
            if rank >= n:
                ranks.setdefault(label, []).append((rank, -1, 0))
                continue
            b = int(np.searchsorted(cum, rank, side="right"))
            below = int(cum[b - 1]) if b else 0
            ranks.setdefault(label, []).append((rank, b, rank - below))
            wanted.setdefault(label, set()).add(b)
    edge_rows: dict[tuple[str, int], list[float]] = {}
    if wanted:
        for row in ds.map_batches(_in_bins, fn_args=(wanted,), batch_format="pyarrow").iter_rows():
            b = min(int(row["u"] * BINS), BINS - 1)
            edge_rows.setdefault((row["label"], b), []).append(row["u"])
    cuts = {}
    for label, marks in ranks.items():
        values = []
        for _, b, within in marks:
            if b < 0:
                values.append(2.0)  # everything falls below the cut
            else:
                values.append(sorted(edge_rows[(label, b)])[within])
        cuts[label] = (values[0], values[1])
    return cuts


def assign(batch: pa.Table, cuts: dict[str, tuple[float, float]]) -> pa.Table:
    labels = batch["label"].to_pylist()
    u = batch["u"].to_numpy()
    first = np.array([cuts[lab][0] for lab in labels])
    second = np.array([cuts[lab][1] for lab in labels])
    split = np.where(u < first, "train", np.where(u < second, "validation", "test"))
    return batch.drop_columns(["u"]).append_column("split", pa.array(split, pa.string()))


def drop_draw(batch: pa.Table) -> pa.Table:
    return batch.drop_columns(["u"]) if "u" in batch.column_names else batch


def is_split(batch: pa.Table, split: str) -> pa.Table:
    return batch.filter(pc.equal(batch["split"], split))
