"""Every model kind builds, learns and predicts; `linear`'s TF-IDF is what it says it is.

Real TensorFlow on tiny corpora prepared by the real pipeline. The comparison with scikit-learn and
an LSTM runs on the real sentiment sentences (skipped when ../shared/data is absent).
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest
import tensorflow as tf

from shipyard.corpus.manifest import PreparedCorpus
from shipyard.project import ModelConfig
from shipyard.training import tfidf
from shipyard.training.models import KINDS, build, feature_columns, model_kind

ZH_PROJECT = {
    "name": "tiny_zh",
    "data": {
        "synthetic": {"rows": 400, "classes": 3, "language": "zh", "seed": 3},
        "tokenizer": "cjk",
        "vocab_size": 800,
        "sequence_length": 24,
    },
}
# Tiny settings for every kind; each builder reads the fields it needs.
TINY = {
    "embedding_dim": 8,
    "units": 8,
    "heads": 2,
    "hidden_units": [8],
    "ngram_buckets": 1024,
    "dropout": 0.0,
}
# Which prepared corpora each kind is tried on: binary English, 3-class cjk Chinese, tabular.
CORPORA = {"text": ("text_corpus", "zh_corpus"), "tabular": ("tabular_corpus",)}
CASES = [(name, fixture) for name, kind in KINDS.items() for fixture in CORPORA[kind.corpus]]


@pytest.fixture(scope="module")
def zh_corpus(ray_local, session_project_factory):
    from shipyard.corpus.prepare import prepare

    project = session_project_factory(ZH_PROJECT)
    return project, prepare(project).corpus


def identity(values: np.ndarray) -> np.ndarray:
    """`allreduce_sum` with one rank."""
    return values


def batches_of(texts, size: int = 64):
    texts = np.asarray(texts, dtype=object)
    return iter([{"text": texts[i : i + size]} for i in range(0, len(texts), size)])


def inputs_and_labels(kit, cfg: ModelConfig, corpus: PreparedCorpus, split: str, n: int | None):
    rows = kit.read_split(corpus, split)
    if n is not None:
        rows = {k: v[:n] for k, v in rows.items()}
    y = rows["label"]
    if corpus.num_classes == 2:
        y = y.astype(np.float32).reshape(-1, 1)
    return kit.model_inputs(cfg, corpus, rows), y, rows


def compile_for(model: tf.keras.Model, corpus: PreparedCorpus, learning_rate: float) -> None:
    binary = corpus.num_classes == 2
    model.compile(
        optimizer=tf.keras.optimizers.legacy.Adam(learning_rate),
        loss="binary_crossentropy" if binary else "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


# -- (a) every kind ------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "corpus_fixture"), CASES)
def test_every_kind_builds_takes_a_step_and_predicts(kit, request, name, corpus_fixture):
    _, corpus = request.getfixturevalue(corpus_fixture)
    cfg = ModelConfig(kind=name, **TINY)
    kind = model_kind(cfg, corpus)
    tf.keras.utils.set_random_seed(0)
    model = build(cfg, corpus)
    x, y, rows = inputs_and_labels(kit, cfg, corpus, "train", 32)
    if kind.fit_statistics is not None:
        columns = feature_columns(kind, corpus)
        kind.fit_statistics(model, iter([{c: rows[c] for c in columns}]), identity)
    compile_for(model, corpus, 0.01)

    before = [w.numpy().copy() for w in model.trainable_weights]
    loss = model.train_on_batch(x, y)[0]
    after = [w.numpy() for w in model.trainable_weights]
    assert math.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True)), (
        f"{name}: one step changed no trainable weight"
    )

    probs = model.predict(x, verbose=0)
    width = 1 if corpus.num_classes == 2 else corpus.num_classes
    assert probs.shape == (32, width) and probs.dtype == np.float32
    assert np.all((probs >= 0) & (probs <= 1))
    if width > 1:
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_kinds_fitting_statistics_are_the_ones_that_hold_them():
    """The loop calls `fit_statistics` only where a kind has it: `linear`, and only it."""
    assert [k.name for k in KINDS.values() if k.fit_statistics] == ["linear"]
    assert KINDS["linear"].inputs == "text" and KINDS["linear"].corpus == "text"


# -- linear: features ----------------------------------------------------------------------------
def grams(layer: tfidf.TfidfNgrams, text: str) -> tuple[list[str], list[str]]:
    token_grams, char_grams = layer.grams(tf.constant([text]))
    tokens = [g.decode() for g in token_grams.to_list()[0]]
    chars = [] if char_grams is None else [g.decode() for g in char_grams.to_list()[0]]
    return tokens, chars


def test_linear_uses_the_corpus_tokenizers_standardization():
    word = tfidf.TfidfNgrams(1024, "word", lowercase=True)
    tokens, chars = grams(word, "Don't STOP me, now!")
    assert tokens[:5] == ["don", "t", "stop", "me", "now"]
    assert {"stop me", "me now"} <= set(tokens) and len(tokens) == 5 + 4  # uni + bigrams
    assert {" st", "sto", "stop", "op ", " n", "now "} <= set(chars)
    assert not [g for g in chars if g.strip() != g.replace(" ", "")]  # never across words

    cased = tfidf.TfidfNgrams(1024, "word", lowercase=False)
    assert grams(cased, "Don't STOP")[0][:3] == ["Don", "t", "STOP"]

    # cjk: every Han character a token, Latin words whole: character 1-3-grams for Chinese.
    cjk = tfidf.TfidfNgrams(1024, "cjk", lowercase=True)
    tokens, chars = grams(cjk, "我爱NLP，很好")
    assert tokens[:5] == ["我", "爱", "nlp", "很", "好"]
    assert {"我 爱", "爱 nlp", "我 爱 nlp", "很 好"} <= set(tokens)
    assert {" nl", "nlp", "nlp "} <= set(chars)

    # char: the tokens are characters (no spaces, no punctuation); no separate char block.
    char = tfidf.TfidfNgrams(1024, "char", lowercase=True)
    tokens, chars = grams(char, "Ab, c")
    assert tokens == ["a", "b", "c", "a b", "b c", "a b c"] and chars == []
    assert char.token_buckets == 1024 and word.token_buckets == 512


def test_tfidf_by_hand():
    """Document frequencies per bucket, smooth IDF, sublinear TF, one L2 norm per block."""
    texts = ["good movie", "bad movie", "good good fun"]
    layer = tfidf.TfidfNgrams(1 << 16, "word", lowercase=True)
    model = tf.keras.Sequential([tf.keras.Input(shape=(), dtype=tf.string), layer])

    def bucket(gram: str) -> int:
        return int(tf.strings.to_hash_bucket_fast([gram], layer.token_buckets)[0])

    names = ["good", "movie", "bad", "fun", "good movie", "good good", "good fun"]
    assert len({bucket(g) for g in names}) == len(names), "pick grams in distinct buckets"

    tfidf.fit_statistics(model, batches_of(texts, size=2), identity)
    idf = layer.idf.numpy()
    assert layer.documents.numpy() == 3
    # "good" is in 2 of 3 texts (twice in one: counted once), "fun" in 1.
    assert idf[bucket("good")] == pytest.approx(math.log(4 / 3) + 1)
    assert idf[bucket("movie")] == pytest.approx(math.log(4 / 3) + 1)
    assert idf[bucket("fun")] == pytest.approx(math.log(4 / 2) + 1)
    assert idf[bucket("good good")] == pytest.approx(math.log(4 / 2) + 1)
    touched = layer.counts(tf.constant(texts))[1].numpy()
    untouched = np.setdiff1d(np.arange(layer.buckets), touched)
    assert np.all(idf[untouched] == 0) and np.all(idf[touched] >= 1)

    row = tf.sparse.to_dense(model(tf.constant(["good good fun"]))).numpy()[0]
    one = math.log(4 / 2) + 1  # df 1
    expected = {
        "good": (1 + math.log(2)) * (math.log(4 / 3) + 1),  # sublinear TF: 1 + log(count)
        "fun": one,
        "good good": one,
        "good fun": one,
    }
    norm = math.sqrt(sum(v * v for v in expected.values()))
    for gram, value in expected.items():
        assert row[bucket(gram)] == pytest.approx(value / norm, rel=1e-5)
    words, chars = row[: layer.token_buckets], row[layer.token_buckets :]
    assert np.count_nonzero(words) == 4
    assert np.sum(words**2) == pytest.approx(1.0) and np.sum(chars**2) == pytest.approx(1.0)

    # n-grams no training text had weigh nothing, and do not dilute the others.
    unseen = tf.sparse.to_dense(model(tf.constant(["zzz qqq", "zzz good"]))).numpy()
    assert np.all(unseen[0] == 0)
    assert np.sum(unseen[1][: layer.token_buckets] ** 2) == pytest.approx(1.0)


def test_idf_of_two_shards_equals_idf_of_the_whole(text_corpus, kit):
    """What two ranks do: each counts its half, one allreduce sums; the IDF is the whole split's.
    Every call allreduces exactly once, an empty shard included (a rank must never skip it)."""
    _, corpus = text_corpus
    texts = kit.read_split(corpus, "train")["text"][:300]
    halves = texts[:170], texts[170:]

    def linear():
        return build(ModelConfig(kind="linear", ngram_buckets=4096), corpus)

    sent: list[list[np.ndarray]] = []
    for half in halves:
        calls: list[np.ndarray] = []
        tfidf.fit_statistics(linear(), batches_of(half), lambda v, c=calls: c.append(v) or v)
        sent.append(calls)
    assert [len(c) for c in sent] == [1, 1]
    total = sent[0][0] + sent[1][0]
    assert total[-1] == len(texts) and total.dtype == np.float64

    whole, ranked = linear(), linear()
    tfidf.fit_statistics(whole, batches_of(texts), identity)
    tfidf.fit_statistics(ranked, batches_of(halves[0]), lambda v: v + sent[1][0])
    whole_idf = tfidf.tfidf_layer(whole).idf.numpy()
    np.testing.assert_array_equal(tfidf.tfidf_layer(ranked).idf.numpy(), whole_idf)
    assert tfidf.tfidf_layer(ranked).documents.numpy() == len(texts)
    assert np.count_nonzero(whole_idf) > 100

    empty: list[np.ndarray] = []
    idle = linear()
    tfidf.fit_statistics(idle, iter([]), lambda v: empty.append(v) or total)
    assert len(empty) == 1 and not empty[0].any()
    np.testing.assert_array_equal(tfidf.tfidf_layer(idle).idf.numpy(), whole_idf)


def test_linear_carries_its_idf_through_checkpoint_and_saved_model(text_corpus, kit, tmp_path):
    """IDF is a weight: the loop's checkpoint saves it, a rebuilt model restores it (as export
    does) and a SavedModel serves raw text with it inside."""
    _, corpus = text_corpus
    cfg = ModelConfig(kind="linear", ngram_buckets=4096)
    x, y, _ = inputs_and_labels(kit, cfg, corpus, "train", None)
    tf.keras.utils.set_random_seed(1)
    model = build(cfg, corpus)
    tfidf.fit_statistics(model, batches_of(x), identity)
    compile_for(model, corpus, 0.05)
    model.fit(x, y, batch_size=64, epochs=2, verbose=0)
    prefix = str(tmp_path / "checkpoint" / "ckpt")  # the loop's layout
    tf.train.Checkpoint(model=model, optimizer=model.optimizer).write(prefix)

    rebuilt = build(cfg, corpus)
    assert not tfidf.tfidf_layer(rebuilt).documents.numpy()
    status = tf.train.Checkpoint(model=rebuilt).read(prefix)
    status.expect_partial()
    status.assert_existing_objects_matched()
    np.testing.assert_array_equal(
        tfidf.tfidf_layer(rebuilt).idf.numpy(), tfidf.tfidf_layer(model).idf.numpy()
    )
    assert tfidf.tfidf_layer(rebuilt).documents.numpy() == len(x)

    texts = kit.read_split(corpus, "test")["text"][:50]
    expected = model.predict(texts, verbose=0)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(text):
        return {"probs": rebuilt(text, training=False)}

    saved = str(tmp_path / "saved_model")
    rebuilt.save(saved, save_format="tf", include_optimizer=False, signatures={"serve": serve})
    loaded = tf.saved_model.load(saved).signatures["serve"]
    served = loaded(text=tf.constant(np.asarray(texts, dtype=object)))["probs"].numpy()
    np.testing.assert_allclose(served, expected, atol=1e-6)
    assert np.std(expected) > 0.02  # a model that learned something, not a constant


# -- (c) on real sentences -----------------------------------------------------------------------
SENTIMENT = "sentiment_labelled_sentences"
# linear converges slowly at a constant Adam rate: 10 epochs land ~1 point under scikit-learn,
# 20 within ~0.5 (measured over 5 seeds: 0.822-0.829).
LINEAR_FIT = {"learning_rate": 0.01, "epochs": 20, "batch_size": 32}
LSTM_FIT = {"learning_rate": 0.005, "epochs": 8, "batch_size": 32}


@pytest.fixture(scope="module")
def sentiment_corpus(ray_local, shared_data, session_project_factory):
    """Amazon, IMDb and Yelp sentences (3,000, 2,979 after exact dedup): 2,086 train, 297
    validation, 596 test; a corpus as small as the ones the issue is about."""
    from shipyard.corpus.prepare import prepare

    project = session_project_factory(
        {
            "name": "sentiment",
            "data": {
                "source": os.path.join(shared_data, SENTIMENT, "*_labelled.txt"),
                "format": "tsv",
                "header": False,
                "quoting": False,
                "column_names": ["text", "label"],
                "splits": {"train": 0.7, "validation": 0.1, "test": 0.2},
                "vocab_size": 6000,
                "sequence_length": 48,
                "seed": 7,
            },
        }
    )
    return project, prepare(project).corpus


def sklearn_baseline(train, validation, test) -> dict[str, float]:
    """TF-IDF word 1-2-grams + char_wb 2-4-grams, logistic regression: at scikit-learn's default
    C and at the C that validation picks."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    scores = {}
    for c in (1.0, 3.0, 10.0, 30.0):
        pipeline = make_pipeline(
            make_union(
                TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True),
            ),
            LogisticRegression(C=c, max_iter=2000),
        )
        pipeline.fit(train["text"], train["label"])
        scores[c] = (
            pipeline.score(validation["text"], validation["label"]),
            pipeline.score(test["text"], test["label"]),
        )
    best = max(scores, key=lambda c: scores[c][0])
    return {"default_C": scores[1.0][1], "tuned_C": best, "tuned": scores[best][1]}


