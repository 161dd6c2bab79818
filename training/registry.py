"""MLflow tracking and model registry: one run per training run, one version per export.

Embedded by default (a sqlite file in the project's workdir, artifacts beside it), a tracking
server when `MLFLOW_TRACKING_URI` is set. The sqlite store takes one writer: call these from the
driver (the CLI, Train's or Tune's driver-side callbacks), never from workers.

A version carries what makes it reproducible: the corpus content hash and manifest (lineage),
the git commit, the flattened model and training config, per-epoch and final metrics, plots and
the exported artifact that serving loads. Aliases (`champion`, `challenger`) name the versions
that serving and rollouts follow.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from shipyard.errors import ShipyardError, UserInputError
from shipyard.project import Project

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from shipyard.training.export import ExportResult
    from shipyard.training.trainer import TrainResult

DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
MODEL_ARTIFACT = "model"
ALIASES = ("champion", "challenger")
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
class RegisteredVersion:
    name: str
    version: int
    run_id: str | None
    source: str  # artifact URI of the export folder
    tags: dict = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)
    tracking_uri: str = ""

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def local_path(self) -> str | None:
        """The export folder on this machine, when the artifact store is a local folder."""
        return _local(self.source)


# -- connection ----------------------------------------------------------------------------------
def tracking_uri(project: Project) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{project.workdir_path / DB_FILE}"


def client(project: Project) -> MlflowClient:
    from mlflow import MlflowClient

    uri = tracking_uri(project)
    if uri.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(uri.removeprefix("sqlite:///")) or ".", exist_ok=True)
    _quiet()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _quiet() -> None:
    """The sqlite store's schema migrations log a dozen INFO lines on first use."""
    for name in ("alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _experiment_id(mlc: MlflowClient, project: Project) -> str:
    found = mlc.get_experiment_by_name(project.name)
    if found is not None:
        return found.experiment_id
    # A local store keeps artifacts under the workdir (MLflow's default is ./mlruns of the cwd);
    # a tracking server chooses its own artifact root.
    local = urlparse(tracking_uri(project)).scheme in ("sqlite", "file", "")
    location = (project.workdir_path / ARTIFACTS_DIR).as_uri() if local else None
    return mlc.create_experiment(project.name, artifact_location=location)


# -- logging a run -------------------------------------------------------------------------------
def log_run(project: Project, result: TrainResult, export: ExportResult) -> RegisteredVersion:
    """Log a finished training run with its export and register it as a new model version."""
    from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param

    corpus = result.corpus
    mlc = client(project)
    experiment = _experiment_id(mlc, project)
    commit = git_commit()
    manifest = f"{corpus.path.rstrip('/')}/manifest.json"
    lineage = {
        "corpus_content_hash": corpus.content_hash,
        "corpus_manifest": manifest,
        "corpus_path": corpus.path,
        "git_commit": commit,
        "train_run": result.run_name,
        "run_dir": result.run_dir,
        "checkpoint": result.checkpoint or "",
        "model_kind": project.model.kind,
    }
    run = mlc.create_run(
        experiment,
        run_name=result.run_name,
        tags={**lineage, "mlflow.source.git.commit": commit, "project_file": project.source_file},
    )
    run_id = run.info.run_id
    try:
        params = flatten(
            {
                "model": project.model.model_dump(mode="json"),
                "training": project.training.model_dump(mode="json"),
            }
        )
        params["corpus.content_hash"] = corpus.content_hash
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS):
            mlc.log_batch(run_id, params=items[i : i + MAX_PARAMS])

        metrics = [
            Metric(k, v, ts, step) for (k, step), (v, ts) in _metrics(result, export).items()
        ]
        for i in range(0, len(metrics), MAX_METRICS):
            mlc.log_batch(run_id, metrics=metrics[i : i + MAX_METRICS])

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
        with tempfile.TemporaryDirectory() as tmp:
            written = write_plots(result, tmp)
            if written:
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

    from mlflow.exceptions import MlflowException

    name = project.registered_model_name
    try:
        mlc.create_registered_model(name, description=f"shipyard project {project.name}")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"{run.info.artifact_uri.rstrip('/')}/{MODEL_ARTIFACT}"
    version = mlc.create_model_version(
        name,
        source,
        run_id=run_id,
        tags={k: v for k, v in lineage.items() if v},
        description=f"{project.model.kind} trained by run {result.run_name}",
    )
    return _version(version, tracking_uri(project))


def _metrics(result: TrainResult, export: ExportResult) -> dict[tuple[str, int], tuple]:
    """{(key, step): (value, timestamp ms)}: per-epoch history, then final and export numbers
    (deduplicated: the store rejects the same key, step and time twice)."""
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
    extra = {"export_saved_model_bytes": export.bytes}
    if export.test_accuracy is not None:
        extra["export_full_test_accuracy"] = export.test_accuracy
    for variant, info in export.variants.items():
        for key in ("bytes", "test_accuracy", "validation_accuracy"):
            if _number(info.get(key)):
                extra[f"export_{variant}_{key}"] = info[key]
    for key, value in extra.items():
        out[(key, step)] = (float(value), now)
    return out


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


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


