"""Tokenizer settings without TensorFlow, so the driver and the manifest never import it.

Importing TensorFlow costs seconds and ~400 MB per process; only the processes that tokenize
(Ray workers counting the vocabulary and encoding shards, training, serving) need it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

PAD, OOV = "", "[UNK]"
Mode = Literal["word", "char", "cjk"]

# The RE2 patterns of the standardize functions, shared by the TensorFlow tokenizer (in exported
# models) and the Arrow one (building shards): one spelling, so the two cannot drift apart.
FORMAT = r"\p{Cf}+"  # format characters (zero-width, bidi, soft hyphen, BOM): dropped
SEPARATORS = r"[\p{Cc}\p{Z}]"  # controls (C1 and U+0085 too) and separators: a space each
PUNCT = r"[\p{P}\p{S}]"  # punctuation and symbols: a space each
CJK = r"([\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}])"  # one token per character


@dataclass(frozen=True)
class TokenizerSettings:
    mode: Mode = "word"
    lowercase: bool = True
    sequence_length: int = 64
    vocab_size: int = 20_000  # including the pad and OOV entries

    def to_dict(self) -> dict:
        return asdict(self)
