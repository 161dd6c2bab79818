"""Export: a raw-input SavedModel that predicts like the trained model, encodes like the shards,
loads without shipyard, and shrinks to TFLite."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from shipyard.corpus.tokenizer import build_vectorizer, encode
from shipyard.errors import ShipyardError
from shipyard.project import ExportConfig
from shipyard.training.export import (
    SAVED_MODEL,
    SIGNATURE,
    export_model,
    load_exported,
    predict_raw,
)

pytestmark = pytest.mark.slow

MESSY = [
    "",
    "   ",
    "FREE!!! Call NOW: 0800-123-456 ...",
    "completely unseen zzqxj words wqpl",
    "Hello,   world\twith\ttabs\nand newlines",
    "über café naïve — “quotes” and emoji 🎉",
    "a " * 200,
]


def raw_texts(kit, corpus, n: int = 100) -> list[str]:
    """Corpus texts with upper-casing and punctuation thrown in, plus messy strings."""
    texts = list(kit.read_split(corpus, "train")["text"][: n - 2 * len(MESSY)])
    shouted = [f"{t.upper()}!!" for t in texts[: len(MESSY)]]
    out = texts + shouted + MESSY
    out += texts[: n - len(out)]
    assert len(out) == n
    return out


def test_exported_model_predicts_like_the_trained_model_on_raw_text(kit, text_run, text_export):
    corpus = text_run.corpus
    texts = raw_texts(kit, corpus)
    # The in-memory model fed exactly as training fed it: the shard encoder's vectorizer.
    ids = encode(texts, build_vectorizer(corpus.vocabulary, corpus.tokenizer))
    expected = text_run.model.predict(ids, verbose=0)
    got = load_exported(text_export.path).predict_raw(texts)
    assert got.shape == expected.shape == (100, 1)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # Batching inside predict_raw changes nothing.
    np.testing.assert_allclose(predict_raw(text_export.path, texts, batch_size=7), got, atol=1e-6)


def test_the_artifacts_encoding_equals_the_shards(kit, text_run, text_export):
    exported = load_exported(text_export.path)
    rng = np.random.default_rng(0)
    for split in ("train", "validation", "test"):
        rows = kit.read_split(text_run.corpus, split)
        pick = rng.choice(len(rows["text"]), size=min(60, len(rows["text"])), replace=False)
        np.testing.assert_array_equal(exported.vectorize(rows["text"][pick]), rows["ids"][pick])


def test_signature_describes_the_artifact(text_run, text_export):
    with open(os.path.join(text_export.path, SIGNATURE)) as f:
        sig = json.load(f)
    corpus = text_run.corpus
    assert sig["labels"] == corpus.labels and sig["num_classes"] == 2
    assert sig["model_kind"] == "lstm_classifier" and sig["inputs"] == "ids"
    assert sig["serving_input"] == {"text": "string"}
    assert sig["corpus"]["content_hash"] == corpus.content_hash
    assert sig["tokenizer"] == corpus.tokenizer.to_dict()
    assert sig["checkpoint"]["epoch"] == text_run.project.training.epochs
    assert set(sig["variants"]) == {"full", "tflite_int8", "tflite_float16"}


FRESH_PROCESS = r"""
import json, sys

class NoShipyard:
    def find_spec(self, name, path=None, target=None):
        if name == "shipyard" or name.startswith("shipyard."):
            raise ImportError("shipyard must not be needed to serve")
        return None

sys.meta_path.insert(0, NoShipyard())
import tensorflow as tf

serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
texts = json.load(sys.stdin)
probs = serve(text=tf.constant(texts))["probs"].numpy()
assert not any(m.startswith("shipyard") for m in sys.modules)
print(json.dumps(probs.tolist()))
"""


def test_loads_and_predicts_in_a_process_without_shipyard(kit, text_run, text_export, tmp_path):
    texts = raw_texts(kit, text_run.corpus, 20)
    env = {"PATH": os.environ.get("PATH", ""), "TF_CPP_MIN_LOG_LEVEL": "3", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-I", "-c", FRESH_PROCESS, os.path.join(text_export.path, SAVED_MODEL)],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    probs = np.array(json.loads(done.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(probs, load_exported(text_export.path).predict_raw(texts), atol=1e-6)


def test_tflite_variants_are_smaller_and_about_as_accurate(text_export):
    assert text_export.test_accuracy is not None and text_export.test_accuracy > 0.6
    for name in ("tflite_int8", "tflite_float16"):
        variant = text_export.variants[name]
        assert "error" not in variant, variant
        assert os.path.isfile(variant["path"])
        assert variant["bytes"] < text_export.bytes, (variant["bytes"], text_export.bytes)
        assert abs(variant["test_accuracy"] - text_export.test_accuracy) <= 0.05
        assert variant["max_abs_diff_vs_full"] < 0.1
    assert (
        text_export.variants["tflite_int8"]["bytes"]
        < text_export.variants["tflite_float16"]["bytes"]
    )


def test_a_checkpoint_that_does_not_fit_the_model_is_refused(text_run, tmp_path):
    project = text_run.project.model_copy(
        update={"model": text_run.project.model.model_copy(update={"units": 7})}
    )
    with pytest.raises(ShipyardError, match="does not fit"):
        export_model(text_run.result.checkpoint, project, text_run.corpus, str(tmp_path / "x"))
    assert not os.path.exists(tmp_path / "x")


def test_ngram_model_exports_as_it_is(kit, text_run, tmp_path):
    """`text` models already read strings: the export adds only the signature."""
    base = text_run.project
    project = base.model_copy(
        update={
            "model": base.model.model_copy(
                update={"kind": "ngram_classifier", "ngram_buckets": 256, "embedding_dim": 8}
            ),
            "training": base.training.model_copy(
                update={"epochs": 1, "export": ExportConfig(compress=False)}
            ),
        }
    )
    trained = kit.train_in_process(project, text_run.corpus, tmp_path / "ngram-run")
    export = export_model(trained.result.checkpoint, project, trained.corpus, str(tmp_path / "ex"))
    assert export.signature["inputs"] == "text" and not export.variants
    texts = raw_texts(kit, trained.corpus, 40)
    expected = trained.model.predict(np.array(texts, dtype=object), verbose=0)
    np.testing.assert_allclose(load_exported(export.path).predict_raw(texts), expected, atol=1e-5)


def test_tabular_model_takes_raw_rows(kit, tabular_corpus, tmp_path):
    project, corpus = tabular_corpus
    trained = kit.train_in_process(project, corpus, tmp_path / "mlp-run")
    export = export_model(trained.result.checkpoint, project, corpus, str(tmp_path / "ex"))
    exported = load_exported(export.path)
    numeric, categorical = list(corpus.features["numeric"]), list(corpus.features["categorical"])
    assert set(exported.raw_columns) == {*numeric, *categorical}

    test = kit.read_split(corpus, "test")
    expected = trained.model.predict(kit.model_inputs(project.model, corpus, test), verbose=0)
    columns = {c: test[c] for c in exported.raw_columns}
    np.testing.assert_allclose(exported.predict_raw(columns), expected, atol=1e-5)

    # Raw rows as a client sends them: a missing number takes the training mean and categories
    # are trimmed, as the corpus encoder does.
    row = {c: test[c][:1].tolist()[0] for c in exported.raw_columns}  # plain Python values
    filled = {**row, numeric[0]: corpus.features["numeric"][numeric[0]]["mean"]}
    messy = {**row, numeric[0]: None, categorical[0]: f"  {row[categorical[0]]} "}
    probs = exported.predict_raw([filled, messy])
    np.testing.assert_allclose(probs[0], probs[1], atol=1e-6)
    assert tf.io.gfile.exists(os.path.join(export.path, SAVED_MODEL, "saved_model.pb"))
