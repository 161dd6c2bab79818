"""Row cleaning: Unicode normalization, control characters, whitespace, labels, dedup keys.

Runs as a vectorized Arrow `map_batches` (pyarrow compute uses RE2 and ICU-free NFKC in C++), so it
streams at close to I/O speed. Rows that cannot be used are not silently filtered: they get a
`status` ("empty", "too_long", "no_label") and the dedup key `~status`, so the dedup shuffle
collapses them into one row per reason whose `copies` is the count the summary reports.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shipyard.errors import UserInputError

OK = "ok"
# C0/C1 controls (U+0085 included), line/paragraph separators -> space; format chars vanish.
CONTROL = r"[\p{Cc}\p{Zl}\p{Zp}]"
FORMAT = r"\p{Cf}"
SPACES = r"[\s\p{Zs}]+"


def clean_text(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """NFKC, controls removed, whitespace collapsed and trimmed. Nulls become empty strings."""
    text = pc.fill_null(pc.cast(values, pa.string()), "")
    text = pc.utf8_normalize(text, "NFKC")
    text = pc.replace_substring_regex(text, CONTROL, " ")
    text = pc.replace_substring_regex(text, FORMAT, "")
    text = pc.replace_substring_regex(text, SPACES, " ")
    return pc.utf8_trim_whitespace(text)


def text_keys(texts: list[str], lowercase: bool) -> list[str]:
    """Identity of a document for exact dedup: what the model sees, so case differences merge
    when the tokenizer lowercases anyway."""
    if lowercase:
        texts = [t.lower() for t in texts]
    return [hashlib.blake2b(t.encode(), digest_size=16).hexdigest() for t in texts]


def row_keys(table: pa.Table, columns: list[str]) -> list[str]:
    """Identity of a tabular row: every feature value, in column order."""
    parts = [pc.cast(table[c], pa.string()).to_pylist() for c in columns]
    return [
        hashlib.blake2b(
            "\x1f".join("" if v is None else v for v in row).encode(), digest_size=16
        ).hexdigest()
        for row in zip(*parts, strict=True)
    ]


@dataclass(frozen=True)
class CleanOptions:
    kind: str
    text_column: str | None
    label_column: str
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    label_map: tuple[tuple[str, int], ...] | None = None
    lowercase: bool = True
    min_chars: int = 1
    max_chars: int = 5_000


def clean_batch(batch: pa.Table, opts: CleanOptions) -> pa.Table:
    labels = pc.utf8_trim_whitespace(pc.cast(batch[opts.label_column], pa.string()))
    no_label = pc.fill_null(pc.equal(labels, ""), True).to_numpy(zero_copy_only=False)
    labels = pc.fill_null(labels, "")
    if opts.label_map is not None:
        _check_labels(labels, no_label, batch, dict(opts.label_map))
    status = np.where(no_label, "no_label", OK).astype(object)
    columns: dict[str, pa.Array] = {}
    if opts.kind == "text":
        text = clean_text(batch[opts.text_column])
        length = pc.utf8_length(text).to_numpy(zero_copy_only=False)
        status = np.where(length > opts.max_chars, "too_long", status)
        status = np.where(length < max(opts.min_chars, 1), "empty", status)
        keys = np.array(text_keys(text.to_pylist(), opts.lowercase), dtype=object)
        columns["text"] = text
    else:
        for name in opts.numeric:
            columns[name] = _numeric(batch[name], name, batch)
        for name in opts.categorical:
            col = pc.utf8_trim_whitespace(pc.cast(batch[name], pa.string()))
            columns[name] = pc.fill_null(col, "")
        keys = np.array(row_keys(pa.table(columns), list(columns)), dtype=object)
    dropped = status != OK
    keys[dropped] = "~" + status[dropped]
    if opts.kind == "text":  # do not drag the payload of dropped rows through the shuffle
        columns["text"] = pc.if_else(pa.array(dropped), "", columns["text"])
    out = {"key": pa.array(keys, pa.string()), **columns, "label": labels}
    out["status"] = pa.array(status, pa.string())
    out["copies"] = pa.array(np.ones(batch.num_rows, dtype=np.int64))
    if "split" in batch.column_names:
        out["split"] = batch["split"]
    return pa.table(out)


def _numeric(column: pa.ChunkedArray, name: str, batch: pa.Table) -> pa.Array:
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return pc.cast(column, pa.float64())
    try:
        return pc.cast(pc.utf8_trim_whitespace(pc.cast(column, pa.string())), pa.float64())
    except pa.ArrowInvalid:
        values = column.to_pylist()
        for i, v in enumerate(values):
            try:
                float(v)
            except (TypeError, ValueError):
                source = batch["source"][i].as_py() if "source" in batch.column_names else "?"
                raise UserInputError(
                    f"{source}: column {name!r} is numeric but has {v!r}"
                    " (list it in data.categorical_columns if it is a category)"
                ) from None
        raise


def _check_labels(labels: pa.Array, no_label: np.ndarray, batch: pa.Table, mapping: dict) -> None:
    known = pc.is_in(labels, value_set=pa.array(list(mapping), pa.string()))
    bad = ~known.to_numpy(zero_copy_only=False) & ~no_label
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        source = batch["source"][i].as_py() if "source" in batch.column_names else "the source"
        raise UserInputError(
            f"{source}: label {labels[i].as_py()!r} is not in data.label_map"
            f" (known: {', '.join(sorted(mapping))})"
        )


def dedup_block(block, has_split: bool):
    """Keep one row per key within a hash partition (every copy of a key lands in the same one).

    The survivor is chosen by content, not arrival order — the evaluation split first when the
    source ships splits (a text in both train and test stays in test), then the smallest label and
    text — so the result does not depend on block layout.
    """
    import pandas as pd

    order = ["key", "label"] + (["text"] if "text" in block.columns else [])
    if has_split:
        block = block.assign(_rank=block["split"].map({"test": 0, "validation": 1, "train": 2}))
        order = ["key", "_rank", *order[1:]]
    block = block.sort_values(order, kind="stable")
    copies = block.groupby("key", sort=False)["copies"].sum()
    kept = block.drop_duplicates("key", keep="first").set_index("key")
    kept["copies"] = copies
    kept = kept.reset_index()
    return kept.drop(columns=["_rank"]) if has_split else pd.DataFrame(kept)