def keras_accuracy(kit, cfg, corpus, fit: dict, early_stopping: bool) -> tuple[float, float]:
    """(test accuracy, seconds) of `cfg` trained with plain Keras `fit`."""
    kind = model_kind(cfg, corpus)
    x, y, _ = inputs_and_labels(kit, cfg, corpus, "train", None)
    vx, vy, _ = inputs_and_labels(kit, cfg, corpus, "validation", None)
    tx, ty, _ = inputs_and_labels(kit, cfg, corpus, "test", None)
    started = time.perf_counter()
    tf.keras.utils.set_random_seed(42)
    model = build(cfg, corpus)
    if kind.fit_statistics is not None:
        kind.fit_statistics(model, batches_of(x, 512), identity)
    compile_for(model, corpus, fit["learning_rate"])
    callbacks = []
    if early_stopping:  # the deep model's best epoch by validation, not its last
        callbacks.append(
            tf.keras.callbacks.EarlyStopping(
                monitor="val_accuracy", patience=2, restore_best_weights=True
            )
        )
    model.fit(
        x,
        y,
        batch_size=fit["batch_size"],
        epochs=fit["epochs"],
        validation_data=(vx, vy),
        callbacks=callbacks,
        verbose=0,
    )
    accuracy = model.evaluate(tx, ty, verbose=0)[1]
    return accuracy, time.perf_counter() - started


