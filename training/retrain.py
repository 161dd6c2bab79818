"""`shipyard retrain`: captured feedback -> corpus -> a new version, judged against the champion.

    export the feedback -> prepare with every batch merged (deduplicated; contradictions counted)
    -> train (or a small sweep) -> register the new version -> score it and the champion on the
    champion's own test split -> alias it `challenger` only when it beats the champion by
    `promotion.min_improvement` on `promotion.metric`

Fair comparison: the champion is scored on the test split of the corpus it was trained on, not
on the new corpus's (whose cut points moved when rows were added, so a few rows the champion
trained on may now sit in test). Preparing replaces the corpus folder, so that split is copied
aside first, keyed by content hash, under `<workdir>/retrain/test-splits`; a later retrain whose
champion came from an earlier one finds it there. Rows of it that the new model trained on (a
feedback text that is also a champion test text) are left out of both scores.

MLflow: one parent run per retrain; the feedback export, the corpus, the training run (or the
sweep's parent run) and the evaluation are its children. Driver only, like every other writer.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shipyard.corpus.manifest import PreparedCorpus
from shipyard.errors import ShipyardError, UserInputError
from shipyard.project import Project

if TYPE_CHECKING:
    from shipyard.serving.feedback_export import FeedbackExport
    from shipyard.training.model_versions import RegisteredVersion
    from shipyard.training.trainer import TrainResult
    from shipyard.tuning.driver import SweepResult

log = logging.getLogger(__name__)

SPLITS_DIR = "test-splits"  # under <workdir>/retrain: kept copies of test splits, by content hash
RETRAIN_TAG = "retrain_parent_run"  # on a version a retrain registered: its parent run
OUTCOME_TAG = "retrain_outcome"  # set once that retrain judged it: "challenger" or "unaliased"


@dataclass
class Comparison:
    """Both versions scored on the same rows."""

    metric: str
    mode: str
    rows: int
    on: str  # which rows, in words
    new: dict  # classification_metrics of the new version
    champion: dict
    left_out: int = 0  # champion test rows the new version trained on
    note: str | None = None  # when the champion's own split could not be had

    @property
    def improvement(self) -> float:
        """How much better the new version is on `metric` (positive: better)."""
        delta = self.new[self.metric] - self.champion[self.metric]
        return -delta if self.mode == "min" else delta


@dataclass
class RetrainResult:
    project: str
    trained: bool
    promoted: bool  # the new version got `challenger` (or, with no champion, is the champion)
    reason: str
    feedback_batches: list[str] = field(default_factory=list)  # the new ones this retrain merged
    feedback_rows: int = 0
    exported: FeedbackExport | None = None
    corpus: PreparedCorpus | None = None
    train: TrainResult | None = None
    sweep: SweepResult | None = None
    version: RegisteredVersion | None = None
    champion: RegisteredVersion | None = None
    comparison: Comparison | None = None
    mlflow_parent: str | None = None
    tracking_uri: str | None = None
    seconds: float = 0.0
    project_file: str = ""

    @property
    def contradicting(self) -> int:
        """Feedback rows that gave a corpus row another label."""
        if self.corpus is None:
            return 0
        return int(self.corpus.manifest["counts"].get("extra_rows", {}).get("contradicting", 0))

    def describe(self) -> list[str]:
        """What `shipyard retrain` prints."""
        if not self.trained:
            return [f"retrain {self.project}: {self.reason}"]
        lines = [
            f"retrain {self.project}: {self.feedback_rows:,} new feedback rows in"
            f" {len(self.feedback_batches)} batch(es) ({self.seconds:.0f} s)"
        ]
        if self.corpus is not None:
            extra = self.corpus.manifest["counts"].get("extra_rows", {})
            lines.append(
                f"  {'corpus':<11} {self.corpus.content_hash[:12]}: {self.corpus.rows('train'):,}"
                f" train rows; feedback {extra.get('read', 0):,} read, {extra.get('kept', 0):,}"
                f" kept, {self.contradicting:,} contradicting a corpus label"
            )
        if self.sweep is not None:
            best = self.sweep.best
            lines.append(
                f"  {'sweep':<11} {self.sweep.name}: {len(self.sweep.trials)} trials,"
                f" best {best.trial_id if best else '-'}"
            )
        elif self.train is not None:
            lines.append(
                f"  {'trained':<11} run {self.train.run_name},"
                f" {self.train.metrics.get('epoch', '?')} epochs"
            )
        if self.version is not None:
            lines.append(f"  {'registered':<11} {self.version.name} version {self.version.version}")
        c = self.comparison
        if c is not None:
            left = f", {c.left_out:,} it trained on left out" if c.left_out else ""
            lines.append(f"  {'compared':<11} on {c.on}: {c.rows:,} rows{left}")
            if c.note:
                lines.append(f"  {'':<11} note: {c.note}")
            champ = f"champion v{self.champion.version}" if self.champion else "champion"
            new = f"new v{self.version.version}" if self.version else "new"
            width = max(len(champ), len(new))
            for name, scores in ((champ, c.champion), (new, c.new)):
                cells = "  ".join(
                    f"{k} {scores[k]:.4f}"
                    for k in dict.fromkeys((c.metric, "accuracy", "f1"))
                    if isinstance(scores.get(k), float)
                )
                lines.append(f"  {'':<11} {name:<{width}}  {cells}")
        lines.append(f"  {'outcome':<11} {self.reason}")
        if self.promoted and self.champion is not None and self.version is not None:
            lines.append(
                f"  next: shipyard serve {self.project_file} --canary challenger"
                " --canary-percent 10   (or `shipyard promote` to make it champion)"
            )
        if self.mlflow_parent and self.tracking_uri:
            lines.append(
                f"  mlflow ui --backend-store-uri {self.tracking_uri}"
                f"   (parent run {self.mlflow_parent})"
            )
        return lines


def retrain(
    project: Project, *, sweep: bool = False, announce: Callable[[str], None] | None = None
) -> RetrainResult:
    """Export feedback, merge it, train (or sweep), and register the result as `challenger` only
    when it beats the champion by `promotion.min_improvement`; see the module docstring."""
    from shipyard.serving.feedback_export import check_batch_labels, export_feedback
    from shipyard.training.model_versions import champion_or_none, list_versions

    say = announce or log.info
    started = time.monotonic()
    exported = export_feedback(project)
    champion = champion_or_none(project)
    # A version a retrain registered but never judged (it failed or was interrupted after
    # registering) has not settled its feedback: the next retrain learns from it again.
    settled = [
        v for v in list_versions(project) if RETRAIN_TAG not in v.tags or OUTCOME_TAG in v.tags
    ]
    latest = settled[-1] if settled else None
    new_batches, rows = _new_feedback(project, latest)
    result = RetrainResult(
        project=project.name,
        trained=False,
        promoted=False,
        reason="",
        exported=exported,
        champion=champion,
        project_file=project.source_file,
    )
    if not new_batches:
        since = f" since version {latest.version} was trained" if latest else ""
        result.reason = f"no new feedback{since} in {exported.folder}: nothing to retrain on"
        return result
    check_batch_labels(project, new_batches)
    _check_metric(project)
    # Before `prepare` replaces the corpus folder: the champion's test split, kept aside.
    _keep_test_split(project)
    from shipyard.training.mlflow_store import client, tracking_uri

    result.feedback_batches, result.feedback_rows = new_batches, rows
    result.tracking_uri = tracking_uri(project)
    parent = _Parent(project)
    result.mlflow_parent = parent.run_id
    try:
        parent.child(
            "feedback",
            params={"batches": len(new_batches), "new_rows": rows},
            tags={"batches": "\n".join(new_batches)[:5000]},
        )
        say(f"retrain {project.name}: {rows:,} new feedback rows; preparing the corpus")
        from shipyard.corpus.prepare import prepare

        corpus = prepare(project, feedback=True).corpus
        result.corpus = corpus
        _keep_test_split(project)  # the next retrain's champion may be this corpus's model
        extra = corpus.manifest["counts"].get("extra_rows", {})
        parent.child(
            "corpus",
            params={"content_hash": corpus.content_hash, "train_rows": corpus.rows("train")},
            metrics={f"feedback_{k}": float(v) for k, v in extra.items()},
        )
        _check_metric(project, corpus)
        if sweep:
            say("training: a sweep (tuning section), the best trial registered")
            result.sweep, published = _sweep(project, corpus)
            parent.adopt(result.sweep.mlflow_parent)
        else:
            from shipyard.training.trainer import train

            say("training the new version")
            result.train = train(project, corpus=corpus)
            published = result.train.published
        version = published.version
        result.version = version
        mlc = client(project)
        mlc.set_model_version_tag(version.name, str(version.version), RETRAIN_TAG, parent.run_id)
        parent.adopt(version.run_id)
        result.trained = True
        _judge(project, result, corpus, parent)
        outcome = "challenger" if result.promoted else "unaliased"
        mlc.set_model_version_tag(version.name, str(version.version), OUTCOME_TAG, outcome)
    except KeyboardInterrupt:
        parent.finish("KILLED", {})
        raise
    except BaseException:
        parent.finish("FAILED", {})
        raise
    result.seconds = time.monotonic() - started
    parent.finish(
        "FINISHED",
        {
            "promoted": str(result.promoted).lower(),
            "new_version": str(result.version.version),
            "outcome": result.reason[:5000],
        },
    )
    return result


# -- feedback ------------------------------------------------------------------------------------
def _new_feedback(project: Project, latest: RegisteredVersion | None) -> tuple[list[str], int]:
    """The exported batches the newest version's corpus did not merge, and their row count (a
    retrain that was not promoted has learned from them too: retraining again adds nothing)."""
    import pyarrow.parquet as pq

    from shipyard.corpus import sources
    from shipyard.serving.feedback_export import feedback_batches
    from shipyard.training.lineage import corpus_of
    from shipyard.training.mlflow_store import client

    merged: set[str] = set()
    if latest is not None:
        link = corpus_of(client(project), latest)
        merged = {s.sha256 for s in link.extra_sources or []}
    new = []
    for path in feedback_batches(project):
        digests = {f.sha256 for f in sources.fingerprint(sources.resolve(path, "feedback"))}
        if not digests <= merged:
            new.append(path)
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in new)
    return new, rows


def _check_metric(project: Project, corpus: PreparedCorpus | None = None) -> None:
    """`promotion.metric` must be one the evaluation computes for this corpus's classes."""
    if corpus is None:
        try:
            corpus = PreparedCorpus.load(project.corpus_dir)
        except UserInputError:
            return  # not prepared yet: checked again once it is
    metric, classes = project.promotion.metric, corpus.num_classes
    if metric == "roc_auc" and classes != 2:
        raise UserInputError(
            f"promotion.metric: 'roc_auc' needs two classes; corpus {project.name} has"
            f" {classes} (use macro_f1 or accuracy)"
        )
    if metric == "macro_f1" and classes == 2:
        raise UserInputError(
            "promotion.metric: 'macro_f1' is reported for multi-class corpora; this one is"
            " binary (use f1 or accuracy)"
        )


