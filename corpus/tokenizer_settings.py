"""Tokenizer settings without TensorFlow, so the driver and the manifest never import it.

Importing TensorFlow costs seconds and ~400 MB per process; only the processes that tokenize
(Ray workers counting the vocabulary and encoding shards, training, serving) need it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

PAD, OOV = "", "[UNK]"
Mode = Literal["word", "char", "cjk"]

# The RE2 patterns of the cleaning and standardize steps, shared by the TensorFlow tokenizer (in
# exported models) and the Arrow code (cleaning rows, building shards): one spelling, so the two
# cannot drift apart.
FORMAT = r"\p{Cf}+"  # format characters (zero-width, bidi, soft hyphen, BOM): dropped
# C0/C1 controls (U+0085 included), line/paragraph separators and any run of whitespace become one
# space. It matches only what must change (a lone ASCII space does not match), so it does not
# rewrite every word boundary of every document.
WHITESPACE = r"[\p{Cc}\p{Z}]{2,}|[^\P{Z} ]|\p{Cc}"
TRIM = r"^ +| +$"  # after WHITESPACE the only whitespace left is the ASCII space
SEPARATORS = r"[\p{Cc}\p{Z}]"  # controls (C1 and U+0085 too) and separators: a space each
PUNCT = r"[\p{P}\p{S}]"  # punctuation and symbols: a space each
CJK = r"([\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}])"  # one token per character


def re2_class(ranges: tuple[tuple[int, int], ...]) -> str:
    """Inclusive code point ranges as one RE2 class: ((0x130, 0x130), (0x2FFC, 0x2FFF)) ->
    `[\\x{130}\\x{2ffc}-\\x{2fff}]`."""
    parts = [f"\\x{{{a:x}}}" if a == b else f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in ranges]
    return "[" + "".join(parts) + "]"


@dataclass(frozen=True)
class TokenizerSettings:
    mode: Mode = "word"
    lowercase: bool = True
    sequence_length: int = 64
    vocab_size: int = 20_000  # including the pad and OOV entries

    def to_dict(self) -> dict:
        return asdict(self)
