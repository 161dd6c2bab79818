"""Log a finished training run to MLflow: one run per training run, with what reproduces it.

The run carries the effective model and training config from the checkpoint's own record (what
the weights were trained with, not what the project file says now), the corpus (content hash and
manifest, as an MLflow dataset input), the source commit and whether the checkout was dirty,
per-epoch and final metrics, plots, TensorBoard logs and the export that serving loads.
Registering the export as a model version is `model_versions.register_version`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shipyard.project import Project
from shipyard.training.mlflow_store import client, experiment_id

if TYPE_CHECKING:
    from shipyard.source_commit import SourceCommit
    from shipyard.training.checkpoint import CheckpointState
    from shipyard.training.export_writer import ExportResult
    from shipyard.training.trainer import TrainResult

MODEL_ARTIFACT = "model"
# Ray Train's bookkeeping columns in the metrics history: not model metrics.
NOT_METRICS = {
    "epoch",
    "timestamp",
    "time_this_iter_s",
    "time_total_s",
    "time_since_restore",
    "iterations_since_restore",
    "training_iteration",
    "pid",
    "done",
    "should_checkpoint",
}
MAX_PARAMS, MAX_METRICS = 100, 1000  # MLflow's per-batch limits


@dataclass
class LoggedRun:
    run_id: str
    model_source: str  # artifact URI of the logged export folder
    tags: dict[str, str]  # lineage, for the model version too


def log_run(
    project: Project,
    result: TrainResult,
    export: ExportResult,
    *,
    state: CheckpointState,
    source: SourceCommit,
) -> LoggedRun:
    """Create a finished MLflow run for `result` with `export` as its model artifact."""
    from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param

    corpus = result.corpus
    mlc = client(project)
    tags = lineage_tags(result, state, source)
    run_tags = {**tags, "project_file": project.source_file}
    if source.commit != "unknown":
        run_tags["mlflow.source.git.commit"] = source.commit
    run = mlc.create_run(experiment_id(mlc, project), run_name=result.run_name, tags=run_tags)
    run_id = run.info.run_id
    try:
        params = flatten({"model": state.model, "training": state.training})
        params["corpus.content_hash"] = corpus.content_hash
        params["checkpoint.epoch"] = state.epoch
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS):
            mlc.log_batch(run_id, params=items[i : i + MAX_PARAMS])

        metrics = [
            Metric(k, v, ts, step) for (k, step), (v, ts) in run_metrics(result, export).items()
        ]
        for i in range(0, len(metrics), MAX_METRICS):
            mlc.log_batch(run_id, metrics=metrics[i : i + MAX_METRICS])

        manifest = tags["corpus_manifest"]
        mlc.log_inputs(
            run_id,
            datasets=[
                DatasetInput(
                    Dataset(
                        name=corpus.manifest.get("name", project.name),
                        digest=corpus.content_hash[:32],
                        source_type="local",
                        source=json.dumps({"uri": manifest}),
                        schema=json.dumps(corpus.manifest.get("schema", {})),
                        profile=json.dumps({s: corpus.rows(s) for s in corpus.manifest["splits"]}),
                    ),
                    tags=[InputTag("mlflow.data.context", "training")],
                )
            ],
        )
        from shipyard.training.run_plots import write_plots

        with tempfile.TemporaryDirectory() as tmp:
            if write_plots(result, tmp):
                mlc.log_artifacts(run_id, tmp, "plots")
        if os.path.isfile(manifest):
            mlc.log_artifact(run_id, manifest, "corpus")
        mlc.log_artifacts(run_id, export.path, MODEL_ARTIFACT)
        board = tensorboard_dir(result)
        if board:
            mlc.log_artifacts(run_id, board, "tensorboard")
    except BaseException:
        mlc.set_terminated(run_id, "FAILED")
        raise
    mlc.set_terminated(run_id, "FINISHED")
    source_uri = f"{run.info.artifact_uri.rstrip('/')}/{MODEL_ARTIFACT}"
    return LoggedRun(run_id=run_id, model_source=source_uri, tags=tags)


def lineage_tags(result: TrainResult, state: CheckpointState, source: SourceCommit) -> dict:
    """What a version was made from: corpus, source, run and checkpoint (empty values dropped)."""
    corpus = result.corpus
    best = getattr(result, "best_epoch", None)
    tags = {
        "corpus_content_hash": corpus.content_hash,
        "corpus_manifest": f"{corpus.path.rstrip('/')}/manifest.json",
        "corpus_path": corpus.path,
        "source_commit": source.commit,
        "source_dirty": {True: "true", False: "false"}.get(source.dirty, "unknown"),
        "train_run": result.run_name,
        "run_dir": result.run_dir,
        "checkpoint": result.checkpoint or "",
        "checkpoint_epoch": str(state.epoch),
        "best_epoch": str(best) if best else "",
        "model_kind": str(state.model.get("kind", "")),
        "worker_nodes": _worker_nodes(getattr(result, "metrics", {}).get("worker_nodes")),
    }
    return {k: v for k, v in tags.items() if v}


def _worker_nodes(reported) -> str:
    """The Ray node id of each rank, as the loop reports it (a JSON list); only the distinct
    ones when a large run's list would pass MLflow's tag limit."""
    if not isinstance(reported, str) or not reported:
        return ""
    if len(reported) <= 5000:
        return reported
    try:
        return json.dumps(sorted(set(json.loads(reported))))[:5000]
    except ValueError:
        return ""


def run_metrics(result: TrainResult, export: ExportResult) -> dict[tuple[str, int], tuple]:
    """{(key, step): (value, timestamp ms)}: per-epoch history, then final and export numbers
    (deduplicated: the store rejects the same key, step and time twice). Export accuracies are
    named by the split they were measured on (`export_full_validation_accuracy` when the corpus
    has no test split)."""
    out: dict[tuple[str, int], tuple] = {}
    now = int(time.time() * 1000)
    last = 0
    for row in result.history:
        step = int(row.get("epoch") or row.get("training_iteration") or 0)
        last = max(last, step)
        ts = int(float(row["timestamp"]) * 1000) if _number(row.get("timestamp")) else now
        for key, value in row.items():
            if key not in NOT_METRICS and _number(value):
                out[(key, step)] = (float(value), ts)
    step = int(result.metrics.get("epoch") or last)
    for key, value in result.metrics.items():
        if key not in NOT_METRICS and _number(value) and (key, step) not in out:
            out[(key, step)] = (float(value), now)
    extra: dict[str, float] = {"export_saved_model_bytes": export.bytes}
    if export.accuracy is not None:
        extra[f"export_full_{export.accuracy_split}_accuracy"] = export.accuracy
    for name, variant in export.variants.items():
        if _number(variant.bytes):
            extra[f"export_{name}_bytes"] = variant.bytes
        if _number(variant.accuracy):
            extra[f"export_{name}_{variant.accuracy_split}_accuracy"] = variant.accuracy
    for key, value in extra.items():
        out[(key, step)] = (float(value), now)
    return out


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    """{"training": {"export": {"compress": True}}} -> {"training.export.compress": True}."""
    out: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, list | dict) else value
    return out


def tensorboard_dir(result: TrainResult) -> str | None:
    """The loop writes TensorBoard logs to `<runs>/<run name>/tensorboard`, which is the parent
    of Ray's trial folder (`result.run_dir`); look in both."""
    for base in (result.run_dir, os.path.dirname(os.path.normpath(result.run_dir))):
        path = os.path.join(base, "tensorboard")
        if os.path.isdir(path) and any(files for _, _, files in os.walk(path)):
            return path
    return None


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
