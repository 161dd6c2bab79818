"""`shipyard sweep`: a Ray Tune search whose trials are multi-worker Horovod runs.

The driver checks the search space against the project and the corpus, prepares (or reuses) the
corpus and reads its shards once into the object store for every trial, then runs Ray Tune over
the project's `HorovodTrainer` (`shipyard.training.trainer.build_trainer`). As many trials run at
once as the cluster holds (each trial's workers placed as `check_resources` packs them), unless
`tuning.max_concurrent_trials` says otherwise. A trial that fails is reported and the sweep goes
on; only a sweep whose every trial failed fails.

At the end: a ranked table, `trials.csv` and PNGs in the sweep folder, an MLflow parent run with a
child per trial, and (with `tuning.promote`) the best trial's checkpoint exported and registered
with the trial's own config, alias `challenger`, compared with the champion on the test split.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from shipyard.errors import ShipyardError, UserInputError, first_line
from shipyard.project import Project
from shipyard.temporary_env import temporary_env
from shipyard.tuning.results import SERVING_METRICS, TrialSummary
from shipyard.verbosity import is_verbose

if TYPE_CHECKING:
    from shipyard.corpus.manifest import PreparedCorpus
    from shipyard.training.publish import Published

log = logging.getLogger(__name__)
SWEEP_FILE = "shipyard_sweep.json"


@dataclass
class SweepResult:
    name: str
    path: str
    trials: list[TrialSummary]  # ranked, best first
    goals: list[tuple[str, str]]
    keys: list[str]
    concurrency: int
    wall_seconds: float
    best: TrialSummary | None = None
    csv: str | None = None
    plots: list[str] = field(default_factory=list)
    mlflow_parent: str | None = None
    published: Published | None = None
    comparison: dict | None = None
    resumed: bool = False
    notes: list[str] = field(default_factory=list)

    def count(self, state: str) -> int:
        return sum(t.state == state for t in self.trials)

    @property
    def trial_epochs(self) -> int:
        return sum(t.epochs for t in self.trials)


def sweep(project: Project, *, resume: str | None = None, out=None) -> SweepResult:
    """Search `project.tuning.search_space`; see the module docstring."""
    from shipyard.cluster import connect
    from shipyard.training.ray_train_v1 import select_v1
    from shipyard.tuning.space import check_space

    select_v1()  # before anything imports ray.train: Horovod runs on Ray Train's V1 API
    t = project.tuning
    check_goals(project)
    check_space(project)
    connect(project.cluster.address, num_cpus=project.cluster.num_cpus)
    from shipyard.verbosity import quiet_engines

    quiet_engines()  # TensorFlow's and Keras's warnings (the promoted model's export): verbose only
    from shipyard.training.trainer import check_feasible

    check_feasible(project)  # a trial that can never be placed fails now, before any work
    name, path = _sweep_folder(project, resume)
    from shipyard.corpus.prepare import prepare

    corpus = prepare(project, feedback=True).corpus
    check_space(project, corpus)
    base = _base_project(project, corpus)
    if resume:
        _check_same_sweep(path, project, corpus)
    else:
        _record_sweep(path, project, corpus)
    concurrency = concurrency_for(project)
    log.info(
        "sweep %s: %s trials of %d worker(s), %d at once, search %s, scheduler %s",
        name, planned_trials(t), base.training.workers, concurrency, t.search, t.scheduler,
    )  # fmt: skip

    started = time.monotonic()
    grid = _run(base, corpus, name, path, concurrency, resume, out)
    wall = time.monotonic() - started
    return finish(project, corpus, grid, name, path, concurrency, wall, resumed=bool(resume))


# -- checks ---------------------------------------------------------------------------------------
def check_goals(project: Project) -> None:
    """Metric, objectives and constraints are metrics trials report; the scheduler can use them."""
    from shipyard.training.trainer import EPOCH_METRICS, VALIDATION_METRICS

    t = project.tuning
    per_epoch = EPOCH_METRICS + VALIDATION_METRICS
    field_name = "tuning.objectives" if t.objectives else "tuning.metric"
    for i, (metric, _) in enumerate(t.goals):
        allowed = per_epoch if i == 0 else per_epoch + SERVING_METRICS
        if metric not in allowed:
            raise UserInputError(
                f"{field_name}: not a metric trials report{' each epoch' if i == 0 else ''}"
                f" (got {metric!r}); choose one of {', '.join(allowed)}"
            )
    for metric in t.constraints:
        if metric not in per_epoch + SERVING_METRICS:
            raise UserInputError(
                f"tuning.constraints.{metric}: not a metric trials report; choose one of"
                f" {', '.join(per_epoch + SERVING_METRICS)}"
            )
    if len(t.goals) > 1 and t.scheduler != "fifo":
        raise UserInputError(
            f"tuning.scheduler: {t.scheduler} stops or restarts trials by one metric; a"
            " multi-objective sweep (tuning.objectives) needs scheduler fifo"
        )
    if len(t.goals) > 1 and t.search == "grid":
        return
    if t.scheduler == "pbt" and t.search == "optuna":
        raise UserInputError(
            "tuning.search: pbt explores by mutating trials; use search random with it (got optuna)"
        )


def concurrency_for(project: Project) -> int:
    """Trials at once: how many trials' workers the cluster places together (never fewer than
    one; an autoscaling cluster counts what it has now), or `tuning.max_concurrent_trials`."""
    from shipyard.cluster.preflight import check_resources

    t, tr = project.tuning, project.training
    fits = check_resources(
        workers=tr.workers,
        cpus_per_worker=tr.cpus_per_worker,
        gpus_per_worker=tr.gpus_per_worker,
        use_gpu=tr.use_gpu,
        autoscaling=project.cluster.provider != "local",
    ).fits_ever
    auto = max(1, fits // tr.workers)
    return max(1, min(t.max_concurrent_trials or auto, planned_trials(t) or auto))


def planned_trials(t) -> int:
    """How many trials the sweep will run (grid: every combination)."""
    if t.search != "grid":
        grid = [len(next(iter(s.values()))) for s in t.search_space.values() if "grid" in s]
        return t.num_samples * math.prod(grid)
    return math.prod(len(next(iter(s.values()))) for s in t.search_space.values())


def _base_project(project: Project, corpus: PreparedCorpus) -> Project:
    """The project every trial starts from: checkpoints kept by the sweep's primary metric, so a
    trial's exported epoch is the one it is ranked by."""
    metric, mode = project.tuning.goals[0]
    tr = project.training
    usable = corpus.rows("validation") or not metric.startswith("val_")
    if usable and (tr.checkpoint_metric, tr.checkpoint_mode) != (metric, mode):
        log.info("trials keep their best checkpoint by %s (%s), the sweep's metric", metric, mode)
        return project.with_overrides(
            {"training.checkpoint_metric": metric, "training.checkpoint_mode": mode}
        )
    if metric.startswith("val_") and not corpus.rows("validation"):
        raise UserInputError(
            f"tuning.metric: {metric!r} needs a validation split, and this corpus has none"
            " (data.splits.validation)"
        )
    return project