def git_commit(cwd: str | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else "unknown"


# -- plots ---------------------------------------------------------------------------------------
def write_plots(result: TrainResult, folder: str) -> list[str]:
    """Confusion matrices (per split that has one) and training curves, as PNG files.

    Uses matplotlib's object API (no pyplot): no global backend, safe in any process.
    """
    written = []
    labels = result.corpus.labels
    for prefix in ("test", "val", "final_train"):
        raw = result.metrics.get(f"{prefix}_confusion_matrix")
        if not raw:
            continue
        matrix = json.loads(raw) if isinstance(raw, str) else raw
        path = os.path.join(folder, f"confusion_matrix_{prefix}.png")
        confusion_figure(matrix, labels, f"confusion matrix ({prefix})").savefig(path, dpi=100)
        written.append(path)
    if result.history:
        path = os.path.join(folder, "training_curves.png")
        curves_figure(result.history).savefig(path, dpi=100)
        written.append(path)
    return written


def confusion_figure(matrix: list[list[int]], labels: list[str], title: str):
    from matplotlib.figure import Figure

    k = len(labels)
    size = max(3.5, 0.45 * k + 2)
    fig = Figure(figsize=(size, size))
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(k), labels, rotation=45 if k > 2 else 0, ha="right" if k > 2 else "center")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    top = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            color = "white" if top and value > top / 2 else "black"
            ax.text(j, i, str(value), ha="center", va="center", color=color, fontsize=8)
    fig.tight_layout()
    return fig


def curves_figure(history: list[dict]):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.5))
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy"), strict=True):
        for split in ("train", "val"):
            values = [row.get(f"{split}_{metric}") for row in history]
            points = [(e, v) for e, v in zip(epochs, values, strict=True) if _number(v)]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=split)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    fig.tight_layout()
    return fig


# -- versions and aliases ------------------------------------------------------------------------
def list_versions(project: Project, name: str | None = None) -> list[RegisteredVersion]:
    name = name or project.registered_model_name
    mlc = client(project)
    found = mlc.search_model_versions(f"name = '{_quote(name)}'")
    versions = [_version(v, tracking_uri(project)) for v in found]
    if versions:  # search results leave `aliases` empty; the registered model has them
        aliases = mlc.get_registered_model(name).aliases or {}
        for v in versions:
            v.aliases = sorted(a for a, n in aliases.items() if int(n) == v.version)
    return sorted(versions, key=lambda v: v.version)


def set_alias(project: Project, alias: str, version: int | str, name: str | None = None) -> None:
    name = name or project.registered_model_name
    get_version(project, version, name)  # a clear error for a version that does not exist
    client(project).set_registered_model_alias(name, alias, str(version))


def get_alias(project: Project, alias: str, name: str | None = None) -> RegisteredVersion:
    from mlflow.exceptions import MlflowException

    name = name or project.registered_model_name
    try:
        found = client(project).get_model_version_by_alias(name, alias)
    except MlflowException:
        raise UserInputError(f"model {name!r} has no version with alias {alias!r}") from None
    return _version(found, tracking_uri(project))


def get_version(project: Project, version: int | str, name: str | None = None):
    from mlflow.exceptions import MlflowException

    name = name or project.registered_model_name
    try:
        found = client(project).get_model_version(name, str(version))
    except MlflowException:
        raise UserInputError(f"model {name!r} has no version {version}") from None
    return _version(found, tracking_uri(project))


def resolve(project: Project, ref: str) -> RegisteredVersion:
    """A registered version from `models:/name@alias`, `models:/name/3`, `name@alias`,
    `name/3`, or, for the project's own model, `@alias`, `alias` or `3`."""
    body = ref.removeprefix("models:/").strip()
    own = project.registered_model_name
    if "@" in body:
        name, alias = body.rsplit("@", 1)
        return get_alias(project, alias, name or own)
    if "/" in body:
        name, version = body.rsplit("/", 1)
        if not version.isdigit():
            raise UserInputError(f"{ref!r}: expected name/VERSION with a number")
        return get_version(project, int(version), name)
    if body.isdigit():
        return get_version(project, int(body), own)
    if body in (own, ""):
        versions = list_versions(project, own)
        if not versions:
            raise UserInputError(f"model {own!r} has no registered versions")
        return versions[-1]
    return get_alias(project, body, own)


def artifact_path(project: Project, ref: str | RegisteredVersion) -> str:
    """The export folder of a registered version on this machine (downloaded when remote)."""
    version = ref if isinstance(ref, RegisteredVersion) else resolve(project, ref)
    local = version.local_path
    if local and os.path.isdir(local):
        return local
    import mlflow.artifacts

    cache = project.workdir_path / "model_cache" / version.name / str(version.version)
    if cache.is_dir() and any(cache.iterdir()):
        return str(cache)
    os.makedirs(cache, exist_ok=True)
    try:
        return mlflow.artifacts.download_artifacts(
            artifact_uri=version.source, dst_path=str(cache), tracking_uri=version.tracking_uri
        )
    except Exception as exc:
        raise ShipyardError(f"cannot fetch {version.uri} from {version.source}: {exc}") from None


def _version(mv, uri: str) -> RegisteredVersion:
    return RegisteredVersion(
        name=mv.name,
        version=int(mv.version),
        run_id=mv.run_id,
        source=mv.source,
        tags=dict(mv.tags or {}),
        aliases=list(getattr(mv, "aliases", None) or []),
        tracking_uri=uri,
    )


def _local(uri: str) -> str | None:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return unquote(parsed.path)
    if parsed.scheme == "" and os.path.isabs(uri):
        return uri
    return None


def _quote(name: str) -> str:
    return name.replace("'", "\\'")