# -- the champion's test split -------------------------------------------------------------------
def _splits_dir(project: Project) -> str:
    return str(project.workdir_path / "retrain" / SPLITS_DIR)


def _keep_test_split(project: Project) -> str | None:
    """Copy the prepared corpus's scoring split (test, else validation) aside, once per content
    hash; returns the copy, or None when there is no corpus or no such split."""
    from shipyard.training.split_stream import scoring_split

    try:
        corpus = PreparedCorpus.load(project.corpus_dir)
    except UserInputError:
        return None
    split = scoring_split(corpus)
    if split is None or "://" in corpus.path:
        return None  # a remote corpus is not copied aside: `compare` then says what it used
    target = os.path.join(_splits_dir(project), f"{corpus.content_hash[:16]}-{split}")
    if not os.path.isdir(target):
        tmp = f"{target}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(corpus.split_path(split), tmp)
        os.replace(tmp, target)
    return target


def _champion_rows(project: Project, champion: RegisteredVersion) -> tuple[str, str] | None:
    """The kept copy of the champion's scoring split and its name (by the content hash the
    champion records)."""
    content = champion.tags.get("corpus_content_hash", "")
    for split in ("test", "validation"):
        path = os.path.join(_splits_dir(project), f"{content[:16]}-{split}")
        if content and os.path.isdir(path):
            return path, split
    return None


