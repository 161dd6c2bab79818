"""What the encoder learns from the training split, and the encode stage that uses it.

Text: the vocabulary (counted by the Arrow tokenizer), recorded in the manifest with the tokenizer
settings. Tabular: numeric moments and category vocabularies. Each returns the encode stage as
(function, arguments, batch size) for `map_batches` over every split.
"""

from __future__ import annotations

import hashlib
import json

from shipyard.corpus import clean
from shipyard.errors import UserInputError
from shipyard.project import DataConfig

MAX_CATEGORIES = 1_000
ENCODE_BATCH_ROWS = 16_384  # per encoding call: its temporaries are ~40x the text


def fit_text_encoder(data: DataConfig, train, label_index, cuts, manifest: dict):
    """The vocabulary from train; returns the encoder stage (function, arguments, batch size)."""
    from shipyard.corpus import encode, vocab
    from shipyard.corpus.tokenizer_settings import TokenizerSettings

    settings = TokenizerSettings(
        mode=data.tokenizer,
        lowercase=data.lowercase,
        sequence_length=data.sequence_length,
        vocab_size=data.vocab_size,
    )
    vocabulary = vocab.build_vocabulary(train, settings)
    if not vocabulary:
        raise UserInputError("data: the training split has no tokens to build a vocabulary")
    manifest["tokenizer"] = settings.to_dict()
    manifest["vocabulary"] = vocabulary
    manifest["schema"] = {
        "key": "string",
        "text": "string",
        "ids": f"int32[{settings.sequence_length}]",
        "label": "int32",
    }
    vocab_id = hashlib.sha256(json.dumps([vocabulary, settings.to_dict()]).encode()).hexdigest()
    args = (vocab_id, vocabulary, settings, label_index, cuts)
    return encode.encode_text, args, ENCODE_BATCH_ROWS


def fit_tabular_encoder(opts: clean.CleanOptions, train, label_index, cuts, manifest: dict):
    """Normalization statistics and category vocabularies from train; returns the encoder."""
    from shipyard.corpus import encode, vocab

    stats = vocab.tabular_statistics(
        train, list(opts.numeric), list(opts.categorical), MAX_CATEGORIES
    )
    manifest["features"] = stats
    manifest["schema"] = {
        **{c: "float32" for c in opts.numeric},
        **{c: "string" for c in opts.categorical},
        "label": "int32",
    }
    return encode.encode_tabular, (stats, label_index, cuts), None
