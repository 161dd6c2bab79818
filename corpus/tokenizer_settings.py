"""Tokenizer settings without TensorFlow, so the driver and the manifest never import it.

Importing TensorFlow costs seconds and ~400 MB per process; only the processes that tokenize
(Ray workers counting the vocabulary and encoding shards, training, serving) need it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

PAD, OOV = "", "[UNK]"
Mode = Literal["word", "char", "cjk"]


@dataclass(frozen=True)
class TokenizerSettings:
    mode: Mode = "word"
    lowercase: bool = True
    sequence_length: int = 64
    vocab_size: int = 20_000  # including the pad and OOV entries

    def to_dict(self) -> dict:
        return asdict(self)
