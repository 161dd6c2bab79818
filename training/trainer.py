"""`shipyard train`: the prepared corpus and the per-worker loop, wired into HorovodTrainer.

The driver stays light: it prepares (or reuses) the corpus, checks that the requested workers can
ever be scheduled, hands Ray Train the split datasets (each worker streams a disjoint, equal part)
and turns the result into a servable, registered model version.
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
from dataclasses import dataclass, field

from shipyard.cluster.runtime import ensure_train_v1
from shipyard.corpus.manifest import PreparedCorpus
from shipyard.errors import ShipyardError, UserInputError
from shipyard.project import Project

ensure_train_v1()


@dataclass
class TrainResult:
    run_name: str
    run_dir: str
    checkpoint: str | None
    metrics: dict
    corpus: PreparedCorpus
    history: list[dict] = field(default_factory=list)
    resumed_from_epoch: int = 0
    extras: dict = field(default_factory=dict)  # export paths, registry version, ...


def train(
    project: Project,
    *,
    resume: str | None = None,
    corpus: PreparedCorpus | None = None,
    publish: bool = True,
) -> TrainResult:
    """Train the project's model on Horovod workers; with `publish`, export the servable model
    (raw input in, preprocessing inside) and register it as a new MLflow model version."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.horovod import HorovodTrainer

    from shipyard.cluster import connect
    from shipyard.training.horovod_backend import SharedHostHorovodConfig
    from shipyard.training.loop import train_loop_per_worker
    from shipyard.training.models import model_kind

    t = project.training
    run_name, resume_checkpoint = _run_name(project, resume)
    if corpus is None:
        from shipyard.corpus.prepare import prepare

        corpus = prepare(project).corpus  # checks the inputs before starting anything
    connect(project.cluster.address, num_cpus=project.cluster.num_cpus)
    model_kind(project.model, corpus)  # a model that cannot read this corpus fails before launch
    check_feasible(project)

    splits = [s for s in ("train", "validation", "test") if corpus.rows(s)]
    if "train" not in splits:
        raise UserInputError(f"{corpus.path}: the train split is empty")
    run_dir = os.path.join(project.runs_dir, run_name)
    config = {
        "corpus_path": corpus.path,
        "manifest": corpus.manifest,
        "model": project.model.model_dump(mode="json"),
        "training": t.model_dump(mode="json"),
        "threads": max(1, int(t.cpus_per_worker)),
        "splits": splits,
        "tensorboard_dir": os.path.join(run_dir, "tensorboard"),
    }
    resources = {"CPU": t.cpus_per_worker}
    if t.use_gpu:
        resources["GPU"] = t.gpus_per_worker
    trainer = HorovodTrainer(
        train_loop_per_worker=train_loop_per_worker,
        train_loop_config=config,
        horovod_config=SharedHostHorovodConfig(),
        scaling_config=ScalingConfig(
            num_workers=t.workers,
            use_gpu=t.use_gpu,
            resources_per_worker=resources,
            trainer_resources={"CPU": 0},  # the coordinator must not take a worker's CPU
            placement_strategy=t.placement_strategy,
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=project.runs_dir,
            failure_config=FailureConfig(max_failures=t.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=3),
        ),
        datasets=_datasets(corpus, splits, project),
        # Only train is cut into equal shards; evaluation splits are divided by key on the
        # workers so that no row is dropped from the metrics.
        dataset_config=DataConfig(datasets_to_split=["train"]),
        resume_from_checkpoint=resume_checkpoint,
    )
    result = trainer.fit()
    if result.error:
        raise ShipyardError(f"training run {run_name} failed: {_first_line(result.error)}")
    frame = result.metrics_dataframe
    history = frame.to_dict("records") if frame is not None else []
    outcome = TrainResult(
        run_name=run_name,
        run_dir=result.path,
        checkpoint=result.checkpoint.path if result.checkpoint else None,
        metrics=result.metrics,
        corpus=corpus,
        history=history,
        resumed_from_epoch=_epoch_of(resume_checkpoint),
    )
    if publish:
        _publish(project, outcome, run_dir)
    return outcome