def _sweep_folder(project: Project, resume: str | None) -> tuple[str, str]:
    from shipyard.tuning.tuner import can_restore

    if not resume:
        name = f"{project.name}-sweep-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
        return name, os.path.join(project.runs_dir, name)
    path = resume if os.path.isdir(resume) else os.path.join(project.runs_dir, resume)
    if not os.path.isfile(os.path.join(path, SWEEP_FILE)) or not can_restore(path):
        raise UserInputError(f"--resume: no sweep {resume!r} in {project.runs_dir}")
    return os.path.basename(os.path.normpath(path)), path


def _fingerprint(project: Project) -> str:
    return project.fingerprint("model", "training", "tuning")


def _record_sweep(path: str, project: Project, corpus: PreparedCorpus) -> None:
    os.makedirs(path, exist_ok=True)
    record = {
        "project_file": project.source_file,
        "fingerprint": _fingerprint(project),
        "corpus_content_hash": corpus.content_hash,
        "tuning": project.tuning.model_dump(mode="json"),
    }
    with open(os.path.join(path, SWEEP_FILE), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)


def _check_same_sweep(path: str, project: Project, corpus: PreparedCorpus) -> None:
    with open(os.path.join(path, SWEEP_FILE), encoding="utf-8") as f:
        record = json.load(f)
    if record["corpus_content_hash"] != corpus.content_hash:
        raise UserInputError(
            f"--resume: the sweep ran on corpus {record['corpus_content_hash'][:12]}, the"
            f" project's is now {corpus.content_hash[:12]}; start a new sweep"
        )
    if record["fingerprint"] != _fingerprint(project):
        raise UserInputError(
            "--resume: the project's model, training or tuning section changed since the sweep"
            " started; resume with the same project file, or start a new sweep"
        )


