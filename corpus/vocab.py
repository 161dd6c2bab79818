"""Statistics learned from the training split only: the vocabulary, numeric moments, categories.

All are distributed partial aggregates: each batch emits a small table of partial results and only
those reach the driver, never the rows. Numeric sums are exact (integers), so the statistics — and
the content hash that covers them — do not depend on how rows fell into batches.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shipyard.corpus import arrow_tokenizer
from shipyard.corpus.tokenizer_settings import OOV, PAD, TokenizerSettings


def _count_tokens(batch: pa.Table, settings: TokenizerSettings) -> pa.Table:
    return arrow_tokenizer.count_tokens(batch["text"], settings)


def build_vocabulary(train_ds, settings: TokenizerSettings) -> list[str]:
    """Top `vocab_size - 2` tokens by frequency (ties by token), leaving room for pad and OOV.

    Workers count tokens per batch; the driver merges the partial counts as they stream in (a
    combiner: memory grows with the number of distinct tokens, never with the corpus). A Ray
    group-by would shuffle through 200 partitions, which costs more than it saves here.
    """
    partials = train_ds.map_batches(
        _count_tokens, fn_args=(settings,), batch_format="pyarrow", batch_size=None
    )
    partials.set_name("vocabulary")  # what its progress bar says
    merged: pa.Table | None = None
    pending: list[pa.Table] = []
    pending_rows = 0
    for batch in partials.iter_batches(batch_format="pyarrow", batch_size=None):
        pending.append(batch)
        pending_rows += batch.num_rows
        if pending_rows > 2_000_000:
            merged = _merge_counts([merged, *pending] if merged is not None else pending)
            pending, pending_rows = [], 0
    tables = ([merged] if merged is not None else []) + pending
    if not tables:
        return []
    counts = _merge_counts(tables)
    order = pc.sort_indices(counts, sort_keys=[("count", "descending"), ("token", "ascending")])
    top = counts.take(order[: settings.vocab_size + 2])["token"].to_pylist()
    vocab = [t.decode("utf-8") for t in top]
    return [t for t in vocab if t not in (PAD, OOV)][: settings.vocab_size - 2]


def _merge_counts(tables: list[pa.Table]) -> pa.Table:
    merged = pa.concat_tables(tables).group_by("token").aggregate([("count", "sum")])
    return merged.select(["token", "count_sum"]).rename_columns(["token", "count"])


# Every finite float64 times 2**SCALE is an integer (the smallest subnormal is 2**-1074), and
# the frexp exponent shift below stays >= 0 with this margin.
_SCALE = 1128


def exact_sum(values: np.ndarray) -> int:
    """sum(values) * 2**_SCALE as an exact Python int: no rounding, so no order dependence."""
    mantissa, exponent = np.frexp(values.astype(np.float64))
    ints = (mantissa * float(1 << 53)).astype(np.int64)  # exact: 53 significant bits
    shift = exponent.astype(np.int64) - 53 + _SCALE
    total = 0
    for s in np.unique(shift):
        total += int(np.sum(ints[shift == s].astype(object))) << int(s)
    return total


def _moments(batch: pa.Table, numeric: list[str], categorical: list[str]) -> pa.Table:
    row: dict[str, list] = {}
    for name in numeric:
        values = batch[name].to_numpy(zero_copy_only=False).astype(np.float64)
        finite = values[np.isfinite(values)]
        row[f"{name}.n"] = [len(finite)]
        # Decimal strings: the exact sums outgrow every Arrow integer type.
        row[f"{name}.sum"] = [str(exact_sum(finite))]
        row[f"{name}.sumsq"] = [str(exact_sum(finite * finite))]
    for name in categorical:
        counts = pc.value_counts(batch[name])
        row[f"{name}.values"] = [counts.field("values").to_pylist()]
        row[f"{name}.counts"] = [counts.field("counts").to_pylist()]
    return pa.table(row)


def tabular_statistics(
    train_ds, numeric: list[str], categorical: list[str], max_categories: int
) -> dict:
    """Mean/std per numeric column and the most frequent categories per categorical column."""
    stats: dict = {"numeric": {}, "categorical": {}}
    n = {c: 0 for c in numeric}
    s = {c: 0 for c in numeric}
    ss = {c: 0 for c in numeric}
    cats: dict[str, dict[str, int]] = {c: {} for c in categorical}
    partials = train_ds.map_batches(
        _moments, fn_args=(numeric, categorical), batch_format="pyarrow"
    )
    partials.set_name("statistics")  # what its progress bar says
    for row in partials.iter_rows():
        for c in numeric:
            n[c] += row[f"{c}.n"]
            s[c] += int(row[f"{c}.sum"])
            ss[c] += int(row[f"{c}.sumsq"])
        for c in categorical:
            for value, count in zip(row[f"{c}.values"], row[f"{c}.counts"], strict=True):
                cats[c][value] = cats[c].get(value, 0) + count
    for c in numeric:
        if n[c]:
            mean = Fraction(s[c], n[c] << _SCALE)
            var = max(Fraction(ss[c], n[c] << _SCALE) - mean * mean, Fraction(0))
            stats["numeric"][c] = {"mean": float(mean), "std": float(np.sqrt(float(var))) or 1.0}
        else:
            stats["numeric"][c] = {"mean": 0.0, "std": 1.0}
    for c in categorical:
        ranked = sorted(cats[c].items(), key=lambda kv: (-kv[1], kv[0]))
        stats["categorical"][c] = [v for v, _ in ranked[:max_categories]]
    return stats
