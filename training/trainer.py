"""`shipyard train`: the prepared corpus and the per-worker loop, wired into HorovodTrainer.

The driver stays light: it checks that the requested workers can ever be scheduled, prepares (or
reuses) the corpus, hands Ray Train the split datasets (each worker streams a disjoint, equal part)
and turns the result into a servable, registered model version.

`build_trainer` returns the configured, unfitted `HorovodTrainer` (what Ray Tune takes for a
sweep) and `TrainResult.from_result` turns Ray's `Result` into shipyard's: `train()` is those two
plus publishing.
"""

from __future__ import annotations

import datetime as dt
import glob
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shipyard.corpus.manifest import PreparedCorpus
from shipyard.errors import ShipyardError, UserInputError, first_line
from shipyard.project import Project
from shipyard.training.checkpoint import STATE, read_epoch

if TYPE_CHECKING:
    from ray.train import Checkpoint, Result
    from ray.train.horovod import HorovodTrainer

    from shipyard.training.publish import Published

log = logging.getLogger(__name__)

# What the loop reports each epoch, so a checkpoint or early-stopping metric can be checked
# before anything starts (the val_ ones need a validation split).
EPOCH_METRICS = ("train_loss", "train_accuracy", "epoch_seconds")
VALIDATION_METRICS = tuple(
    f"val_{m}" for m in ("loss", "accuracy", "precision", "recall", "f1", "roc_auc", "macro_f1")
)


@dataclass
class TrainResult:
    run_name: str
    run_dir: str
    checkpoint: str | None  # the checkpoint that is exported: the best epoch's
    metrics: dict
    corpus: PreparedCorpus
    history: list[dict] = field(default_factory=list)
    resumed_from_epoch: int = 0
    best_epoch: int | None = None
    last_checkpoint: str | None = None  # the newest one: what `--resume` continues from
    stopped_early: bool = False
    published: Published | None = None

    @classmethod
    def from_result(
        cls,
        result: Result,
        *,
        run_name: str,
        corpus: PreparedCorpus,
        resumed_from: Checkpoint | None = None,
    ) -> TrainResult:
        """shipyard's view of a Ray Train `Result`: the metrics, the per-epoch history, and the
        checkpoint of the best epoch the loop reported (`best_epoch`), not merely the last."""
        if result.error:
            raise ShipyardError(f"training run {run_name} failed: {first_line(result.error)}")
        frame = result.metrics_dataframe
        metrics = dict(result.metrics or {})
        best_epoch = metrics.get("best_epoch") or metrics.get("epoch")
        latest = result.checkpoint.path if result.checkpoint else None
        return cls(
            run_name=run_name,
            run_dir=result.path,
            checkpoint=checkpoint_of_epoch(result, best_epoch, resumed_from) or latest,
            metrics=metrics,
            corpus=corpus,
            history=frame.to_dict("records") if frame is not None else [],
            resumed_from_epoch=read_epoch(resumed_from.path) if resumed_from else 0,
            best_epoch=int(best_epoch) if best_epoch else None,
            last_checkpoint=latest,
            stopped_early=bool(metrics.get("stopped_early")),
        )


def train(
    project: Project,
    *,
    resume: str | None = None,
    corpus: PreparedCorpus | None = None,
    publish: bool = True,
) -> TrainResult:
    """Train the project's model on Horovod workers; with `publish`, export the best epoch's
    model (raw input in, preprocessing inside) and register it as a new MLflow model version."""
    from shipyard.cluster import connect
    from shipyard.training.ray_train_v1 import select_v1
    from shipyard.verbosity import quiet_engines

    select_v1()
    connect(project.cluster.address, num_cpus=project.cluster.num_cpus)
    quiet_engines()
    check_feasible(project)  # before the corpus: a request that can never run fails in seconds
    run_name, resume_checkpoint = _run_name(project, resume)
    if corpus is None:
        from shipyard.corpus.prepare import prepare

        corpus = prepare(project, feedback=True).corpus
    if resume_checkpoint is not None:
        # A resumed run goes on with the model it was trained with, whatever the file says now.
        saved = _read_state(resume_checkpoint.path)
        saved.check_corpus(corpus.content_hash, f"--resume {run_name}")
        if saved.model != project.model.model_dump(mode="json"):
            log.info("resuming with the checkpoint's model section (the project's differs)")
            project = project.with_overrides({"model": saved.model})
    trainer = build_trainer(project, corpus, run_name=run_name, resume_from=resume_checkpoint)
    log.info(describe_plan(project, corpus))
    from shipyard.training.ray_train_v1 import interruptible

    with interruptible():
        fitted = trainer.fit()
    outcome = TrainResult.from_result(
        fitted, run_name=run_name, corpus=corpus, resumed_from=resume_checkpoint
    )
    if publish:
        from shipyard.training.publish import publish as publish_result

        outcome.published = publish_result(project, outcome)
    return outcome