def _publish(project: Project, outcome: TrainResult, run_dir: str) -> None:
    """Export beside the run and register in MLflow (driver only: one process writes sqlite)."""
    from shipyard.training.export import export_model
    from shipyard.training.registry import log_run

    exported = export_model(
        outcome.checkpoint, project, outcome.corpus, os.path.join(run_dir, "export")
    )
    version = log_run(project, outcome, exported)
    outcome.extras["export"] = f"{exported.path} ({_size(exported.bytes, exported.test_accuracy)})"
    for name, variant in exported.variants.items():
        accuracy = next((v for k, v in variant.items() if k.endswith("_accuracy")), None)
        outcome.extras[name] = variant.get("error") or _size(variant["bytes"], accuracy)
    outcome.extras["registered"] = f"{version.name} version {version.version} ({version.uri})"


def _size(size: int, accuracy: float | None) -> str:
    return f"{size / 1e6:.2f} MB" + (f", accuracy {accuracy:.4f}" if accuracy is not None else "")


def _datasets(corpus: PreparedCorpus, splits: list[str], project: Project) -> dict:
    """Stream the shards to the workers, or load them first when the workers take every CPU.

    Ray Data's read operators each need a CPU; when the Horovod workers hold all of them (2
    workers on a 2-CPU machine) a streaming read could never be scheduled and training would hang.
    Reading the encoded shards into the object store before the workers start avoids that; it
    spills to disk when larger than memory. With CPUs to spare, reads stream alongside training.
    """
    import ray

    t = project.training
    spare = ray.cluster_resources().get("CPU", 0) - t.workers * t.cpus_per_worker
    datasets = {s: corpus.dataset(s) for s in splits}
    if spare < 1:
        datasets = {s: ds.materialize() for s, ds in datasets.items()}
    return datasets


def check_feasible(project: Project) -> None:
    """Fail now, naming the numbers, when the workers can never be placed (instead of waiting
    forever for resources that do not exist)."""
    from shipyard.cluster.preflight import check_resources

    t = project.training
    check_resources(
        workers=t.workers,
        cpus_per_worker=t.cpus_per_worker,
        gpus_per_worker=t.gpus_per_worker,
        use_gpu=t.use_gpu,
        autoscaling=project.cluster.provider != "local",
    )


def _run_name(project: Project, resume: str | None):
    """A fresh timestamped run, or the run to resume and its newest checkpoint."""
    if not resume:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        return f"{project.name}-{stamp}", None
    from ray.train import Checkpoint

    run_dir = resume if os.path.isdir(resume) else os.path.join(project.runs_dir, resume)
    if not os.path.isdir(run_dir):
        raise UserInputError(f"--resume: no run {resume!r} in {project.runs_dir}")
    found = latest_checkpoint(run_dir)
    if found is None:
        raise UserInputError(f"--resume: run {resume!r} has no checkpoint to resume from")
    return os.path.basename(os.path.normpath(run_dir)), Checkpoint.from_directory(found)


def latest_checkpoint(run_dir: str) -> str | None:
    """The checkpoint with the highest epoch anywhere under a run folder."""
    from shipyard.training.loop import STATE

    best, best_epoch = None, -1
    for state in glob.glob(os.path.join(run_dir, "**", "checkpoint_*", STATE), recursive=True):
        with open(state) as f:
            epoch = json.load(f)["epoch"]
        if epoch > best_epoch:
            best, best_epoch = os.path.dirname(state), epoch
    return best


def _epoch_of(checkpoint) -> int:
    if checkpoint is None:
        return 0
    from shipyard.training.loop import STATE

    with open(os.path.join(checkpoint.path, STATE)) as f:
        return json.load(f)["epoch"]


def _first_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def format_result(result: TrainResult) -> str:
    m = result.metrics
    rows = [("train", "final_train"), ("validation", "val"), ("test", "test")]
    lines = [f"run {result.run_name}  ({m.get('epoch', '?')} epochs)  {result.run_dir}"]
    lines.append(f"  {'split':<12}{'loss':>8}{'accuracy':>10}{'f1':>8}{'roc_auc':>9}")
    for name, prefix in rows:
        if f"{prefix}_loss" not in m:
            continue
        auc = m.get(f"{prefix}_roc_auc")
        lines.append(
            f"  {name:<12}{m[f'{prefix}_loss']:>8.4f}{m[f'{prefix}_accuracy']:>10.4f}"
            f"{m.get(f'{prefix}_f1', float('nan')):>8.4f}"
            + (f"{auc:>9.4f}" if auc is not None else "")
        )
    for key, value in result.extras.items():
        lines.append(f"  {key}: {value}")
    return "\n".join(lines)