def _judge(project, result: RetrainResult, corpus, parent) -> None:
    """Score new and champion on the same rows and move `challenger`, or say why not."""
    from shipyard.training.model_versions import CHALLENGER, set_alias

    champion, version = result.champion, result.version
    p = project.promotion
    if champion is None:
        shown = ", ".join(version.aliases) or "no alias"
        result.promoted = "champion" in version.aliases
        result.reason = (
            f"no champion yet: version {version.version} is the model's first champion ({shown})"
            if result.promoted
            else f"no champion alias: version {version.version} registered ({shown})"
        )
        return
    comparison = compare(project, champion, version, corpus)
    result.comparison = comparison
    parent.child(
        "evaluate",
        params={"metric": p.metric, "rows": comparison.rows, "on": comparison.on[:500]},
        metrics={
            **{f"champion_{k}": v for k, v in _scalars(comparison.champion).items()},
            **{f"new_{k}": v for k, v in _scalars(comparison.new).items()},
            "improvement": comparison.improvement,
            "left_out": float(comparison.left_out),
        },
    )
    gain, needed = comparison.improvement, p.min_improvement
    if gain != gain:  # NaN: e.g. ROC AUC of rows that hold one class only
        result.reason = (
            f"version {version.version} stays unaliased: {p.metric} is not defined on these"
            f" {comparison.rows:,} rows (one class only?), so it cannot be compared"
        )
        return
    if gain > 0 and gain >= needed:
        set_alias(project, CHALLENGER, version.version)
        version.aliases = sorted({*version.aliases, CHALLENGER})
        result.promoted = True
        result.reason = (
            f"version {version.version} is now challenger: {p.metric} {gain:+.4f} vs champion"
            f" version {champion.version} (promotion.min_improvement {needed:g})"
        )
    else:
        short = "is no better than" if gain <= 0 else "does not beat"
        result.reason = (
            f"version {version.version} stays unaliased: it {short} champion version"
            f" {champion.version} by promotion.min_improvement {needed:g} on {p.metric}"
            f" ({gain:+.4f})"
        )


