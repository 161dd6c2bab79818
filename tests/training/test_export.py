"""Export: a raw-input SavedModel that predicts like the trained model, encodes like the shards,
is rebuilt from its checkpoint's own record, loads light (no Ray) or without shipyard at all,
and shrinks to TFLite."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from export_helpers import compressed_export, copy_checkpoint

from shipyard.corpus import tokenizer
from shipyard.corpus.manifest import PreparedCorpus
from shipyard.corpus.tokenizer import build_vectorizer, encode
from shipyard.errors import ShipyardError, UserInputError
from shipyard.project import ExportConfig
from shipyard.training.export_loader import load_exported, predict_raw
from shipyard.training.export_writer import export_model
from shipyard.training.signature import (
    SAVED_MODEL,
    SIGNATURE_FILE,
    ExportSignature,
    read_signature,
    write_signature,
)
from shipyard.training.tflite_variants import add_tflite_variants

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


@pytest.fixture(scope="module")
def text_export(text_run, tmp_path_factory):
    """The LSTM run exported with TFLite variants (shared with the other modules' tests)."""
    return compressed_export(text_run, tmp_path_factory)


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
    with open(os.path.join(text_export.path, SIGNATURE_FILE)) as f:
        raw = json.load(f)
    sig = read_signature(text_export.path)
    assert sig == text_export.signature  # what the writer holds is what the file says
    corpus = text_run.corpus
    assert raw["format_version"] == 2
    assert sig.labels == corpus.labels and sig.num_classes == 2
    assert sig.model_kind == "lstm_classifier" and sig.inputs == "ids"
    assert sig.columns == {"text": "string"}
    assert sig.output.shape == [None, 1]
    assert sig.corpus.content_hash == corpus.content_hash
    assert sig.tokenizer == corpus.tokenizer.to_dict()
    assert sig.model_config == text_run.project.model.model_dump(mode="json")
    assert sig.checkpoint.epoch == text_run.project.training.epochs
    assert sig.checkpoint.path == text_run.result.checkpoint
    assert sig.op_libraries == list(getattr(tokenizer, "OP_LIBRARIES", ()))
    assert set(sig.variants) == {"full", "tflite_int8", "tflite_float16"}
    assert sig.variants["full"].accuracy == text_export.accuracy
    assert sig.variants["full"].accuracy_split == text_export.accuracy_split == "test"


def test_a_format_1_signature_still_reads():
    """Exports registered before op libraries were recorded keep loading."""
    old = {
        "format_version": 1,
        "name": "m",
        "model_kind": "lstm_classifier",
        "inputs": "ids",
        "serving_signature": "serving_default",
        "signatures": ["serving_default", "vectorize"],
        "serving_input": {"text": "string"},
        "output": {"name": "probs", "shape": [None, 1], "meaning": "P(labels[1])"},
        "labels": ["ham", "spam"],
        "num_classes": 2,
        "corpus": {"kind": "text", "content_hash": "ab" * 32, "path": "/c", "manifest": "/c/m"},
        "tokenizer": {"mode": "word"},
        "features": None,
        "model_config": {"kind": "lstm_classifier", "units": 8},
        "checkpoint": {"path": "/ck", "epoch": 3, "metrics": {}},
        "tensorflow": "2.15.1",
        "created_at": "2026-01-01T00:00:00+00:00",
        "variants": {
            "full": {"file": "saved_model", "bytes": 10, "validation_accuracy": 0.9},
            "tflite_int8": {"error": "ValueError: no"},
        },
    }
    sig = ExportSignature.from_dict(old)
    assert sig.columns == {"text": "string"} and sig.op_libraries == []
    assert (sig.variants["full"].accuracy, sig.variants["full"].accuracy_split) == (
        0.9,
        "validation",
    )
    assert sig.variants["tflite_int8"].error == "ValueError: no"
    with pytest.raises(UserInputError, match="signature format 9"):
        ExportSignature.from_dict({**old, "format_version": 9})
    with pytest.raises(UserInputError, match="lacks 'labels'"):
        ExportSignature.from_dict({k: v for k, v in old.items() if k != "labels"})


FRESH_PROCESS = r"""
import importlib, json, os, sys

class NoShipyard:
    def find_spec(self, name, path=None, target=None):
        if name == "shipyard" or name.startswith("shipyard."):
            raise ImportError("shipyard must not be needed to serve")
        return None

sys.meta_path.insert(0, NoShipyard())
import tensorflow as tf

# The contract for any loader: import the signature's op libraries, then load the graph.
with open(os.path.join(sys.argv[1], "signature.json")) as f:
    for name in json.load(f)["op_libraries"]:
        importlib.import_module(name)
serve = tf.saved_model.load(os.path.join(sys.argv[1], "saved_model")).signatures["serving_default"]
texts = json.load(sys.stdin)
probs = serve(text=tf.constant(texts))["probs"].numpy()
assert not any(m.startswith("shipyard") for m in sys.modules)
print(json.dumps(probs.tolist()))
"""


def test_loads_and_predicts_in_a_process_without_shipyard(kit, text_run, text_export, tmp_path):
    texts = raw_texts(kit, text_run.corpus, 20)
    env = {"PATH": os.environ.get("PATH", ""), "TF_CPP_MIN_LOG_LEVEL": "3", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-I", "-c", FRESH_PROCESS, text_export.path],
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


LIGHT_LOADER = r"""
import json, os, sys

import tensorflow as tf

# TensorFlow's own import sets TF2_BEHAVIOR and TPU_ML_PLATFORM: the loader must add nothing.
environ = dict(os.environ)
real_load = tf.saved_model.load
with open(os.path.join(sys.argv[1], "signature.json")) as f:
    op_libraries = json.load(f)["op_libraries"]
op_library_first = []

def spy(*args, **kwargs):
    op_library_first.append([name in sys.modules for name in op_libraries])
    return real_load(*args, **kwargs)

tf.saved_model.load = spy
from shipyard.training.export_loader import load_exported

model = load_exported(sys.argv[1])
probs = model.predict_raw(json.load(sys.stdin))
heavy = sorted(
    m for m in sys.modules
    if m.split(".")[0] in ("ray", "mlflow", "horovod")
    or m.startswith(("shipyard.corpus", "shipyard.cluster", "shipyard.project"))
    or m in ("shipyard.training.trainer", "shipyard.training.loop")
)
keys = environ.keys() | os.environ.keys()
changed = sorted(k for k in keys if environ.get(k) != os.environ.get(k))
print(json.dumps({
    "probs": probs.tolist(), "heavy": heavy, "changed": changed,
    "op_library_first": op_library_first, "op_libraries": op_libraries,
}))
"""


def test_the_light_loader_imports_no_ray_and_changes_no_environment(
    kit, text_run, text_export, tmp_path
):
    """A serving process: the loader, the op libraries the signature names (imported before the
    graph is loaded) and TensorFlow; no Ray, no corpus code, no environment changes."""
    export = tmp_path / "export"
    shutil.copytree(text_export.path, export)
    signature = read_signature(str(export))
    signature.op_libraries = [*signature.op_libraries, "fake_op_library"]
    write_signature(str(export), signature)
    libs = tmp_path / "libs"
    libs.mkdir()
    (libs / "fake_op_library.py").write_text("REGISTERED = True\n")

    texts = raw_texts(kit, text_run.corpus, 20)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": str(libs),
    }
    done = subprocess.run(
        [sys.executable, "-c", LIGHT_LOADER, str(export)],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["heavy"] == []
    assert out["changed"] == []
    assert out["op_libraries"][-1] == "fake_op_library"
    assert out["op_library_first"] == [[True] * len(out["op_libraries"])]
    np.testing.assert_allclose(
        np.array(out["probs"]), load_exported(text_export.path).predict_raw(texts), atol=1e-6
    )


def test_a_missing_op_library_is_named(text_export, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(text_export.path, export)
    signature = read_signature(str(export))
    signature.op_libraries = ["shipyard_no_such_op_library"]
    write_signature(str(export), signature)
    with pytest.raises(UserInputError, match="op library 'shipyard_no_such_op_library'"):
        load_exported(str(export))


def test_tflite_variants_are_smaller_and_about_as_accurate(text_export):
    assert text_export.accuracy_split == "test"
    assert text_export.accuracy is not None and text_export.accuracy > 0.6
    for name in ("tflite_int8", "tflite_float16"):
        variant = text_export.variants[name]
        assert variant.error is None, variant
        assert os.path.isfile(text_export.variant_path(name))
        assert variant.bytes < text_export.bytes, (variant.bytes, text_export.bytes)
        assert variant.accuracy_split == "test"
        assert abs(variant.accuracy - text_export.accuracy) <= 0.05
        assert variant.max_abs_diff_vs_full < 0.1
    assert text_export.variants["tflite_int8"].bytes < text_export.variants["tflite_float16"].bytes


def test_without_a_test_split_the_accuracy_says_validation(text_run, tmp_path):
    corpus = text_run.corpus
    splits = {k: v for k, v in corpus.manifest["splits"].items() if k != "test"}
    no_test = PreparedCorpus(corpus.path, {**corpus.manifest, "splits": splits})
    export = export_model(text_run.result.checkpoint, no_test, str(tmp_path / "ex"), name="m")
    add_tflite_variants(export, no_test, names=("tflite_int8",))  # one conversion is enough
    assert export.accuracy_split == "validation" and export.accuracy is not None
    variant = export.variants["tflite_int8"]
    assert variant.error is None and variant.accuracy_split == "validation"
    written = read_signature(export.path).variants
    assert written["full"].accuracy_split == written["tflite_int8"].accuracy_split == "validation"


def test_a_checkpoint_of_another_corpus_is_refused(text_run, tmp_path):
    corpus = text_run.corpus
    other = PreparedCorpus(corpus.path, {**corpus.manifest, "content_hash": "e" * 64})
    with pytest.raises(UserInputError) as failure:
        export_model(text_run.result.checkpoint, other, str(tmp_path / "x"), name="m")
    assert corpus.content_hash[:12] in str(failure.value)
    assert "e" * 12 in str(failure.value)
    assert not os.path.exists(tmp_path / "x")


def test_weights_that_do_not_fit_their_record_are_refused(text_run, tmp_path):
    """The model is built from state.json: a record that lies about the weights fails loudly
    instead of exporting untrained weights."""
    model = {**text_run.project.model.model_dump(mode="json"), "units": 7}
    checkpoint = copy_checkpoint(text_run.result.checkpoint, tmp_path / "ck", model=model)
    with pytest.raises(ShipyardError, match="does not fit"):
        export_model(checkpoint, text_run.corpus, str(tmp_path / "x"), name="m")
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
    export = export_model(trained.result.checkpoint, trained.corpus, str(tmp_path / "ex"), name="m")
    assert export.signature.inputs == "text" and not export.variants
    assert export.signature.model_config["kind"] == "ngram_classifier"
    texts = raw_texts(kit, trained.corpus, 40)
    expected = trained.model.predict(np.array(texts, dtype=object), verbose=0)
    np.testing.assert_allclose(load_exported(export.path).predict_raw(texts), expected, atol=1e-5)


def test_tabular_model_takes_raw_rows(kit, tabular_corpus, tmp_path):
    project, corpus = tabular_corpus
    trained = kit.train_in_process(project, corpus, tmp_path / "mlp-run")
    export = export_model(trained.result.checkpoint, corpus, str(tmp_path / "ex"), name="m")
    exported = load_exported(export.path)
    numeric, categorical = list(corpus.features["numeric"]), list(corpus.features["categorical"])
    assert set(exported.raw_columns) == {*numeric, *categorical}
    assert exported.signature.op_libraries == [] and exported.signature.tokenizer is None

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