# -- running --------------------------------------------------------------------------------------
def _run(base: Project, corpus, name: str, path: str, concurrency: int, resume, out):
    from ray import tune

    from shipyard.training.trainer import build_trainer
    from shipyard.tuning.progress import DivergedStopper, SweepProgress
    from shipyard.tuning.space import param_space
    from shipyard.tuning.tuner import new_tuner, restore_tuner

    t = base.tuning
    splits = [s for s in ("train", "validation", "test") if corpus.rows(s)]
    # Read once for the sweep: every trial's workers take their shards from these blocks.
    datasets = {s: corpus.loaded_dataset(s) for s in splits}
    trainer = build_trainer(
        base,
        corpus,
        run_name=name,
        datasets=datasets,
        storage_path=base.runs_dir,
        # The sweep's progress line is its display: the trials' own output only when verbose.
        loop_config={"quiet": not is_verbose()},
    )
    space = param_space(t.search_space, t.search)
    if resume:
        return _fit(restore_tuner(path, trainer, param_space=space), t)
    metric, mode = t.goals[0]
    multi = len(t.goals) > 1
    trial_run = trainer.run_config
    progress = SweepProgress(name, metric, mode, list(t.search_space), base.training.epochs, out)
    run_config = tune.RunConfig(
        name=name,
        storage_path=base.runs_dir,
        failure_config=trial_run.failure_config,
        checkpoint_config=_kept_checkpoints(trial_run.checkpoint_config, t),
        callbacks=[progress],
        stop=DivergedStopper(),
        verbose=0,
    )
    tune_config = tune.TuneConfig(
        metric=None if multi else metric,
        mode=None if multi else mode,
        search_alg=_searcher(base, concurrency),
        scheduler=_scheduler(base),
        num_samples=1 if t.search == "grid" else t.num_samples,
        # One place per searcher: Tune wraps a Searcher (Optuna) in a ConcurrencyLimiter; the
        # random/grid generator takes its own limit (`_searcher`), and Tune warns that it ignores
        # max_concurrent_trials for it.
        max_concurrent_trials=None if t.search in ("random", "grid") else concurrency,
        # A finished trial's coordinator actor (and its placement group) runs the next trial:
        # shipyard.training.horovod_trainer. Its Horovod workers are new for every trial.
        reuse_actors=True,
    )
    return _fit(
        new_tuner(trainer, param_space=space, tune_config=tune_config, run_config=run_config), t
    )


def _fit(tuner, t):
    """`tuner.fit()` with the environment every sweep runs Tune in, new or resumed."""
    from shipyard.training.ray_train_v1 import interruptible

    with _serving_metrics_come_last(t), _no_snapshot_advice(), interruptible():
        return tuner.fit()


def _kept_checkpoints(config, t):
    """Training's retention (the best few by metric, and the newest), except under PBT.

    PBT clones a trial from the checkpoint it took when that trial last reported among the
    best; by the time the clone restores, retention may have deleted it and the clone fails
    ("does not exist on storage anymore"). A PBT sweep keeps every checkpoint of its trials."""
    if t.scheduler != "pbt":
        return config
    return replace(config, num_to_keep=None)


@contextlib.contextmanager
def _no_snapshot_advice():
    """Unless verbose: no warning that Tune snapshots the experiment often. Every
    `num_to_keep` checkpoints of a trial force a snapshot, and trials checkpoint every epoch
    with a retention limit by design. The snapshots cost the driver little: py-spy found it
    idle in Tune's loop, with under 0.2% of its samples in snapshots. Tune reads the threshold
    when `fit` starts."""
    if is_verbose():
        yield
        return
    with temporary_env("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0"):
        yield