def compare(
    project: Project,
    champion: RegisteredVersion,
    version: RegisteredVersion,
    corpus: PreparedCorpus,
) -> Comparison:
    """Both versions scored on the champion's test split (rows the new one trained on left
    out), or on the new corpus's when that split was never kept."""
    from shipyard.training.export_loader import load_exported
    from shipyard.training.metrics import classification_metrics
    from shipyard.training.model_versions import artifact_path
    from shipyard.training.split_stream import parquet_batches, predict_batches, scoring_split

    new = load_exported(artifact_path(project, version))
    old = load_exported(artifact_path(project, champion))
    if list(new.labels) != list(old.labels):
        raise ShipyardError(
            f"version {version.version} has labels {list(new.labels)} and champion version"
            f" {champion.version} {list(old.labels)}: their scores are not comparable"
        )
    columns = new.raw_columns
    kept, note = _champion_rows(project, champion), None
    if kept is not None:
        path, split = kept
        on = f"champion v{champion.version}'s {split} split"
    else:
        split = scoring_split(corpus)
        if split is None:
            raise ShipyardError(f"{corpus.path}: no test or validation split to compare on")
        path = corpus.split_path(split)
        on = f"the new corpus's {split} split"
        note = (
            f"champion v{champion.version}'s own test split was not kept (its corpus"
            f" {champion.tags.get('corpus_content_hash', '?')[:12]} was replaced before any"
            " retrain saw it, or it is remote); rows it trained on may be among these"
        )
    seen = _also_in_train(path, corpus, columns) if kept is not None else set()

    def batches():
        for batch in parquet_batches(path, columns):
            if seen:
                keep = [k not in seen for k in _keys(batch, columns)]
                batch = {c: v[keep] for c, v in batch.items()}
            if len(batch["label"]):
                yield batch

    if not any(len(b["label"]) for b in batches()):
        raise ShipyardError(
            f"{on}: every row is in the new version's training split; nothing fair to compare on"
        )
    scores = {}
    rows = 0
    for name, exported in (("new", new), ("champion", old)):
        probs, labels = predict_batches(lambda b, m=exported: m.predict_raw(b), batches())
        scores[name] = classification_metrics(probs, labels, exported.num_classes)
        rows = len(labels)
    return Comparison(
        metric=project.promotion.metric,
        mode=project.promotion.mode,
        rows=rows,
        on=on,
        new=scores["new"],
        champion=scores["champion"],
        left_out=len(seen),
        note=note,
    )


