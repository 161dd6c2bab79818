"""Row cleaning: Unicode normalization, control characters, whitespace, labels, dedup keys.

Runs as a vectorized Arrow `map_batches` (pyarrow compute: RE2 regexes in C++; hashes with
pandas' C SipHash), so it streams at close to I/O speed; only NFKC is one C call per non-ASCII row
(see `nfkc`). The text is cleaned exactly as the exported model's TensorFlow tokenizer cleans raw
text (`tokenizer.clean`), so serving input encodes like the shards. Rows that cannot be used
are not silently filtered: they get a `status` ("empty", "too_long", "no_label") and the dedup key
`~status`, so the dedup shuffle collapses them into one row per reason whose `copies` is the
count the summary reports.

Each row also gets, computed once here from its content:
- `key`: 128-bit hash (hex) of what the model sees (lowercased when the tokenizer lowercases), the
  identity for exact dedup and near-dup;
- `u`: a uniform draw from the key and the seed, for the split (so copies of a text share a split
  and a row's split never depends on block order or cluster size);
- `rowhash`: 64-bit hash of the row's exact content and label, summed into the content hash.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shipyard.corpus.tokenizer_settings import FORMAT, TRIM, WHITESPACE, re2_class
from shipyard.errors import UserInputError

OK = "ok"
# pandas' hash_array keys (16 bytes each): two independent SipHash-2-4 runs make the 128-bit key.
_KEY_A, _KEY_B, _KEY_ROW = "shipyard.dedup.a", "shipyard.dedup.b", "shipyard.row.v01"
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)

# Code points (inclusive ranges) that NFKC leaves alone in TensorFlow Text 2.15 (its ICU knows
# Unicode 12's mappings) but Python's unicodedata (Unicode 14 in Python 3.11) maps or composes:
# U+A7F2..A7F4, U+AB69 and U+10781..107BA (modifier letters), U+1FBF0..1FBF9 (segmented digits),
# and U+11930, which Python composes after U+11935 (Dives Akuru). `nfkc` keeps them as they are
# (to ICU they are starters that nothing joins), so the shards match the exported model.
# tests/corpus/test_nfkc.py finds the list anew and fails with it when either side changes.
NFKC_KEPT: tuple[tuple[int, int], ...] = (
    (0xA7F2, 0xA7F4),
    (0xAB69, 0xAB69),
    (0x10781, 0x10785),
    (0x10787, 0x107B0),
    (0x107B2, 0x107BA),
    (0x11930, 0x11930),
    (0x1FBF0, 0x1FBF9),
)


def clean_text(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Format characters removed, NFKC, controls and whitespace runs to one space, trimmed.

    Nulls become empty strings. Format characters and NFKC only concern non-ASCII rows, so only
    those pay for them (most rows of most corpora are ASCII). Format characters go first so that
    the result is stable: cleaning cleaned text changes nothing (a soft hyphen between a letter
    and its accent would otherwise keep them apart until a second NFKC joins them).
    """
    text = pc.fill_null(pc.cast(values, pa.string()), "")
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    wide = pc.invert(pc.string_is_ascii(text))
    if pc.any(wide).as_py():
        sub = nfkc(pc.replace_substring_regex(pc.filter(text, wide), FORMAT, ""))
        text = pc.replace_with_mask(text, wide, sub)
    text = pc.replace_substring_regex(text, WHITESPACE, " ")
    return pc.replace_substring_regex(text, TRIM, "")


def nfkc(texts: pa.Array, kept: tuple[tuple[int, int], ...] = NFKC_KEPT) -> pa.Array:
    """Unicode NFKC of each string as TensorFlow Text computes it, `kept` code points untouched.

    Not Arrow's `utf8_normalize`: in pyarrow 25 it only decomposes, so its "NFKC" is NFKD (apache/
    arrow#51225, fixed after 25.0.1): "é" comes out as "e" + U+0301. Python's `unicodedata` is
    one C call per string.
    """
    out = [unicodedata.normalize("NFKC", s) for s in texts.to_pylist()]
    if kept:
        marked = pc.match_substring_regex(texts, re2_class(kept)).to_numpy(zero_copy_only=False)
        if marked.any():
            split = _splitter(kept)
            for i in np.flatnonzero(marked):  # normalize around them: they are starters to ICU
                parts = split(texts[i].as_py())
                parts[::2] = [unicodedata.normalize("NFKC", p) for p in parts[::2]]
                out[i] = "".join(parts)
    return pa.array(out, pa.string())


def _splitter(ranges: tuple[tuple[int, int], ...]):
    """`re.split` at each code point of `ranges`, keeping them (odd positions of the result)."""
    parts = [f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges]
    return re.compile("([" + "".join(parts) + "])").split


