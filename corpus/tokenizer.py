"""One tokenizer, two places: the encoding that writes the shards and the one in the exported model.

Both are a Keras `TextVectorization` built by `build_vectorizer` from the manifest's vocabulary, and
the vocabulary is counted with `tokenize`, which runs the very same standardize function and split
mode. The standardize functions are TensorFlow graph code (RE2 regexes), registered as Keras
serializable, so a SavedModel carries them and serving needs no shipyard code.

Modes: `word` splits on whitespace after lowercasing and turning punctuation into spaces; `cjk`
also makes every Han/Kana/Hangul character its own token while Latin words stay whole (mixed
Chinese-English text works); `char` drops whitespace and punctuation and makes every character a
token.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from shipyard.corpus.tokenizer_settings import (
    CJK,
    FORMAT,
    OOV,
    PAD,
    PUNCT,
    SEPARATORS,
    Mode,
    TokenizerSettings,
)

__all__ = [
    "OOV",
    "PAD",
    "Mode",
    "TokenizerSettings",
    "build_vectorizer",
    "count_tokens",
    "encode",
    "tokenize",
]


def _raw_clean(x: tf.Tensor) -> tf.Tensor:
    """The part of corpus cleaning that TensorFlow can do, so raw text at serving time encodes
    like the cleaned shard text: format characters dropped, controls (C1 and U+0085 included)
    and separators to spaces. A no-op on text that `corpus.clean.clean_text` already cleaned;
    only NFKC (no TensorFlow op) is left to the caller."""
    x = tf.strings.regex_replace(x, FORMAT, "")
    return tf.strings.regex_replace(x, SEPARATORS, " ")


def _lower(x: tf.Tensor) -> tf.Tensor:
    return tf.strings.lower(x, encoding="utf-8")


@tf.keras.utils.register_keras_serializable(package="shipyard")
def standardize_word(x: tf.Tensor) -> tf.Tensor:
    return tf.strings.regex_replace(_lower(_raw_clean(x)), PUNCT, " ")


@tf.keras.utils.register_keras_serializable(package="shipyard")
def standardize_word_cased(x: tf.Tensor) -> tf.Tensor:
    return tf.strings.regex_replace(_raw_clean(x), PUNCT, " ")


@tf.keras.utils.register_keras_serializable(package="shipyard")
def standardize_cjk(x: tf.Tensor) -> tf.Tensor:
    return tf.strings.regex_replace(standardize_word(x), CJK, r" \1 ")


@tf.keras.utils.register_keras_serializable(package="shipyard")
def standardize_cjk_cased(x: tf.Tensor) -> tf.Tensor:
    return tf.strings.regex_replace(standardize_word_cased(x), CJK, r" \1 ")


@tf.keras.utils.register_keras_serializable(package="shipyard")
def standardize_char(x: tf.Tensor) -> tf.Tensor:
    return tf.strings.regex_replace(standardize_word(x), r"\s+", "")


@tf.keras.utils.register_keras_serializable(package="shipyard")
def standardize_char_cased(x: tf.Tensor) -> tf.Tensor:
    return tf.strings.regex_replace(standardize_word_cased(x), r"\s+", "")


_STANDARDIZE = {
    ("word", True): standardize_word,
    ("word", False): standardize_word_cased,
    ("cjk", True): standardize_cjk,
    ("cjk", False): standardize_cjk_cased,
    ("char", True): standardize_char,
    ("char", False): standardize_char_cased,
}


def _parts(settings: TokenizerSettings):
    standardize = _STANDARDIZE[(settings.mode, settings.lowercase)]
    split = "character" if settings.mode == "char" else "whitespace"
    return standardize, split


def tokenize(texts: Sequence[str] | np.ndarray, settings: TokenizerSettings) -> np.ndarray:
    """All tokens of `texts`, flattened, exactly as the vectorizer sees them (for counting)."""
    standardize, split = _parts(settings)
    x = standardize(tf.constant(np.asarray(texts, dtype=object), dtype=tf.string))
    tokens = tf.strings.unicode_split(x, "UTF-8") if split == "character" else tf.strings.split(x)
    return tokens.flat_values.numpy()


def count_tokens(
    texts: Sequence[str] | np.ndarray, settings: TokenizerSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct tokens of `texts` (bytes) and their counts, tokenized exactly as `tokenize`.

    Counting inside TensorFlow hands back one object per distinct token instead of one per
    token, which is most of the cost of building a vocabulary.
    """
    standardize, split = _parts(settings)
    x = standardize(tf.constant(np.asarray(texts, dtype=object), dtype=tf.string))
    tokens = tf.strings.unicode_split(x, "UTF-8") if split == "character" else tf.strings.split(x)
    values, _, counts = tf.unique_with_counts(tokens.flat_values, out_idx=tf.int64)
    return values.numpy(), counts.numpy()


def build_vectorizer(vocabulary: Sequence[str], settings: TokenizerSettings):
    """The encoding layer: raw strings -> int32 ids of fixed length (0 = pad, 1 = OOV)."""
    standardize, split = _parts(settings)
    layer = tf.keras.layers.TextVectorization(
        standardize=standardize,
        split=split,
        output_mode="int",
        output_sequence_length=settings.sequence_length,
        vocabulary=list(vocabulary) if len(vocabulary) else None,
        name="vectorize",
    )
    return layer


def encode(texts: Sequence[str] | np.ndarray, vectorizer) -> np.ndarray:
    ids = vectorizer(tf.constant(np.asarray(texts, dtype=object), dtype=tf.string))
    return ids.numpy().astype(np.int32)
