"""TF-IDF of hashed word and character n-grams, inside the model, with IDF fitted across ranks.

`TfidfNgrams` reads raw strings, standardizes them with the corpus tokenizer's own function (so
`cjk` and `char` corpora work as they do for every other kind) and returns one sparse row per text
over `buckets` columns, in two blocks:

- tokens: the first half of the buckets holds token n-grams, tokens as the corpus tokenizer makes
  them (`word`: words, 1-2-grams; `cjk`: Latin words and single Han/Kana/Hangul characters,
  1-3-grams, so Chinese gets character uni-, bi- and trigrams; `char`: characters, 1-3-grams);
- chars: the second half holds character 2-4-grams inside each space-padded token (scikit-learn's
  `char_wb`), which catch inflections, typos and sub-word cues (`word` and `cjk` modes only; in
  `char` mode the tokens already are characters).

Each cell is sublinear TF (1 + log count) times IDF, and each block is L2-normalized on its own,
as scikit-learn's union of a word and a char `TfidfVectorizer` does: a short sentence has ~10x
more char n-grams than words, and one norm over both would drown the words.

IDF is a non-trainable weight: `fit_statistics` counts document frequencies on this rank's train
shard, sums them (and the row count) over all ranks in one allreduce and assigns
IDF = log((1 + N) / (1 + df)) + 1 (scikit-learn's smooth IDF). A bucket that no training text
touched gets IDF 0: an n-gram never seen in training has no learned weight and must not dilute
the norm of the row it appears in (scikit-learn's vocabulary drops it the same way). The weight is
saved in checkpoints, broadcast by Horovod with the others and restored by export, so the
SavedModel carries it and serving needs no Python-side preprocessing. Before `fit_statistics`
runs, IDF is 1 everywhere (plain normalized TF).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import tensorflow as tf

from shipyard.corpus.tokenizer import _STANDARDIZE

# (token n-gram widths, char n-gram widths or None) per tokenizer mode.
NGRAMS: dict[str, tuple[tuple[int, int], tuple[int, int] | None]] = {
    "word": ((1, 2), (2, 4)),
    "cjk": ((1, 3), (2, 4)),
    "char": ((1, 3), None),
}
TEXT_COLUMN = "text"


@tf.keras.utils.register_keras_serializable(package="shipyard")
class TfidfNgrams(tf.keras.layers.Layer):
    """Raw strings -> a sparse (batch, buckets) float32 TF-IDF matrix (see the module doc)."""

    def __init__(
        self,
        buckets: int,
        mode: str,
        lowercase: bool,
        token_ngrams: tuple[int, int] | None = None,
        char_ngrams: tuple[int, int] | str | None = "auto",
        sublinear_tf: bool = True,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")  # sums of many small values: never float16
        super().__init__(**kwargs)
        default_tokens, default_chars = NGRAMS[mode]
        self.buckets, self.mode, self.lowercase = buckets, mode, lowercase
        self.token_ngrams = tuple(token_ngrams or default_tokens)
        self.char_ngrams = default_chars if char_ngrams == "auto" else char_ngrams
        if self.char_ngrams is not None:
            self.char_ngrams = tuple(self.char_ngrams)
        self.sublinear_tf = sublinear_tf
        self.standardize = _STANDARDIZE[(mode, lowercase)]
        # Bucket ranges: [0, token_buckets) tokens, [token_buckets, buckets) chars.
        self.token_buckets = buckets if self.char_ngrams is None else buckets // 2

    def build(self, input_shape):
        self.idf = self.add_weight(
            name="idf", shape=(self.buckets,), initializer="ones", trainable=False
        )
        # The number of training texts IDF was fitted on (0: not fitted); for inspection.
        self.documents = self.add_weight(
            name="documents", shape=(), initializer="zeros", trainable=False
        )
        super().build(input_shape)

    # -- features ----------------------------------------------------------------------------
    def grams(self, text: tf.Tensor) -> tuple[tf.RaggedTensor, tf.RaggedTensor | None]:
        """The (token n-grams, char n-grams) of each text, as ragged string rows."""
        clean = self.standardize(tf.reshape(text, [-1]))
        if self.mode == "char":
            tokens = tf.strings.unicode_split(clean, "UTF-8")
        else:
            tokens = tf.strings.split(clean)
        lo, hi = self.token_ngrams
        token_grams = tf.strings.ngrams(tokens, list(range(lo, hi + 1)), separator=" ")
        if self.char_ngrams is None:
            return token_grams, None
        words = tf.strings.split(clean)
        padded = tf.ragged.map_flat_values(lambda w: tf.strings.join([" ", w, " "]), words)
        chars = tf.strings.unicode_split(padded, "UTF-8")  # (batch, words, chars)
        lo, hi = self.char_ngrams
        char_grams = tf.strings.ngrams(chars, list(range(lo, hi + 1)), separator="")
        return token_grams, char_grams.merge_dims(1, 2)

    def bucket_ids(self, text: tf.Tensor) -> tf.RaggedTensor:
        """Each text's n-grams as int64 bucket ids (repeats kept: a gram per occurrence)."""
        token_grams, char_grams = self.grams(text)
        ids = token_grams.with_flat_values(
            tf.strings.to_hash_bucket_fast(token_grams.flat_values, self.token_buckets)
        )
        if char_grams is None:
            return ids
        char_ids = char_grams.with_flat_values(
            tf.strings.to_hash_bucket_fast(char_grams.flat_values, self.char_buckets)
            + self.token_buckets
        )
        return tf.concat([ids, char_ids], axis=1)

    @property
    def char_buckets(self) -> int:
        return self.buckets - self.token_buckets

    def counts(self, text: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """(row, bucket, count, rows): one entry per distinct (text, bucket), rows ascending."""
        ids = self.bucket_ids(text)
        rows = ids.nrows(out_type=tf.int64)
        keys = ids.value_rowids() * self.buckets + ids.flat_values
        unique, _, count = tf.unique_with_counts(keys, out_idx=tf.int64)
        return unique // self.buckets, unique % self.buckets, count, rows

    def call(self, text):
        row, bucket, count, rows = self.counts(text)
        tf_ = tf.cast(count, self.dtype)
        if self.sublinear_tf:
            tf_ = 1.0 + tf.math.log(tf_)
        weight = tf_ * tf.gather(self.idf, bucket)
        # One L2 norm per (row, block): segment 2*row for tokens, 2*row + 1 for chars.
        segment = 2 * row + tf.cast(bucket >= self.token_buckets, tf.int64)
        norm = tf.sqrt(tf.math.unsorted_segment_sum(tf.square(weight), segment, 2 * rows))
        weight = weight / tf.maximum(tf.gather(norm, segment), 1e-12)
        matrix = tf.SparseTensor(
            indices=tf.stack([row, bucket], axis=1),
            values=weight,
            dense_shape=tf.stack([rows, tf.constant(self.buckets, tf.int64)]),
        )
        return tf.sparse.reorder(matrix)

    def get_config(self):
        return {
            **super().get_config(),
            "buckets": self.buckets,
            "mode": self.mode,
            "lowercase": self.lowercase,
            "token_ngrams": list(self.token_ngrams),
            "char_ngrams": None if self.char_ngrams is None else list(self.char_ngrams),
            "sublinear_tf": self.sublinear_tf,
        }


# -- IDF over the whole train split ------------------------------------------------------------
def tfidf_layer(model: tf.keras.Model) -> TfidfNgrams:
    found = [layer for layer in model.submodules if isinstance(layer, TfidfNgrams)]
    if len(found) != 1:
        raise ValueError(f"model {model.name!r} has {len(found)} TfidfNgrams layers (expected 1)")
    return found[0]


def document_frequencies(
    layer: TfidfNgrams, batches: Iterator[dict[str, np.ndarray]]
) -> tuple[np.ndarray, int]:
    """(texts per bucket, texts) over `batches`: a text counts once per bucket however often it
    repeats the n-gram."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def batch_df(text):
        _, bucket, _, rows = layer.counts(text)
        return tf.math.bincount(bucket, minlength=layer.buckets, dtype=tf.int64), rows

    df = np.zeros(layer.buckets, np.int64)
    n = 0
    for batch in batches:
        text = np.asarray(batch[TEXT_COLUMN], dtype=object)
        if not len(text):
            continue
        counts, rows = batch_df(tf.constant(text, dtype=tf.string))
        df += counts.numpy()
        n += int(rows)
    return df, n


def idf_from_counts(df: np.ndarray, n: float) -> np.ndarray:
    """Smooth IDF, log((1 + N) / (1 + df)) + 1, and 0 where no training text has the bucket."""
    df = np.asarray(df, np.float64)
    idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
    return np.where(df > 0, idf, 0.0)


def fit_statistics(
    model: tf.keras.Model,
    batches: Iterator[dict[str, np.ndarray]],
    allreduce_sum: Callable[[np.ndarray], np.ndarray],
) -> None:
    """Set the model's IDF from the whole train split: this rank's counts summed over all ranks.

    Exactly one `allreduce_sum` call on every rank (document frequencies and the row count in one
    float64 array), whatever the size of this rank's shard, so no rank waits for another.
    """
    layer = tfidf_layer(model)
    df, n = document_frequencies(layer, batches)
    total = np.asarray(allreduce_sum(np.append(df, n).astype(np.float64)), np.float64)
    layer.idf.assign(idf_from_counts(total[:-1], total[-1]).astype(np.float32))
    layer.documents.assign(float(total[-1]))