def build_trainer(
    project: Project,
    corpus: PreparedCorpus,
    *,
    run_name: str | None = None,
    resume_from: Checkpoint | None = None,
    datasets: dict | None = None,
    storage_path: str | None = None,
    loop_config: dict | None = None,
) -> HorovodTrainer:
    """The project's `HorovodTrainer`, configured and not fitted.

    Workers receive the corpus by path and content hash (the manifest, vocabulary included, stays
    out of `train_loop_config`: that dict is what Ray prints, what Tune copies into every trial
    and what trackers log). `datasets` lets a sweep read the shards once for all its trials.
    `loop_config` adds entries to the loop's config (`shipyard estimate`'s `profile`).
    """
    from shipyard.training.ray_train_v1 import new_horovod_trainer, select_v1

    select_v1()  # before the first import of ray.train
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig

    from shipyard.training.models import model_kind
    from shipyard.training.worker_entry import train_loop_per_worker

    t = project.training
    model_kind(project.model, corpus)  # a model that cannot read this corpus fails before launch
    splits = [s for s in ("train", "validation", "test") if corpus.rows(s)]
    if "train" not in splits:
        raise UserInputError(f"{corpus.path}: the train split is empty")
    scored = check_metrics(project, has_validation="validation" in splits)
    run_name = run_name or new_run_name(project)
    storage = storage_path or project.runs_dir
    config = {
        "corpus_path": corpus.path,
        "corpus_content_hash": corpus.content_hash,
        "model": project.model.model_dump(mode="json"),
        "training": t.model_dump(mode="json"),
        "threads": max(1, int(t.cpus_per_worker)),
        "splits": splits,
        "tensorboard_dir": os.path.join(storage, run_name, "tensorboard"),
        **(loop_config or {}),
    }
    return new_horovod_trainer(
        train_loop_per_worker,
        config,
        workers=t.workers,
        cpus_per_worker=t.cpus_per_worker,
        use_gpu=t.use_gpu,
        gpus_per_worker=t.gpus_per_worker,
        placement_strategy=t.placement_strategy,
        run_config=RunConfig(
            name=run_name,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=t.max_failures),
            # Keep the best few by the selection metric (and always the newest, for resume).
            checkpoint_config=CheckpointConfig(
                num_to_keep=3,
                checkpoint_score_attribute=t.checkpoint_metric if scored else None,
                checkpoint_score_order=t.checkpoint_mode,
            ),
            verbose=0,  # Ray's trial table repeats the config; the workers' epoch lines suffice
        ),
        datasets=datasets if datasets is not None else shard_datasets(corpus, splits, project),
        # Only train is cut into equal shards; evaluation splits are divided by key on the
        # workers so that no row is dropped from the metrics.
        dataset_config=DataConfig(datasets_to_split=["train"]),
        resume_from_checkpoint=resume_from,
    )


def check_metrics(project: Project, *, has_validation: bool) -> bool:
    """Check the checkpoint and early-stopping metrics are ones the loop reports; returns whether
    checkpoints can be scored (validation metrics need a validation split)."""
    t = project.training
    known = EPOCH_METRICS + VALIDATION_METRICS
    fields = [("training.checkpoint_metric", t.checkpoint_metric)]
    if t.early_stopping:
        fields.append(("training.early_stopping.metric", t.early_stopping.metric))
    for name, metric in fields:
        if metric not in known:
            raise UserInputError(
                f"{name}: not a metric training reports (got {metric!r});"
                f" choose one of {', '.join(known)}"
            )
    if t.early_stopping and t.early_stopping.metric.startswith("val_") and not has_validation:
        raise UserInputError(
            f"training.early_stopping.metric: {t.early_stopping.metric!r} needs a validation"
            " split, and this corpus has none (data.splits.validation)"
        )
    return has_validation or not t.checkpoint_metric.startswith("val_")


def shard_datasets(corpus: PreparedCorpus, splits: list[str], project: Project) -> dict:
    """Stream the shards to the workers, or load them first when the workers take every CPU or
    the splits are small.

    Ray Data's read operators each need a CPU; when the Horovod workers hold all of them (2
    workers on a 2-CPU machine) a streaming read could never be scheduled and training would hang.
    Reading the encoded shards into the object store before the workers start avoids that; it
    spills to disk when larger than memory. Small splits are loaded anyway: re-reading them every
    epoch costs more than holding them. Otherwise reads stream alongside training.
    """
    import ray

    from shipyard.corpus.manifest import READ_IN_DRIVER_BYTES

    t = project.training
    # What is free now, not the cluster's total: serving replicas beside training hold CPUs too.
    spare = ray.available_resources().get("CPU", 0) - t.workers * t.cpus_per_worker
    small = sum(corpus.split_bytes(s) for s in splits) <= READ_IN_DRIVER_BYTES
    if spare < 1 or small:
        return {s: corpus.loaded_dataset(s) for s in splits}
    return {s: corpus.dataset(s) for s in splits}


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


