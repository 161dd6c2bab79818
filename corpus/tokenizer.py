"""One tokenizer, two places: the encoding that writes the shards and the one in the exported model.

Both are a Keras `TextVectorization` built by `build_vectorizer` from the manifest's vocabulary, and
the vocabulary is counted with `tokenize`, which runs the very same standardize function and split
mode. The standardize functions are TensorFlow graph code, registered as Keras serializable, so a
SavedModel carries them and serving needs no shipyard code: only TensorFlow and the op libraries
in `OP_LIBRARIES` (TensorFlow Text's NFKC), imported before `tf.saved_model.load`.

Each standardize function first cleans raw text exactly as the corpus does (`clean`, the twin of
`corpus.clean.clean_text`: format characters dropped, NFKC, controls and whitespace runs to one
space, trimmed), so raw text at serving time encodes like the shards. On text that is already
clean, that step changes nothing.

Modes: `word` splits on whitespace after lowercasing and turning punctuation into spaces; `cjk`
also makes every Han/Kana/Hangul character its own token while Latin words stay whole (mixed
Chinese-English text works); `char` drops whitespace and punctuation and makes every character a
token.
"""

from __future__ import annotations

import warnings
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
    TRIM,
    WHITESPACE,
    Mode,
    TokenizerSettings,
)

# The Python modules whose TensorFlow ops the standardize functions (and so every exported text
# model) use. A process that loads such a SavedModel imports them first; without them loading
# fails with "Op type not registered 'NormalizeUTF8'". TensorFlow Serving needs them linked in.
OP_LIBRARIES = ("tensorflow_text",)

with warnings.catch_warnings():
    # tensorflow_text imports tensorflow_hub, which imports the deprecated pkg_resources.
    warnings.filterwarnings("ignore", message=".*pkg_resources", category=UserWarning)
    import tensorflow_text

__all__ = [
    "OOV",
    "OP_LIBRARIES",
    "PAD",
    "Mode",
    "TokenizerSettings",
    "build_vectorizer",
    "clean",
    "count_tokens",
    "encode",
    "tokenize",
]


def clean(x: tf.Tensor) -> tf.Tensor:
    """`corpus.clean.clean_text` in TensorFlow: format characters dropped, NFKC, controls,
    separators and whitespace runs to one space, trimmed."""
    x = tf.strings.regex_replace(x, FORMAT, "")
    x = tensorflow_text.normalize_utf8(x, "NFKC")
    x = tf.strings.regex_replace(x, WHITESPACE, " ")
    return tf.strings.regex_replace(x, TRIM, "")


def _spaces(x: tf.Tensor) -> tf.Tensor:
    """What the Arrow tokenizer does first (and a no-op on cleaned text): format characters
    dropped, controls and separators to spaces."""
    x = tf.strings.regex_replace(x, FORMAT, "")
    return tf.strings.regex_replace(x, SEPARATORS, " ")


def _lower(x: tf.Tensor) -> tf.Tensor:
    return tf.strings.lower(x, encoding="utf-8")


# Cleaned text -> tokens separated by spaces (or, in char mode, no spaces at all): exactly what
# `arrow_tokenizer.standardize` computes, code point by code point (tests/corpus/
# test_arrow_tokenizer.py).
def _word(x: tf.Tensor) -> tf.Tensor:
    return tf.strings.regex_replace(_lower(_spaces(x)), PUNCT, " ")


def _word_cased(x: tf.Tensor) -> tf.Tensor:
    return tf.strings.regex_replace(_spaces(x), PUNCT, " ")


def _cjk(x: tf.Tensor) -> tf.Tensor:
    return tf.strings.regex_replace(_word(x), CJK, r" \1 ")


def _cjk_cased(x: tf.Tensor) -> tf.Tensor:
    return tf.strings.regex_replace(_word_cased(x), CJK, r" \1 ")


def _char(x: tf.Tensor) -> tf.Tensor:
    return tf.strings.regex_replace(_word(x), r"\s+", "")


def _char_cased(x: tf.Tensor) -> tf.Tensor:
    return tf.strings.regex_replace(_word_cased(x), r"\s+", "")


_STANDARDIZE_CLEANED = {
    ("word", True): _word,
    ("word", False): _word_cased,
    ("cjk", True): _cjk,
    ("cjk", False): _cjk_cased,
    ("char", True): _char,
    ("char", False): _char_cased,
}


# Raw text -> the same: these are what models carry (the names are in saved Keras configs).
@tf.keras.utils.register_keras_serializable(package="shipyard")
def standardize_word(x: tf.Tensor) -> tf.Tensor:
    return _word(clean(x))


@tf.keras.utils.register_keras_serializable(package="shipyard")
def standardize_word_cased(x: tf.Tensor) -> tf.Tensor:
    return _word_cased(clean(x))


@tf.keras.utils.register_keras_serializable(package="shipyard")
def standardize_cjk(x: tf.Tensor) -> tf.Tensor:
    return _cjk(clean(x))


@tf.keras.utils.register_keras_serializable(package="shipyard")
def standardize_cjk_cased(x: tf.Tensor) -> tf.Tensor:
    return _cjk_cased(clean(x))


@tf.keras.utils.register_keras_serializable(package="shipyard")
def standardize_char(x: tf.Tensor) -> tf.Tensor:
    return _char(clean(x))


@tf.keras.utils.register_keras_serializable(package="shipyard")
def standardize_char_cased(x: tf.Tensor) -> tf.Tensor:
    return _char_cased(clean(x))


_STANDARDIZE = {
    ("word", True): standardize_word,
    ("word", False): standardize_word_cased,
    ("cjk", True): standardize_cjk,
    ("cjk", False): standardize_cjk_cased,
    ("char", True): standardize_char,
    ("char", False): standardize_char_cased,
}


def _parts(settings: TokenizerSettings, cleaned: bool = False):
    """(standardize function, split mode). `cleaned`: the standardize step alone, for text that
    `clean` (or `corpus.clean.clean_text`) already cleaned."""
    table = _STANDARDIZE_CLEANED if cleaned else _STANDARDIZE
    standardize = table[(settings.mode, settings.lowercase)]
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
