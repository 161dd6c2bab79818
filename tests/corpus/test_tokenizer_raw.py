"""Raw text at serving time encodes like the cleaned text the shards were written from."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from shipyard.corpus.clean import clean_text
from shipyard.corpus.tokenizer import TokenizerSettings, build_vectorizer, encode

RAW = [
    "That\x92s the offer\x85call now",  # cp1252 leftovers (C1 controls), as in SMS Spam
    "free\u00a0entry\u200b in 2 a wkly comp",  # NBSP and a zero-width space
    "tab\tand\nnewline  and   runs of spaces",
    "soft\u00adhyphen and \ufeffBOM",
]


@pytest.mark.parametrize("mode", ["word", "cjk", "char"])
def test_raw_and_cleaned_text_encode_the_same(mode):
    cleaned = clean_text(pa.array(RAW)).to_pylist()
    vocab = sorted({t for text in cleaned for t in text.lower().split()} | set("abcdefghijklmno"))
    settings = TokenizerSettings(mode=mode, sequence_length=12, vocab_size=len(vocab) + 2)
    vectorizer = build_vectorizer(vocab, settings)
    assert np.array_equal(encode(RAW, vectorizer), encode(cleaned, vectorizer))