def _keys(batch: dict, columns: list[str]) -> list:
    """A row's identity across corpora: its raw input (a missing number as None: NaN never
    equals itself)."""
    if len(columns) == 1:
        return batch[columns[0]].tolist()
    values = [[None if v != v else v for v in batch[c].tolist()] for c in columns]
    return list(zip(*values, strict=True))


def _also_in_train(path: str, corpus: PreparedCorpus, columns: list[str]) -> set:
    """Keys of the kept split's rows that the new corpus's train split also holds."""
    from shipyard.training.split_stream import parquet_batches, split_batches

    wanted = {k for batch in parquet_batches(path, columns) for k in _keys(batch, columns)}
    found: set = set()
    for batch in split_batches(corpus, "train", columns):
        found.update(k for k in _keys(batch, columns) if k in wanted)
    return found


def _scalars(metrics: dict) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and v == v
    }


# -- sweep ---------------------------------------------------------------------------------------
def _sweep(project: Project, corpus: PreparedCorpus):
    """A sweep of the tuning section whose best trial is registered without an alias: the
    comparison below decides the alias, not the sweep."""
    from shipyard.tuning.driver import publish_trial, sweep

    swept = sweep(project.with_overrides({"tuning.promote": False}))
    if swept.best is None:
        raise ShipyardError(f"sweep {swept.name}: no trial to register ({'; '.join(swept.notes)})")
    published = publish_trial(project, corpus, swept.best, swept.name)
    swept.published = published
    return swept, published


# -- MLflow --------------------------------------------------------------------------------------
class _Parent:
    """The retrain's parent run; each step a child (`mlflow.parentRunId`)."""

    def __init__(self, project: Project):
        from shipyard.training.mlflow_store import client, experiment_id

        self.mlc = client(project)
        self.experiment = experiment_id(self.mlc, project)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        run = self.mlc.create_run(
            self.experiment,
            run_name=f"retrain-{project.name}-{stamp}",
            tags={"shipyard.kind": "retrain", "project_file": project.source_file},
        )
        self.run_id = run.info.run_id
        p = project.promotion
        self.mlc.log_param(self.run_id, "promotion.metric", p.metric)
        self.mlc.log_param(self.run_id, "promotion.min_improvement", p.min_improvement)

    def child(
        self,
        step: str,
        *,
        params: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, str] | None = None,
    ) -> str:
        run = self.mlc.create_run(
            self.experiment,
            run_name=step,
            tags={"mlflow.parentRunId": self.run_id, "shipyard.kind": f"retrain.{step}"}
            | (tags or {}),
        )
        for k, v in (params or {}).items():
            self.mlc.log_param(run.info.run_id, k, str(v))
        for k, v in (metrics or {}).items():
            self.mlc.log_metric(run.info.run_id, k, v)
        self.mlc.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id

    def adopt(self, run_id: str | None) -> None:
        """Make a run written elsewhere (training, the sweep's parent) a child of this one."""
        if run_id:
            self.mlc.set_tag(run_id, "mlflow.parentRunId", self.run_id)

    def finish(self, status: str, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.mlc.set_tag(self.run_id, k, v)
        self.mlc.set_terminated(self.run_id, status)
