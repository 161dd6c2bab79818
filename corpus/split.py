"""Seeded, stratified, exact train/validation/test splits without a global sort.

Each row carries a uniform draw `u` made from its dedup key and the seed (see `clean.draws`), so
the assignment of a document never depends on block order or cluster size, and copies of a text
always share a split. Per label, the rows with the smallest `u` go to train, the next to
validation, the rest to test, with exactly round(n * fraction) rows each. The cut points come from
a 4096-bin histogram of `u` per label (gathered with the corpus profile), then only the rows
inside the bins that hold a cut (about n/4096 of them) reach the driver.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

BINS = 4096
SPLITS = ("train", "validation", "test")


def bins_of(u: np.ndarray) -> np.ndarray:
    return np.minimum((u * BINS).astype(np.int64), BINS - 1)


def _in_bins(batch: pa.Table, wanted: dict[str, list[int]]) -> pa.Table:
    labels = batch["label"]
    keep = np.zeros(batch.num_rows, dtype=bool)
    bins = bins_of(batch["u"].to_numpy())
    for label, wanted_bins in wanted.items():
        is_label = pc.equal(labels, label).to_numpy(zero_copy_only=False)
        keep |= is_label & np.isin(bins, wanted_bins)
    return batch.select(["label", "u"]).filter(pa.array(keep))


def stratified_cuts(
    ds, histograms: dict[str, np.ndarray], fractions: tuple[float, float]
) -> dict[str, tuple[float, float]]:
    """Per label, the draws below which a row is train (first) or train/validation (second)."""
    ranks: dict[str, list[tuple[int, int]]] = {}  # label -> [(bin, rank within bin)]
    wanted: dict[str, list[int]] = {}
    for label, hist in histograms.items():
        n = int(hist.sum())
        cum = np.cumsum(hist)
        for frac in (fractions[0], fractions[0] + fractions[1]):
            rank = round(n * frac)
            if rank >= n:
                ranks.setdefault(label, []).append((-1, 0))
                continue
            b = int(np.searchsorted(cum, rank, side="right"))
            below = int(cum[b - 1]) if b else 0
            ranks.setdefault(label, []).append((b, rank - below))
            wanted.setdefault(label, []).append(b)
    edge_rows: dict[tuple[str, int], list[float]] = {}
    if wanted:
        found = ds.map_batches(_in_bins, fn_args=(wanted,), batch_format="pyarrow")
        found.set_name("split")  # what its progress bar says
        for batch in found.iter_batches(batch_format="pyarrow", batch_size=None):
            for label, u in zip(batch["label"].to_pylist(), batch["u"].to_pylist(), strict=True):
                edge_rows.setdefault((label, min(int(u * BINS), BINS - 1)), []).append(u)
    cuts = {}
    for label, marks in ranks.items():
        values = []
        for b, within in marks:
            # 2.0: every draw falls below the cut.
            values.append(2.0 if b < 0 else sorted(edge_rows[(label, b)])[within])
        cuts[label] = (values[0], values[1])
    return cuts


def split_counts(
    histograms: dict[str, np.ndarray], fractions: tuple[float, float]
) -> dict[str, dict[str, int]]:
    """Rows per split and label that `stratified_cuts` produces: exact by construction."""
    counts: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    for label, hist in sorted(histograms.items()):
        n = int(hist.sum())
        first = min(n, round(n * fractions[0]))
        second = min(n, round(n * (fractions[0] + fractions[1])))
        for name, rows in zip(SPLITS, (first, second - first, n - second), strict=True):
            counts[name][label] = rows
    return counts


def split_column(batch: pa.Table, cuts: dict[str, tuple[float, float]] | None) -> pa.Array:
    """The split of every row: from the draw and the cuts, or the source's own `split`."""
    if cuts is None:
        return batch["split"]
    labels = list(cuts)
    index = pc.index_in(batch["label"], value_set=pa.array(labels, pa.string()))
    index = pc.fill_null(index, 0).to_numpy(zero_copy_only=False)
    first = np.array([cuts[lab][0] for lab in labels])[index]
    second = np.array([cuts[lab][1] for lab in labels])[index]
    u = batch["u"].to_numpy()
    names = np.array(SPLITS, dtype=object)
    which = np.where(u < first, 0, np.where(u < second, 1, 2))
    return pa.DictionaryArray.from_arrays(pa.array(which, pa.int8()), pa.array(names))


def is_split(batch: pa.Table, split: str, cuts: dict | None) -> pa.Table:
    return batch.filter(pc.equal(pc.cast(split_column(batch, cuts), pa.string()), split))
