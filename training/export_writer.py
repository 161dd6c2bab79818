"""Write a checkpoint as a servable TF SavedModel that takes raw input (plus optional TFLite).

The model is rebuilt from the checkpoint's own record (`state.json`: the model config the weights
were trained with and the corpus they were trained on), never from what a project file says now;
a checkpoint of another corpus is refused, since its ids, labels or columns mean other things.

The artifact holds the preprocessing, so serving needs neither shipyard nor training code: `ids`
models get the corpus's own `TextVectorization` (built by the same `build_vectorizer`, from the
manifest's vocabulary, that wrote the shards) in front; `text` models already read strings; tabular
models take a dict of raw columns (missing numbers take the training mean, categories are trimmed,
exactly as the corpus encoder does). The `serving_default` signature takes `text` (string [n]) or
one [n] tensor per column and returns `probs` ((n, 1) P(labels[1]) for binary, (n, k) otherwise).

Layout of an export folder:

    saved_model/      tf.saved_model.load(...).signatures["serving_default"] in any TF process
                      (after importing the signature's `op_libraries`, if any)
    signature.json    `ExportSignature` (training/signature.py): inputs, labels, tokenizer,
                      corpus hash, model config, checkpoint, op libraries, variants
    tflite/           model_int8.tflite, model_float16.tflite (with `compress`)
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import tensorflow as tf

from shipyard.atomic_dir import staging_path, swap_into_place
from shipyard.corpus.manifest import MANIFEST, PreparedCorpus
from shipyard.errors import ShipyardError, UserInputError, first_line
from shipyard.training.checkpoint import WEIGHTS, read_state
from shipyard.training.signature import (
    OUTPUT,
    SAVED_MODEL,
    SERVING_KEY,
    VECTORIZE_KEY,
    CheckpointRef,
    CorpusRef,
    ExportSignature,
    OutputSpec,
    Variant,
    write_signature,
)

if TYPE_CHECKING:
    from shipyard.training.models import ModelKind


@dataclass
class ExportResult:
    path: str  # the export folder (what the registry logs)
    saved_model: str
    signature: ExportSignature
    bytes: int  # size of saved_model/
    # TFLite variants by name (with `compress`); `file` is relative to `path`.
    variants: dict[str, Variant] = field(default_factory=dict)
    # The full model's accuracy on `accuracy_split` ("test", or "validation" when the corpus has
    # no test split), measured when variants are made; None otherwise.
    accuracy: float | None = None
    accuracy_split: str | None = None

    def variant_path(self, name: str) -> str | None:
        file = self.variants[name].file
        return os.path.join(self.path, file) if file else None


def export_model(
    checkpoint_dir: str | None,
    corpus: PreparedCorpus,
    out_dir: str,
    *,
    name: str,
    compress: bool = False,
) -> ExportResult:
    """Rebuild the checkpoint's model, restore its weights and write a raw-input servable named
    `name` to `out_dir` (with `compress`, TFLite variants too).

    Written to a temporary folder beside `out_dir` and renamed into place when complete, so a
    failed export never leaves something that looks servable (an earlier export is replaced).
    """
    from shipyard.training.models import model_kind

    if not checkpoint_dir:
        raise ShipyardError("no checkpoint to export (the run reported none)")
    state = read_state(checkpoint_dir)
    state.check_corpus(corpus.content_hash, checkpoint_dir)
    config = state.model_config()
    kind = model_kind(config, corpus)
    model = kind.build(config, corpus)
    restore(model, checkpoint_dir)
    served, signatures, columns = _servable(model, kind.inputs, corpus)

    tmp = staging_path(out_dir)
    os.makedirs(tmp)
    try:
        # The signatures are the artifact's whole interface (`tf.saved_model.load(...)
        # .signatures`). Keras's per-layer call traces, needed only to reload it as a Keras model,
        # would take 10 of 11 seconds of the save for a small LSTM and are left out.
        served.save(
            os.path.join(tmp, SAVED_MODEL),
            save_format="tf",
            include_optimizer=False,
            signatures=signatures,
            save_traces=False,
        )
        signature = ExportSignature(
            name=name,
            model_kind=kind.name,
            inputs=kind.inputs,
            columns=columns,
            labels=list(corpus.labels),
            output=_output_spec(corpus.num_classes),
            corpus=CorpusRef(
                kind=corpus.kind,
                content_hash=corpus.content_hash,
                path=corpus.path,
                manifest=f"{corpus.path.rstrip('/')}/{MANIFEST}",
            ),
            model_config=config.model_dump(mode="json"),
            checkpoint=CheckpointRef(
                path=_absolute(checkpoint_dir), epoch=state.epoch, metrics=state.metrics
            ),
            tokenizer=corpus.tokenizer.to_dict() if corpus.kind == "text" else None,
            op_libraries=op_libraries(kind),
            signatures=sorted(signatures),
            serving_signature=SERVING_KEY,
            tensorflow=tf.__version__,
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        write_signature(tmp, signature)
        swap_into_place(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    out_dir = os.path.abspath(out_dir).rstrip("/")
    result = ExportResult(
        path=out_dir,
        saved_model=os.path.join(out_dir, SAVED_MODEL),
        signature=signature,
        bytes=dir_bytes(os.path.join(out_dir, SAVED_MODEL)),
    )
    if compress:
        from shipyard.training.tflite_variants import add_tflite_variants

        add_tflite_variants(result, corpus)
    return result


def restore(model: tf.keras.Model, checkpoint_dir: str) -> None:
    """Load the loop's weights into `model`; fail loudly when they do not fit it (the export
    would otherwise carry untrained weights)."""
    prefix = os.path.join(checkpoint_dir, WEIGHTS)
    if not tf.io.gfile.exists(f"{prefix}.index"):  # gfile: local paths and gs:// alike
        raise UserInputError(f"{checkpoint_dir}: no TensorFlow checkpoint ({WEIGHTS}.index)")
    try:
        status = tf.train.Checkpoint(model=model).read(prefix)
        status.expect_partial()  # the optimizer's slots are not needed to serve
        status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as exc:
        raise ShipyardError(
            f"{checkpoint_dir}: the checkpoint does not fit model {model.name!r} built from its"
            f" own state.json model config ({first_line(exc)})"
        ) from None


def op_libraries(kind: ModelKind) -> list[str]:
    """The Python modules whose TensorFlow ops the text preprocessing uses (e.g.
    `tensorflow_text` for NFKC), as the tokenizer declares them; none for tabular models."""
    if kind.inputs not in ("ids", "text"):
        return []
    from shipyard.corpus import tokenizer

    return list(getattr(tokenizer, "OP_LIBRARIES", ()))


def _servable(model: tf.keras.Model, inputs: str, corpus: PreparedCorpus):
    """(Keras model raw -> probs, {signature name: tf.function}, the raw columns and dtypes).

    `ids` models also get a `vectorize` signature (text -> ids): the encoding inside the
    artifact can be checked against the shards, and explanations can map ids back to tokens.
    """
    text_spec = tf.TensorSpec([None], tf.string, name="text")
    if inputs == "text":

        @tf.function(input_signature=[text_spec])
        def serve_text(text):
            return {OUTPUT: model(tf.reshape(text, [-1]), training=False)}

        return model, {SERVING_KEY: serve_text}, {"text": "string"}
    if inputs == "ids":
        from shipyard.corpus.tokenizer import build_vectorizer

        raw = tf.keras.Input(shape=(), dtype=tf.string, name="text")
        vectorizer = build_vectorizer(corpus.vocabulary, corpus.tokenizer)
        served = tf.keras.Model(raw, model(vectorizer(raw)), name=f"{model.name}_raw")

        @tf.function(input_signature=[text_spec])
        def serve(text):
            return {OUTPUT: served(tf.reshape(text, [-1]), training=False)}

        @tf.function(input_signature=[text_spec])
        def vectorize(text):
            return {"ids": tf.cast(vectorizer(tf.reshape(text, [-1])), tf.int32)}

        return served, {SERVING_KEY: serve, VECTORIZE_KEY: vectorize}, {"text": "string"}

    numeric = dict.fromkeys(corpus.features["numeric"], "float32")
    columns = {**numeric, **dict.fromkeys(corpus.features["categorical"], "string")}
    means = {name: float(m["mean"]) for name, m in corpus.features["numeric"].items()}
    signature = {
        name: tf.TensorSpec([None], tf.float32 if dtype == "float32" else tf.string, name=name)
        for name, dtype in columns.items()
    }

    @tf.function(input_signature=[signature])
    def serve_rows(rows):
        features = {}
        for name, value in rows.items():
            if name in means:  # the corpus encoder fills missing numbers with the train mean
                mean = tf.constant(means[name], value.dtype)
                value = tf.where(tf.math.is_nan(value), mean, value)
            else:
                value = tf.strings.strip(value)
            features[name] = tf.reshape(value, [-1, 1])
        return {OUTPUT: model(features, training=False)}

    return model, {SERVING_KEY: serve_rows}, columns


def _output_spec(num_classes: int) -> OutputSpec:
    binary = num_classes == 2
    return OutputSpec(
        name=OUTPUT,
        shape=[None, 1 if binary else num_classes],
        meaning="P(labels[1])" if binary else "P(labels[i])",
    )


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


def dir_bytes(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files
    )
