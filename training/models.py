"""Keras model builders, chosen by `model.kind`.

Each builder states which shard columns it consumes: `ids` (token ids written by the corpus
pipeline; export puts the same vectorizer in front), `text` (raw strings; the model hashes n-grams
itself), or the tabular feature columns (raw values; normalization and category lookup are layers
built from the manifest's training statistics). Heads follow the corpus: one sigmoid unit for two
labels, a softmax otherwise.

A kind whose layers hold statistics of the training data (`linear`'s IDF) has `fit_statistics`:
the training loop calls it once on every rank after building the model, with this rank's train
batches (`{column: numpy array}`) and a function that sums a numpy array over all ranks. The
statistics live in non-trainable weights, so checkpoints (a resumed run gets them back), Horovod's
broadcast and export carry them like any other weight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from shipyard.corpus.manifest import PreparedCorpus
from shipyard.corpus.tokenizer import _STANDARDIZE
from shipyard.errors import UserInputError
from shipyard.project import MODEL_KINDS, ModelConfig
from shipyard.training import tfidf

# (model, this rank's train batches, sum of an array over all ranks) -> None
FitStatistics = Callable[
    [tf.keras.Model, Iterator[dict[str, np.ndarray]], Callable[[np.ndarray], np.ndarray]], None
]


@dataclass(frozen=True)
class ModelKind:
    name: str
    inputs: str  # "ids", "text" or "features"
    corpus: str  # "text" or "tabular"
    when: str
    build: Callable[[ModelConfig, PreparedCorpus], tf.keras.Model]
    fit_statistics: FitStatistics | None = None


def _head(x, num_classes: int, dropout: float, **dense):
    """The output layer; `dense`: more Dense arguments (initializer, regularizer)."""
    if dropout:
        x = tf.keras.layers.Dropout(dropout)(x)
    units, activation = (1, "sigmoid") if num_classes == 2 else (num_classes, "softmax")
    return tf.keras.layers.Dense(
        units, activation=activation, dtype="float32", name="head", **dense
    )(x)


def _ids_input(corpus: PreparedCorpus):
    return tf.keras.Input(shape=(corpus.tokenizer.sequence_length,), dtype=tf.int32, name="ids")


def build_lstm(cfg: ModelConfig, corpus: PreparedCorpus) -> tf.keras.Model:
    ids = _ids_input(corpus)
    x = tf.keras.layers.Embedding(corpus.tokenizer.vocab_size, cfg.embedding_dim, mask_zero=True)(
        ids
    )
    for i in range(cfg.layers):
        x = _lstm(cfg.units, return_sequences=i < cfg.layers - 1)(x)
    return tf.keras.Model(ids, _head(x, corpus.num_classes, cfg.dropout), name="lstm_classifier")


def _lstm(units: int, return_sequences: bool) -> tf.keras.layers.Layer:
    """Keras's LSTM layer with a GPU; without one, the same cell in Keras's generic RNN loop.

    The LSTM layer traces its cuDNN and its standard implementation into every function for
    Grappler to pick one at run time. On a CPU only the standard one can run, and tracing both
    is what a short run pays for: a train step traced in 2.0 s instead of 0.75 s, a predict in
    0.8 s instead of 0.1 s (this 2-core machine), per worker and per function. Weights, their
    checkpoints and the math are the same either way, so a model trained on GPUs restores here.
    """
    if tf.config.list_physical_devices("GPU"):
        return tf.keras.layers.LSTM(units, return_sequences=return_sequences)
    return tf.keras.layers.RNN(tf.keras.layers.LSTMCell(units), return_sequences=return_sequences)


@tf.keras.utils.register_keras_serializable(package="shipyard")
class TokenAndPositionEmbedding(tf.keras.layers.Layer):
    def __init__(self, vocab_size: int, length: int, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.length, self.dim = vocab_size, length, dim
        self.tokens = tf.keras.layers.Embedding(vocab_size, dim)
        self.positions = tf.keras.layers.Embedding(length, dim)

    def call(self, ids):
        positions = tf.range(start=0, limit=tf.shape(ids)[-1], delta=1)
        return self.tokens(ids) + self.positions(positions)

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "length": self.length,
            "dim": self.dim,
        }


def build_transformer(cfg: ModelConfig, corpus: PreparedCorpus) -> tf.keras.Model:
    ids = _ids_input(corpus)
    length = corpus.tokenizer.sequence_length
    x = TokenAndPositionEmbedding(corpus.tokenizer.vocab_size, length, cfg.embedding_dim)(ids)
    pad = tf.keras.layers.Lambda(lambda t: tf.cast(tf.not_equal(t, 0), tf.float32))(ids)
    attention_mask = tf.keras.layers.Lambda(lambda m: m[:, tf.newaxis, :] * m[:, :, tf.newaxis])(
        pad
    )
    for _ in range(cfg.layers):
        attended = tf.keras.layers.MultiHeadAttention(
            num_heads=cfg.heads, key_dim=max(1, cfg.embedding_dim // cfg.heads), dropout=cfg.dropout
        )(x, x, attention_mask=attention_mask)
        x = tf.keras.layers.LayerNormalization(epsilon=1e-6)(x + attended)
        ff = tf.keras.layers.Dense(cfg.units, activation="gelu")(x)
        ff = tf.keras.layers.Dense(cfg.embedding_dim)(ff)
        x = tf.keras.layers.LayerNormalization(epsilon=1e-6)(x + ff)
    pooled = tf.keras.layers.GlobalAveragePooling1D()(x, mask=tf.cast(pad, tf.bool))
    return tf.keras.Model(
        ids, _head(pooled, corpus.num_classes, cfg.dropout), name="transformer_classifier"
    )


@tf.keras.utils.register_keras_serializable(package="shipyard")
class HashedNgramEmbedding(tf.keras.layers.Layer):
    """fastText-style features: word uni/bigrams and character trigrams, hashed, embedded, averaged.

    Works on raw strings with the corpus tokenizer's own standardize function, so in `cjk` mode
    every Chinese character is a word and bigrams are character pairs.
    """

    def __init__(self, buckets: int, dim: int, mode: str, lowercase: bool, **kwargs):
        super().__init__(**kwargs)
        self.buckets, self.dim, self.mode, self.lowercase = buckets, dim, mode, lowercase
        self.standardize = _STANDARDIZE[(mode, lowercase)]

    def build(self, input_shape):
        self.table = self.add_weight(
            name="ngrams", shape=(self.buckets, self.dim), initializer="uniform", trainable=True
        )

    def call(self, text):
        text = tf.reshape(text, [-1])
        clean = self.standardize(text)
        words = tf.strings.split(clean)
        chars = tf.strings.unicode_split(tf.strings.regex_replace(clean, " +", " "), "UTF-8")
        grams = tf.concat(
            [
                words,
                tf.strings.ngrams(words, 2, separator=" "),
                tf.strings.ngrams(chars, 3, separator=""),
            ],
            axis=1,
        )
        ids = tf.strings.to_hash_bucket_fast(grams.flat_values, self.buckets)
        vectors = tf.RaggedTensor.from_row_splits(
            tf.nn.embedding_lookup(self.table, ids), grams.row_splits
        )
        total = tf.reduce_sum(vectors, axis=1)
        count = tf.cast(tf.maximum(grams.row_lengths(), 1), total.dtype)
        return total / count[:, tf.newaxis]

    def get_config(self):
        return {
            **super().get_config(),
            "buckets": self.buckets,
            "dim": self.dim,
            "mode": self.mode,
            "lowercase": self.lowercase,
        }


def build_ngram(cfg: ModelConfig, corpus: PreparedCorpus) -> tf.keras.Model:
    text = tf.keras.Input(shape=(), dtype=tf.string, name="text")
    tok = corpus.tokenizer
    x = HashedNgramEmbedding(cfg.ngram_buckets, cfg.embedding_dim, tok.mode, tok.lowercase)(text)
    return tf.keras.Model(text, _head(x, corpus.num_classes, cfg.dropout), name="ngram_classifier")


def build_linear(cfg: ModelConfig, corpus: PreparedCorpus) -> tf.keras.Model:
    """TF-IDF of hashed word and char n-grams (`tfidf.TfidfNgrams`) into one L2-regularized
    sigmoid/softmax layer: logistic regression, the classic strong baseline on small corpora.

    The head starts at zero (the problem is convex, and a bucket no training text reaches must
    not keep a random weight); `model.l2` is the penalty on its weights, added to each batch's
    mean loss. `model.dropout` does not apply (the input is sparse; L2 is the regularizer).
    """
    text = tf.keras.Input(shape=(), dtype=tf.string, name="text")
    tok = corpus.tokenizer
    x = tfidf.TfidfNgrams(cfg.ngram_buckets, tok.mode, tok.lowercase, name="tfidf")(text)
    head = _head(
        x,
        corpus.num_classes,
        0.0,
        kernel_initializer="zeros",
        kernel_regularizer=tf.keras.regularizers.L2(cfg.l2) if cfg.l2 else None,
    )
    return tf.keras.Model(text, head, name="linear")


def build_mlp(cfg: ModelConfig, corpus: PreparedCorpus) -> tf.keras.Model:
    features = corpus.features
    inputs, encoded = {}, []
    for name, moments in features["numeric"].items():
        inputs[name] = tf.keras.Input(shape=(1,), dtype=tf.float32, name=name)
        norm = tf.keras.layers.Normalization(
            mean=moments["mean"], variance=moments["std"] ** 2, name=f"norm_{name}"
        )
        encoded.append(norm(inputs[name]))
    for name, values in features["categorical"].items():
        inputs[name] = tf.keras.Input(shape=(1,), dtype=tf.string, name=name)
        lookup = tf.keras.layers.StringLookup(
            vocabulary=values, output_mode="one_hot", name=f"lookup_{name}"
        )
        encoded.append(lookup(inputs[name]))
    x = tf.keras.layers.Concatenate()(encoded) if len(encoded) > 1 else encoded[0]
    for units in cfg.hidden_units:
        x = tf.keras.layers.Dense(units, activation="relu")(x)
        if cfg.dropout:
            x = tf.keras.layers.Dropout(cfg.dropout)(x)
    return tf.keras.Model(inputs, _head(x, corpus.num_classes, 0.0), name="mlp")


# `when` is what `shipyard models` prints. Accuracies: the test split of a 2,086/297/596-sentence
# split of sentiment_labelled_sentences (tests/training/test_models.py measures linear, scikit-learn
# and the LSTM; ngram and transformer measured by hand: 0.79 and 0.77-0.80); Chinese: SIB-200 zh,
# by hand, linear 0.78-0.79 vs ngram 0.79 (7 topics, 701 training sentences).
KINDS: dict[str, ModelKind] = {
    k.name: k
    for k in (
        ModelKind(
            "lstm_classifier",
            "ids",
            "text",
            "corpora big enough to learn word order (negation, phrasing); on ~2k sentences it"
            " trails linear by 3-5 points; ~1 ms per short text on a CPU",
            build_lstm,
        ),
        ModelKind(
            "transformer_classifier",
            "ids",
            "text",
            "larger corpora (100k+ texts) where word order and long context matter; overfits"
            " small ones; needs a GPU to train fast",
            build_transformer,
        ),
        ModelKind(
            "ngram_classifier",
            "text",
            "text",
            "fastText-style n-gram embeddings: mid to large corpora, Chinese (cjk/char"
            " tokenizer); lowest latency; on a few thousand texts linear is as good or better",
            build_ngram,
        ),
        ModelKind(
            "linear",
            "text",
            "text",
            "start here on small corpora (a few thousand texts): TF-IDF n-grams + logistic"
            " regression, the baseline to beat; trains in seconds; one readable weight per n-gram",
            build_linear,
            fit_statistics=tfidf.fit_statistics,
        ),
        ModelKind(
            "mlp",
            "features",
            "tabular",
            "tabular rows: numeric columns normalized, categories one-hot, inside the model",
            build_mlp,
        ),
    )
}
assert tuple(KINDS) == MODEL_KINDS, "project.MODEL_KINDS and the builders must agree"


def model_kind(cfg: ModelConfig, corpus: PreparedCorpus) -> ModelKind:
    kind = KINDS[cfg.kind]
    if kind.corpus != corpus.kind:
        fitting = [k.name for k in KINDS.values() if k.corpus == corpus.kind]
        raise UserInputError(
            f"model.kind: {cfg.kind!r} needs a {kind.corpus} corpus but data.kind is"
            f" {corpus.kind!r} (choose one of {', '.join(fitting)})"
        )
    return kind


def feature_columns(kind: ModelKind, corpus: PreparedCorpus) -> list[str]:
    """The shard columns this model reads."""
    if kind.inputs == "ids":
        return ["ids"]
    if kind.inputs == "text":
        return ["text"]
    return [*corpus.features["numeric"], *corpus.features["categorical"]]


def build(cfg: ModelConfig, corpus: PreparedCorpus) -> tf.keras.Model:
    return model_kind(cfg, corpus).build(cfg, corpus)