def describe_plan(project: Project, corpus: PreparedCorpus) -> str:
    """One line: what runs where, on what."""
    import ray

    t = project.training
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    total = ray.cluster_resources()
    device = f"{t.gpus_per_worker:g} GPU" if t.use_gpu else f"{t.cpus_per_worker:g} CPU"
    rows = " / ".join(
        f"{corpus.rows(s):,} {s}" for s in ("train", "validation", "test") if corpus.rows(s)
    )
    return (
        f"training {project.model.kind} on {t.workers} Horovod worker(s) x {device}"
        f" ({t.placement_strategy}) · cluster: {len(nodes)} node(s), {total.get('CPU', 0):g} CPUs,"
        f" {total.get('GPU', 0):g} GPUs · corpus {corpus.content_hash[:12]}: {rows} rows"
        f" · {t.epochs} epochs of batch {t.batch_size}"
    )


def new_run_name(project: Project) -> str:
    return f"{project.name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _run_name(project: Project, resume: str | None):
    """A fresh timestamped run, or the run to resume and its newest checkpoint."""
    if not resume:
        return new_run_name(project), None
    from ray.train import Checkpoint

    run_dir = resume if os.path.isdir(resume) else os.path.join(project.runs_dir, resume)
    if not os.path.isdir(run_dir):
        raise UserInputError(f"--resume: no run {resume!r} in {project.runs_dir}")
    found = latest_checkpoint(run_dir)
    if found is None:
        raise UserInputError(f"--resume: run {resume!r} has no checkpoint to resume from")
    return os.path.basename(os.path.normpath(run_dir)), Checkpoint.from_directory(found)


def _read_state(path: str):
    from shipyard.training.checkpoint import read_state

    return read_state(path)


def latest_checkpoint(run_dir: str) -> str | None:
    """The checkpoint with the highest epoch anywhere under a run folder."""
    best, best_epoch = None, -1
    for state in glob.glob(os.path.join(run_dir, "**", "checkpoint_*", STATE), recursive=True):
        epoch = read_epoch(os.path.dirname(state))
        if epoch > best_epoch:
            best, best_epoch = os.path.dirname(state), epoch
    return best


def checkpoint_of_epoch(result: Result, epoch: Any, resumed_from: Checkpoint | None):
    """The kept checkpoint written after `epoch`: one of this run's, or the one it resumed from."""
    if not epoch:
        return None
    for checkpoint, metrics in reversed(result.best_checkpoints or []):
        if metrics.get("epoch") == epoch:
            return checkpoint.path
    if resumed_from is not None and read_epoch(resumed_from.path) == epoch:
        return resumed_from.path
    return None


def format_result(result: TrainResult) -> str:
    """The run's summary: where it is, which epoch was kept, the kept model's metrics, and
    where to look next."""
    m = result.metrics
    epochs = m.get("epoch", "?")
    stopped = " (stopped early)" if result.stopped_early else ""
    best = f", best epoch {result.best_epoch}" if result.best_epoch else ""
    lines = [f"run {result.run_name}: {epochs} epochs{stopped}{best}"]
    lines.append(f"  {'split':<12}{'loss':>8}{'accuracy':>10}{'f1':>8}{'roc_auc':>9}")
    for name, prefix in (("train", "final_train"), ("validation", "final_val"), ("test", "test")):
        if f"{prefix}_loss" not in m:
            continue
        auc = m.get(f"{prefix}_roc_auc")
        lines.append(
            f"  {name:<12}{m[f'{prefix}_loss']:>8.4f}{m[f'{prefix}_accuracy']:>10.4f}"
            f"{m.get(f'{prefix}_f1', float('nan')):>8.4f}"
            + (f"{auc:>9.4f}" if auc is not None else "")
        )
    lines.append(f"  run folder   {result.run_dir}")
    lines.append(f"  checkpoint   {result.checkpoint}")
    if result.published is not None:
        lines.extend(f"  {line}" for line in result.published.describe())
    board = os.path.join(os.path.dirname(os.path.normpath(result.run_dir)), "tensorboard")
    if os.path.isdir(board):
        lines.append(f"  tensorboard --logdir {board}")
    if result.published is not None:
        lines.append(f"  mlflow ui --backend-store-uri {result.published.version.tracking_uri}")
    return "\n".join(lines)
