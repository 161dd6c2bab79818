"""The tokenizer again, in Arrow compute instead of TensorFlow, for the workers that build shards.

Counting the vocabulary and encoding the shards are the only corpus steps that tokenize. Doing it
with the exported model's `TextVectorization` costs every Ray worker a TensorFlow import (~3 s and
~480 MB); the same regexes run in Arrow's RE2, lowercasing in utf8proc, and the split and vocabulary
lookup in vectorized Arrow/NumPy, so `prepare` needs no TensorFlow at all.

It reads text that `clean.clean_text` cleaned (NFKC included); the model's standardize functions
first clean raw text the same way (`tokenizer.clean`, compared per code point by
`tests/corpus/test_nfkc.py`) and then do what this module does.

Why the two agree: every step of the standardize function acts on each code point alone (the
punctuation/CJK regexes replace single code points or runs of one class, lowercasing
maps code point to code point), and splitting cuts at spaces or between code points. So
comparing the two implementations on every Unicode scalar value proves them equal on any text
made of the code points where they agree. `tests/corpus/test_arrow_tokenizer.py` runs that
comparison in every mode. Where they do not agree — ICU's full and context-dependent lowercasing
(U+0130 becomes two code points; a final capital sigma becomes ς), characters the two RE2 builds
classify by different Unicode versions — the code points are listed in `DIVERGENT`, and rows
holding any of them are tokenized by TensorFlow itself (imported only when such a row shows up).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shipyard.corpus.tokenizer_settings import CJK, FORMAT, TokenizerSettings, re2_class

# Code points (inclusive ranges) that Arrow and TensorFlow 2.15 (ICU lowercasing, its RE2)
# standardize differently in some mode, as found by tests/corpus/test_arrow_tokenizer.py, which
# fails with the new list when an upgrade of either side changes it: U+0130 (ICU lowercases it
# to two code points), U+03A3 (ICU's Final_Sigma: "ΟΔΟΣ" ends in ς), characters new in Unicode
# 15-16 that one side's tables do not know yet, and noncharacters (U+FDD0.., U+xFFFE/F).
DIVERGENT: tuple[tuple[int, int], ...] = (
    (0x0130, 0x0130),
    (0x03A3, 0x03A3),
    (0x1C89, 0x1C89),
    (0x2C2F, 0x2C2F),
    (0x2FFC, 0x2FFF),
    (0x31EF, 0x31EF),
    (0xA7C0, 0xA7C0),
    (0xA7CB, 0xA7CC),
    (0xA7CE, 0xA7CE),
    (0xA7D0, 0xA7D0),
    (0xA7D2, 0xA7D2),
    (0xA7D4, 0xA7D4),
    (0xA7D6, 0xA7D6),
    (0xA7D8, 0xA7D8),
    (0xA7DA, 0xA7DA),
    (0xA7DC, 0xA7DC),
    (0xFDD0, 0xFDEF),
    (0xFFFE, 0xFFFF),
    (0x10570, 0x1057A),
    (0x1057C, 0x1058A),
    (0x1058C, 0x10592),
    (0x10594, 0x10595),
    (0x10D50, 0x10D65),
    (0x16EA0, 0x16EB8),
    (0x1FFFE, 0x1FFFF),
    (0x2EBF0, 0x2EE5D),
    (0x2FFFE, 0x2FFFF),
    (0x3FFFE, 0x3FFFF),
    (0x4FFFE, 0x4FFFF),
    (0x5FFFE, 0x5FFFF),
    (0x6FFFE, 0x6FFFF),
    (0x7FFFE, 0x7FFFF),
    (0x8FFFE, 0x8FFFF),
    (0x9FFFE, 0x9FFFF),
    (0xAFFFE, 0xAFFFF),
    (0xBFFFE, 0xBFFFF),
    (0xCFFFE, 0xCFFFF),
    (0xDFFFE, 0xDFFFF),
    (0xEFFFE, 0xEFFFF),
    (0xFFFFE, 0xFFFFF),
    (0x10FFFE, 0x10FFFF),
)


_DIVERGENT_RE = re2_class(DIVERGENT)


# One pass for what the TensorFlow side does in two (separators, then punctuation after
# lowercasing): every such code point becomes a space. It matches only what must change — a lone
# ASCII space is left alone instead of being rewritten at every word boundary — and the
# per-code-point test proves the reordering around lowercasing changes nothing.
_TO_SPACE = r"[^\P{Z} ]|[\p{Cc}\p{P}\p{S}]"


def standardize(texts: pa.Array, settings: TokenizerSettings) -> pa.Array:
    """What `tokenizer.standardize_*` computes after cleaning: format characters dropped,
    separators, controls, punctuation and symbols to spaces, lowercased; CJK characters spaced
    apart (cjk) or every space dropped (char)."""
    x = texts
    if pc.all(pc.string_is_ascii(x)).as_py() is False:  # some row is not pure ASCII
        x = pc.replace_substring_regex(x, FORMAT, "")  # no ASCII character is a format character
    x = pc.replace_substring_regex(x, _TO_SPACE, " ")
    if settings.lowercase:
        x = pc.utf8_lower(x)
    if settings.mode == "cjk":
        x = pc.replace_substring_regex(x, CJK, r" \1 ")
    elif settings.mode == "char":
        x = pc.replace_substring_regex(x, r"\s+", "")
    return x


def tokens(texts: pa.Array, settings: TokenizerSettings) -> tuple[pa.Array, np.ndarray]:
    """Every token of `texts` in order (flat) and the row each came from (ascending)."""
    x = _contiguous(standardize(texts, settings))
    if settings.mode == "char":
        return _code_points(x)
    parts = pc.split_pattern(x, " ")
    flat, parents = pc.list_flatten(parts), pc.list_parent_indices(parts)
    nonempty = pc.greater(pc.binary_length(flat), 0)
    return flat.filter(nonempty), parents.filter(nonempty).to_numpy()


def count_tokens(texts: pa.Array, settings: TokenizerSettings) -> pa.Table:
    """Distinct tokens (binary) and how often each occurs, as `tokenizer.count_tokens`."""
    texts = _contiguous(texts)
    odd = _divergent(texts)
    parts = []
    if odd is not None:
        from shipyard.corpus import tokenizer  # TensorFlow, for the few rows that need it

        values, counts = tokenizer.count_tokens(texts.filter(odd).to_numpy(False), settings)
        parts.append(pa.table({"token": pa.array(values, pa.binary()), "count": counts}))
        texts = texts.filter(pc.invert(odd))
    flat, _ = tokens(texts, settings)
    counted = pc.value_counts(flat)
    parts.append(
        pa.table(
            {
                "token": pc.cast(counted.field("values"), pa.binary()),
                "count": counted.field("counts"),
            }
        )
    )
    if len(parts) == 1:
        return parts[0]
    merged = pa.concat_tables(parts).group_by("token").aggregate([("count", "sum")])
    return merged.rename_columns(["token", "count"])


def encode(texts: pa.Array, vocabulary: pa.Array, settings: TokenizerSettings) -> np.ndarray:
    """(rows, sequence_length) int32 ids, as the vectorizer gives them: 0 pads, 1 is out of
    vocabulary, `vocabulary[i]` is i + 2; the first `sequence_length` tokens of each row."""
    texts = _contiguous(texts)
    n, length = len(texts), settings.sequence_length
    out = np.zeros((n, length), dtype=np.int32)
    odd = _divergent(texts)
    rows = np.arange(n)
    if odd is not None:
        from shipyard.corpus import tokenizer  # TensorFlow, for the few rows that need it

        mask = odd.to_numpy(zero_copy_only=False)
        layer = _vectorizer(vocabulary, settings)
        out[mask] = tokenizer.encode(texts.filter(odd).to_numpy(False), layer)
        texts, rows = texts.filter(pc.invert(odd)), rows[~mask]
    flat, parents = tokens(texts, settings)
    ids = pc.fill_null(pc.index_in(flat, value_set=vocabulary), -1).to_numpy() + 2
    ids = ids.astype(np.int32)
    # Position of each token within its row: parents ascend, so a row's tokens are contiguous.
    first = np.searchsorted(parents, np.arange(len(texts)))
    position = np.arange(len(parents)) - first[parents]
    keep = position < length
    out[rows[parents[keep]], position[keep]] = ids[keep]
    return out


# TensorFlow vectorizers for the divergent rows, by vocabulary: building one costs far more than
# encoding a batch, and a Greek corpus (capital sigma) needs it in nearly every batch. Callers keep
# one Arrow vocabulary per corpus, so its identity is the key; each entry holds the array, so the
# id cannot be reused while it is cached.
_VECTORIZERS: dict[int, tuple[pa.Array, TokenizerSettings, object]] = {}


def _vectorizer(vocabulary: pa.Array, settings: TokenizerSettings):
    entry = _VECTORIZERS.get(id(vocabulary))
    if entry is None or entry[1] != settings:
        from shipyard.corpus import tokenizer

        layer = tokenizer.build_vectorizer(vocabulary.to_pylist(), settings)
        entry = _VECTORIZERS[id(vocabulary)] = (vocabulary, settings, layer)
        while len(_VECTORIZERS) > 2:  # the oldest go
            del _VECTORIZERS[next(iter(_VECTORIZERS))]
    return entry[2]


def _contiguous(x: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(x, pa.ChunkedArray):
        x = x.combine_chunks()
    return x.cast(pa.string()) if x.type != pa.string() else x


def _divergent(texts: pa.Array) -> pa.Array | None:
    """A mask of the rows holding a code point from `DIVERGENT`, or None when there are none."""
    if pc.all(pc.string_is_ascii(texts)).as_py() is not False:
        return None
    mask = pc.match_substring_regex(texts, _DIVERGENT_RE)
    return mask if pc.any(mask).as_py() else None


def _code_points(x: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Each string cut into its code points, straight from the UTF-8 buffer (no Python loop):
    a code point starts at every byte that is not a continuation byte (0b10xxxxxx)."""
    offsets = np.frombuffer(x.buffers()[1], dtype=np.int32)[x.offset : x.offset + len(x) + 1]
    data = x.buffers()[2]
    begin, end = int(offsets[0]), int(offsets[-1])
    raw = np.frombuffer(data, dtype=np.uint8)[begin:end] if data is not None else np.empty(0)
    starts = (np.flatnonzero((raw & 0xC0) != 0x80) + begin).astype(np.int32)
    bounds = np.append(starts, np.int32(end))
    flat = pa.StringArray.from_buffers(len(starts), pa.py_buffer(bounds), data)
    parents = np.searchsorted(offsets, starts, side="right") - 1
    return flat, parents
