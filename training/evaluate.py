"""`shipyard evaluate`: re-score any registered version (or export folder) on a corpus split.

The rows go in raw — the split's text or raw columns from its Parquet shards — through the
exported model, exactly as serving would feed them, and are scored by the same
`classification_metrics` that training reports. A version exported from a different corpus
(content hash) is still evaluated, but the result says so.
"""

from __future__ import annotations

import math
import os
import time

from shipyard.corpus.manifest import PreparedCorpus
from shipyard.errors import UserInputError
from shipyard.project import Project
from shipyard.training.export_loader import load_exported
from shipyard.training.metrics import classification_metrics
from shipyard.training.split_stream import predict_split

SPLITS = ("train", "validation", "test")


def evaluate(model_ref: str, project: Project, split: str = "test", batch_size: int = 1024) -> dict:
    """Metrics of `model_ref` (name@alias, name/version, models:/..., or an export path)."""
    if split not in SPLITS:
        raise UserInputError(f"--split: must be one of {', '.join(SPLITS)} (got {split!r})")
    path, version = _locate(model_ref, project)
    corpus = PreparedCorpus.load(project.corpus_dir)
    exported = load_exported(path)
    columns = exported.raw_columns
    started = time.perf_counter()
    probs, labels = predict_split(
        lambda batch: exported.predict_raw(batch, batch_size), corpus, split, columns, batch_size
    )
    seconds = time.perf_counter() - started
    metrics = classification_metrics(probs, labels, exported.num_classes)
    trained_on = exported.signature.corpus.content_hash
    return {
        **metrics,
        "model": model_ref,
        "version": version,
        "path": exported.path,
        "split": split,
        "labels": exported.labels,
        "corpus": corpus.path,
        "corpus_content_hash": corpus.content_hash,
        "trained_on_content_hash": trained_on,
        "corpus_matches": trained_on == corpus.content_hash,
        "rows_per_second": len(labels) / seconds if seconds > 0 else None,
    }


def _locate(model_ref: str, project: Project) -> tuple[str, int | None]:
    """(export folder, registered version or None for a plain path)."""
    candidate = os.path.expanduser(model_ref)
    if os.path.isdir(candidate):
        return candidate, None  # load_exported says so when it is not an export
    if candidate.startswith(("/", "./", "../", "~")):
        raise UserInputError(f"{model_ref}: no such export folder")
    from shipyard.training.model_versions import artifact_path, resolve

    version = resolve(project, model_ref)
    return artifact_path(project, version), version.version


def format_table(metrics: dict) -> str:
    """A short human summary: the scores, then the confusion matrix with label names."""
    version = f" (version {metrics['version']})" if metrics.get("version") else ""
    lines = [f"{metrics.get('model', '?')}{version} on {metrics.get('split', '?')}"]
    lines.append(f"  {'rows':<12}{metrics['count']:>10,}")
    for key in ("loss", "accuracy", "precision", "recall", "f1", "macro_f1", "roc_auc"):
        value = metrics.get(key)
        if isinstance(value, float):
            shown = "n/a" if math.isnan(value) else f"{value:.4f}"
            lines.append(f"  {key:<12}{shown:>10}")
    if not metrics.get("corpus_matches", True):
        lines.append(
            f"  note: the model was trained on corpus {metrics['trained_on_content_hash'][:12]},"
            f" this is {metrics['corpus_content_hash'][:12]}"
        )
    matrix, labels = metrics.get("confusion_matrix"), metrics.get("labels")
    if matrix and labels:
        width = max(8, *(len(str(lab)) + 2 for lab in labels))
        lines.append("  confusion matrix (rows: true, columns: predicted)")
        lines.append("  " + " " * width + "".join(f"{lab!s:>{width}}" for lab in labels))
        for lab, row in zip(labels, matrix, strict=True):
            lines.append(f"  {lab!s:<{width}}" + "".join(f"{v:>{width}}" for v in row))
    return "\n".join(lines)