@pytest.mark.slow
def test_linear_matches_sklearn_and_beats_an_lstm_on_real_sentences(sentiment_corpus, kit):
    _, corpus = sentiment_corpus
    assert corpus.rows("train") > 2000 and corpus.rows("test") > 550
    splits = {s: kit.read_split(corpus, s) for s in ("train", "validation", "test")}
    sklearn = sklearn_baseline(splits["train"], splits["validation"], splits["test"])

    linear_cfg = ModelConfig(kind="linear")  # the defaults: 100k buckets, l2 1e-5
    linear, linear_s = keras_accuracy(kit, linear_cfg, corpus, LINEAR_FIT, early_stopping=False)
    lstm_cfg = ModelConfig(kind="lstm_classifier", embedding_dim=32, units=32)
    lstm, lstm_s = keras_accuracy(kit, lstm_cfg, corpus, LSTM_FIT, early_stopping=True)
    print(
        f"\ntest accuracy on {corpus.rows('test')} sentences: scikit-learn TF-IDF + LR"
        f" {sklearn['default_C']:.4f} (C=1), {sklearn['tuned']:.4f} (C={sklearn['tuned_C']:g},"
        f" picked on validation); linear {linear:.4f} ({linear_s:.1f} s);"
        f" lstm_classifier {lstm:.4f} ({lstm_s:.1f} s, best validation epoch)"
    )
    # Measured: scikit-learn 0.810-0.814 (C=1) / 0.829 (C=30), linear 0.822-0.829, LSTM 0.79.
    assert linear >= sklearn["tuned"] - 0.01
    assert linear >= sklearn["default_C"]
    assert linear >= 0.815
    # The LSTM varies run to run (0.789-0.812 measured); the baseline must not trail it.
    assert linear >= lstm