@contextlib.contextmanager
def _serving_metrics_come_last(t):
    """A multi-objective searcher names `latency_ms`/`model_bytes`, which only a trial's final
    report carries (rank 0 measures the kept model after the last epoch); Tune's strict check
    would fail every trial at its first epoch's report. Off for this driver while the sweep runs
    (Tune reads it in the driver), and only for such sweeps."""
    if not any(m in SERVING_METRICS for m, _ in t.goals[1:]) or t.search != "optuna":
        yield
        return
    with temporary_env("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1"):
        yield


def _seed(project: Project) -> int:
    return project.tuning.seed if project.tuning.seed is not None else project.training.seed


def _searcher(project: Project, concurrency: int):
    from ray.tune.search.basic_variant import BasicVariantGenerator

    t = project.tuning
    if t.search in ("random", "grid"):
        # Tune's max_concurrent_trials does not reach this generator: it takes its own limit.
        return BasicVariantGenerator(random_state=_seed(project), max_concurrent=concurrency)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if len(t.goals) > 1:  # every objective as the trial's last report has it (NSGA-II)
        return OptunaSearch(
            metric=[m for m, _ in t.goals],
            mode=[mode for _, mode in t.goals],
            sampler=optuna.samplers.NSGAIISampler(seed=_seed(project)),
        )
    return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=_seed(project)))


def _scheduler(project: Project):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from shipyard.tuning.space import mutations

    t = project.tuning
    if t.scheduler == "asha":
        return ASHAScheduler(
            time_attr="training_iteration",
            max_t=t.max_t or project.training.epochs,
            grace_period=t.grace_period,
            reduction_factor=t.reduction_factor,
        )
    if t.scheduler == "pbt":
        import random

        import numpy as np

        # PBT's exploit and explore draw from the driver's global `random` (which trial to
        # clone, resample or perturb, by which factor) and numpy (resampling a Tune domain).
        random.seed(_seed(project))
        np.random.seed(_seed(project))
        from shipyard.tuning.progress import LastEpochPBT

        return LastEpochPBT(
            epochs=project.training.epochs,
            time_attr="training_iteration",
            perturbation_interval=t.perturbation_interval,
            hyperparam_mutations=mutations(t.search_space),
            quantile_fraction=0.5 if planned_trials(t) < 8 else 0.25,  # a grid's num_samples is 1
        )
    return FIFOScheduler()


# -- results --------------------------------------------------------------------------------------
def finish(project: Project, corpus, grid, name, path, concurrency, wall, *, resumed=False):
    from shipyard.tuning import results, tracking

    t = project.tuning
    goals, keys = t.goals, list(t.search_space)
    trials = results.summarize(grid, keys, goals, project.training.epochs)
    notes: list[str] = []
    if trials and all(x.state == "failed" for x in trials):
        lines = "; ".join(f"{x.trial_id}: {x.error}" for x in trials[:5])
        raise ShipyardError(f"sweep {name}: all {len(trials)} trials failed ({lines})")
    trials = results.judge(trials, goals, t.parsed_constraints())
    best = results.best_trial(trials, goals[0], constrained=bool(t.constraints))
    outcome = SweepResult(
        name=name,
        path=path,
        trials=trials,
        goals=goals,
        keys=keys,
        concurrency=concurrency,
        wall_seconds=wall,
        best=best,
        resumed=resumed,
        notes=notes,
    )
    outcome.csv = results.write_csv(trials, goals, keys, os.path.join(path, "trials.csv"))
    try:
        outcome.plots = results.write_plots(trials, goals, keys, path)
    except Exception as exc:  # a plot is a nicety: never lose a sweep's results to one
        notes.append(f"plots not written: {first_line(exc)}")
    if best is None and t.constraints:
        notes.append("no trial meets every constraint in tuning.constraints: nothing promoted")
    if best is not None and t.promote:
        outcome.published, outcome.comparison = promote(project, corpus, best, name)
    parent = tracking.parent_run(project, path, name)
    tracking.log_trials(project, parent, trials, goals)
    if outcome.published is not None:
        from shipyard.training.mlflow_store import client

        client(project).set_tag(outcome.published.version.run_id, "mlflow.parentRunId", parent)
    tracking.finish_parent(project, parent, best, goals, [outcome.csv, *outcome.plots])
    outcome.mlflow_parent = parent
    return outcome