def hash64(values: pa.Array, key: str) -> np.ndarray:
    """SipHash-2-4 of each UTF-8 string under a 16-byte key (uint64), deterministic everywhere."""
    import pandas as pd

    return pd.util.hash_array(
        values.to_numpy(zero_copy_only=False), hash_key=key, categorize=False
    ).astype(np.uint64, copy=False)


def hex_keys(a: np.ndarray, b: np.ndarray) -> pa.Array:
    """Two uint64 per row -> 32-character lowercase hex strings, built straight into Arrow."""
    n = len(a)
    raw = np.empty((n, 2), dtype=">u8")
    raw[:, 0], raw[:, 1] = a, b
    nibbles = raw.view(np.uint8).reshape(n, 16)
    chars = np.empty((n, 32), dtype=np.uint8)
    chars[:, 0::2] = _HEX[nibbles >> 4]
    chars[:, 1::2] = _HEX[nibbles & 15]
    offsets = np.arange(0, 32 * n + 1, 32, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars))


def mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer (uint64, wrapping): spreads every input bit over the output."""
    z = np.asarray(z, dtype=np.uint64).copy()
    with np.errstate(over="ignore"):
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return z


def draws(h: np.ndarray, seed: int) -> np.ndarray:
    """Uniform [0, 1) per row from a content hash and the seed: 53 random bits, exact in float64."""
    salt = mix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64) ^ np.uint64(0x5EED))
    return (mix64(h ^ salt) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


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
    seed: int = 0
    draw: bool = True  # add `u` for a seeded split (not when the source ships its splits)
    extra: bool | None = None  # add an `extra` flag column (True for feedback rows)
    default_split: str | None = None  # `split` for rows whose source has none (feedback rows)


def clean_batch(batch: pa.Table, opts: CleanOptions) -> pa.Table:
    for name in filter(None, (opts.text_column, opts.label_column)):
        if name not in batch.column_names:
            raise UserInputError(
                f"{_source_of(batch, 0)}: no column {name!r}"
                f" (columns: {', '.join(c for c in batch.column_names if c != 'source')})"
            )
    labels = pc.utf8_trim_whitespace(pc.cast(batch[opts.label_column], pa.string()))
    no_label = pc.fill_null(pc.equal(labels, ""), True).to_numpy(zero_copy_only=False)
    labels = pc.fill_null(labels, "")
    if isinstance(labels, pa.ChunkedArray):
        labels = labels.combine_chunks()
    if opts.label_map is not None:
        _check_labels(labels, no_label, batch, dict(opts.label_map))
    status = np.where(no_label, "no_label", OK).astype(object)
    columns: dict[str, pa.Array] = {}
    if opts.kind == "text":
        text = clean_text(batch[opts.text_column])
        length = pc.utf8_length(text).to_numpy(zero_copy_only=False)
        status = np.where(length > opts.max_chars, "too_long", status)
        status = np.where(length < max(opts.min_chars, 1), "empty", status)
        seen = pc.utf8_lower(text) if opts.lowercase else text
        a, b = hash64(seen, _KEY_A), hash64(seen, _KEY_B)
        exact = hash64(text, _KEY_ROW) if opts.lowercase else a ^ b
        columns["text"] = text
    else:
        for name in opts.numeric:
            columns[name] = _numeric(batch[name], name, batch)
        for name in opts.categorical:
            col = pc.utf8_trim_whitespace(pc.cast(batch[name], pa.string()))
            columns[name] = pc.fill_null(col, "")
        joined = pc.binary_join_element_wise(
            *[pc.fill_null(pc.cast(c, pa.string()), "") for c in columns.values()], "\x1f"
        )
        a, b = hash64(joined, _KEY_A), hash64(joined, _KEY_B)
        exact = a ^ b
    dropped = status != OK
    keys = hex_keys(a, b)
    if dropped.any():
        keys = pc.if_else(pa.array(dropped), pa.array(np.char.add("~", status.astype(str))), keys)
        if opts.kind == "text":  # do not drag the payload of dropped rows through the shuffle
            columns["text"] = pc.if_else(pa.array(dropped), "", columns["text"])
    label_hash = hash64(labels, _KEY_ROW)
    with np.errstate(over="ignore"):
        rowhash = mix64(exact * np.uint64(0x9E3779B97F4A7C15) + label_hash)
    out = {"key": keys, **columns, "label": labels}
    out["status"] = pa.array(status.astype(str), pa.string())
    out["copies"] = pa.array(np.ones(batch.num_rows, dtype=np.int64))
    out["rowhash"] = pa.array(rowhash, pa.uint64())
    if opts.draw:
        out["u"] = pa.array(draws(a, opts.seed), pa.float64())
    if "split" in batch.column_names:
        out["split"] = batch["split"]
    elif opts.default_split:
        out["split"] = pa.array([opts.default_split] * batch.num_rows, pa.string())
    if opts.extra is not None:
        out["extra"] = pa.array(np.full(batch.num_rows, opts.extra))
    return pa.table(out)


def _source_of(batch: pa.Table, i: int) -> str:
    return batch["source"][i].as_py() if "source" in batch.column_names else "the source"


class BadValue(UserInputError):
    """A value that cannot be used, raised inside a Ray task; the driver adds its line number."""

    def __init__(self, path: str, column: str, value: str, problem: str):
        self.path, self.column, self.value, self.problem = path, column, value, problem
        super().__init__(f"{path}: {problem}")

    def __reduce__(self):  # survive pickling between processes with all four fields
        return (type(self), (self.path, self.column, self.value, self.problem))


def _numeric(column: pa.ChunkedArray, name: str, batch: pa.Table) -> pa.Array:
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        return pc.cast(column, pa.float64())
    text = pc.utf8_trim_whitespace(pc.cast(column, pa.string()))
    text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)  # blank: missing
    try:
        return pc.cast(text, pa.float64())
    except pa.ArrowInvalid:
        values = text.to_pylist()
        for i, v in enumerate(values):
            try:
                float(v if v is not None else "nan")
            except ValueError:
                raise BadValue(
                    _source_of(batch, i),
                    name,
                    v,
                    f"column {name!r} is numeric but has {v!r}"
                    " (list it in data.categorical_columns if it is a category)",
                ) from None
        raise


def _check_labels(labels: pa.Array, no_label: np.ndarray, batch: pa.Table, mapping: dict) -> None:
    known = pc.is_in(labels, value_set=pa.array(list(mapping), pa.string()))
    bad = ~known.to_numpy(zero_copy_only=False) & ~no_label
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = labels[i].as_py()
        raise BadValue(
            _source_of(batch, i),
            "label",
            value,
            f"label {value!r} is not in data.label_map (known: {', '.join(sorted(mapping))})",
        )


SPLIT_RANK = {"test": 0, "validation": 1, "train": 2}


def dedup_block(block: pa.Table, has_split: bool) -> pa.Table:
    """Keep one row per key within a hash partition (every copy of a key lands in the same one).

    The survivor is chosen by content, not arrival order, so the result does not depend on block
    layout: the evaluation split first when the source ships splits (a text in both train and
    test stays in test), then a feedback row over a source row (its label is the newer
    judgement), then the smallest label and text. `copies` becomes the number of rows merged.
    With feedback rows, `contradicts` marks a kept row whose key also has a source row with
    another label: feedback that disagrees with the corpus, which `prepare` counts and reports.
    """
    if block.num_rows == 0:
        return block
    order: list[tuple[str, str]] = [("key", "ascending")]
    work = block
    if has_split:
        rank = pc.index_in(block["split"], value_set=pa.array(list(SPLIT_RANK)))
        work = work.append_column("_rank", rank)
        order.append(("_rank", "ascending"))
    if "extra" in block.column_names:
        order.append(("extra", "descending"))
    order.append(("label", "ascending"))
    if "text" in block.column_names:
        order.append(("text", "ascending"))
    work = work.take(pc.sort_indices(work, sort_keys=order))
    keys = work["key"].combine_chunks()
    first = np.ones(len(keys), dtype=bool)
    if len(keys) > 1:
        first[1:] = pc.not_equal(keys[1:], keys[:-1]).to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(first)
    copies = np.add.reduceat(work["copies"].to_numpy(), starts)
    kept = work.take(pa.array(starts))
    kept = kept.set_column(kept.schema.get_field_index("copies"), "copies", pa.array(copies))
    if "extra" in work.column_names:
        kept = kept.append_column("contradicts", _contradictions(work, starts))
    return kept.drop_columns(["_rank"]) if has_split else kept


def _contradictions(work: pa.Table, starts: np.ndarray) -> pa.Array:
    """Per key group (rows sorted by key, groups beginning at `starts`): does a feedback row's
    label differ from a source row's? Only groups holding both kinds are looked at (feedback is
    small), one Python comparison each."""
    extra = work["extra"].to_numpy(zero_copy_only=False).astype(np.int64)
    sizes = np.diff(np.append(starts, len(extra)))
    n_extra = np.add.reduceat(extra, starts)
    out = np.zeros(len(starts), dtype=bool)
    mixed = np.flatnonzero((n_extra > 0) & (n_extra < sizes))
    if len(mixed):
        labels = work["label"].to_pylist()
        for g in mixed:
            lo, hi = starts[g], starts[g] + sizes[g]
            fed = {labels[i] for i in range(lo, hi) if extra[i]}
            source = {labels[i] for i in range(lo, hi) if not extra[i]}
            out[g] = bool(fed - source or source - fed)
    return pa.array(out)
