"""The profile: one pass over the deduplicated rows that yields every count the manifest reports.

Each batch emits a small table of partial aggregates per (status, label, split) group — rows,
copies merged by dedup, feedback rows kept and those contradicting a source label, the content
digest and the histogram of split draws — and only those reach the driver, which merges them.
Rows dropped by cleaning are still present here (one row per reason, its `copies` the count), so
the same pass counts what was read and why rows were dropped.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shipyard.corpus import clean, split

# What the profile pass reads (those present): everything but the text, key and features.
PROFILE_COLUMNS = ("status", "label", "split", "copies", "rowhash", "extra", "contradicts", "u")


def profile_batch(batch: pa.Table, draw: bool) -> pa.Table:
    """Per (status, label, split) group of a batch: rows, copies, feedback rows kept (and how
    many contradict a source row's label), the content digest, and the histogram of split draws."""
    n = batch.num_rows
    status = batch["status"] if "status" in batch.column_names else pa.array([clean.OK] * n)
    parts = [status, batch["label"]]
    has_split = "split" in batch.column_names
    if has_split:
        parts.append(batch["split"])
    codes = np.zeros(n, dtype=np.int64)
    dictionaries = []
    for part in parts:
        encoded = pc.dictionary_encode(part)
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.unify_dictionaries().combine_chunks()
        dictionaries.append(encoded.dictionary.to_pylist())
        codes = codes * len(dictionaries[-1]) + encoded.indices.to_numpy(zero_copy_only=False)
    combos, codes = np.unique(codes, return_inverse=True)
    k = len(combos)
    rows = np.bincount(codes, minlength=k)
    copies = np.zeros(k, dtype=np.int64)
    np.add.at(copies, codes, batch["copies"].to_numpy())
    digest = np.zeros(k, dtype=np.uint64)
    np.add.at(digest, codes, batch["rowhash"].to_numpy())  # wraps: a sum mod 2**64
    extra = np.zeros(k, dtype=np.int64)
    if "extra" in batch.column_names:
        np.add.at(extra, codes, batch["extra"].to_numpy().astype(np.int64))
    contradicts = np.zeros(k, dtype=np.int64)
    if "contradicts" in batch.column_names:
        np.add.at(contradicts, codes, batch["contradicts"].to_numpy().astype(np.int64))
    hists: list[list[int] | None] = [None] * k
    if draw:
        bins = split.bins_of(batch["u"].to_numpy())
        for g in range(k):
            hists[g] = np.bincount(bins[codes == g], minlength=split.BINS).tolist()
    fields: list[list[str | None]] = []
    for combo in combos.tolist():
        values: list[str | None] = []
        for dictionary in reversed(dictionaries):
            combo, i = divmod(combo, len(dictionary))
            values.append(dictionary[i])
        fields.append(values[::-1] + ([] if has_split else [None]))
    return pa.table(
        {
            "status": [f[0] for f in fields],
            "label": [f[1] for f in fields],
            "split": pa.array([f[2] for f in fields], pa.string()),
            "rows": rows,
            "copies": copies,
            "extra_kept": extra,
            "contradicts": contradicts,
            "digest": pa.array(digest, pa.uint64()),
            "hist": pa.array(hists, pa.list_(pa.int64())),
        }
    )


def profile_of(ds, draw: bool) -> dict:
    """Merge the partial profiles: what was read and dropped, what is kept per label and split."""
    out: dict = {
        "read": 0,
        "dropped": {},
        "kept": 0,
        "labels": set(),
        "split_labels": {},
        "histograms": {},
        "digests": {},
        "extra_kept": 0,
        "contradicts": 0,
    }
    partial = ds.map_batches(profile_batch, fn_args=(draw,), batch_format="pyarrow")
    partial.set_name("profile")  # what its progress bar says
    for batch in partial.iter_batches(batch_format="pyarrow", batch_size=None):
        for row in batch.to_pylist():
            out["read"] += row["copies"]
            if row["status"] != clean.OK:
                out["dropped"][row["status"]] = out["dropped"].get(row["status"], 0) + row["copies"]
                continue
            label, name = row["label"], row["split"] or ""
            out["kept"] += row["rows"]
            out["extra_kept"] += row["extra_kept"]
            out["contradicts"] += row["contradicts"]
            out["labels"].add(label)
            per_label = out["split_labels"].setdefault(name, {})
            per_label[label] = per_label.get(label, 0) + row["rows"]
            key = f"{name}/{label}"
            out["digests"][key] = (out["digests"].get(key, 0) + row["digest"]) % 2**64
            if draw:
                hist = np.asarray(row["hist"], dtype=np.int64)
                out["histograms"][label] = out["histograms"].get(label, 0) + hist
    out["dropped"] = dict(sorted(out["dropped"].items()))
    return out


def describe_drops(dropped: dict) -> str:
    """`{"empty": 3, "no_label": 1}` -> "3 empty, 1 no_label" (for messages)."""
    return ", ".join(f"{v} {k}" for k, v in sorted(dropped.items())) or "no rows read"