def promote(project: Project, corpus, best: TrialSummary, sweep_name: str):
    """Export and register the best trial (its own config, from its checkpoint), alias it
    `challenger`, and score it and the champion on the same test split."""
    from shipyard.training.evaluate import evaluate
    from shipyard.training.model_versions import CHALLENGER, champion_or_none, set_alias

    champion = champion_or_none(project)
    published = publish_trial(project, corpus, best, sweep_name)
    version = published.version
    set_alias(project, CHALLENGER, version.version)
    if CHALLENGER not in version.aliases:
        version.aliases = sorted({*version.aliases, CHALLENGER})
    comparison: dict[str, Any] = {"version": version.version, "split": "test"}
    if not corpus.rows("test"):
        comparison["note"] = "the corpus has no test split: nothing to compare on"
        return published, comparison
    ref = f"{version.name}:{version.version}"
    comparison["challenger"] = evaluate(ref, project, split="test")
    if champion is not None and champion.version != version.version:
        comparison["champion_version"] = champion.version
        comparison["champion"] = evaluate(
            f"{champion.name}:{champion.version}", project, split="test"
        )
    return published, comparison


def publish_trial(project: Project, corpus, best: TrialSummary, sweep_name: str) -> Published:
    """Export and register a trial's best checkpoint with the trial's own config (no alias
    beyond the first-version policy): what `promote` and `shipyard retrain --sweep` build on."""
    from shipyard.training.publish import publish
    from shipyard.training.trainer import TrainResult

    run_name = f"{sweep_name}-{best.trial_id}"
    result = TrainResult.from_result(best.result, run_name=run_name, corpus=corpus)
    return publish(project.with_overrides(best.values), result)


def format_sweep(result: SweepResult) -> str:
    from shipyard.tuning.results import table

    goals = result.goals
    metric = goals[0][0]
    head = (
        f"sweep {result.name}{' (resumed)' if result.resumed else ''}: {len(result.trials)}"
        f" trials ({result.count('done')} done, {result.count('stopped')} stopped early,"
        f" {result.count('failed')} failed) · {result.trial_epochs} trial-epochs ·"
        f" {result.wall_seconds:.0f}s wall, {result.concurrency} at once"
    )
    lines = [head, table(result.trials, goals, result.keys)]
    if len(goals) > 1:
        front = [t.trial_id for t in result.trials if t.pareto]
        lines.append(f"Pareto front (*) over {', '.join(m for m, _ in goals)}: {', '.join(front)}")
    if result.best is not None:
        shown = ", ".join(f"{k}={v}" for k, v in result.best.values.items())
        lines.append(
            f"best: {result.best.trial_id} {metric} {result.best.score(metric):.4f} ({shown})"
        )
    lines += [f"note: {n}" for n in result.notes]
    if result.published is not None:
        lines.extend(f"  {line}" for line in result.published.describe())
        lines.extend(f"  {line}" for line in _compare_lines(result.comparison or {}))
    lines.append(f"  sweep folder {result.path}")
    if result.csv:
        lines.append(f"  trials csv   {result.csv}")
    for plot in result.plots:
        lines.append(f"  plot         {plot}")
    if result.mlflow_parent:
        lines.append(f"  mlflow run   {result.mlflow_parent} (parent; one child run per trial)")
    return "\n".join(lines)


def _compare_lines(c: dict) -> list[str]:
    if "note" in c:
        return [c["note"]]
    new = c.get("challenger")
    if not new:
        return []
    out = [f"challenger version {c['version']} on test: accuracy {new['accuracy']:.4f}"]
    old = c.get("champion")
    if old:
        delta = new["accuracy"] - old["accuracy"]
        out.append(
            f"champion version {c['champion_version']} on the same split: accuracy"
            f" {old['accuracy']:.4f} (challenger {delta:+.4f}); `shipyard promote` moves champion"
        )
    else:
        out.append("it is the model's first version, so it is champion too")
    return out
