"""`shipyard feedback export`: the feedback replicas wrote -> one Parquet batch the corpus merges.

A batch holds the columns `prepare` reads from extra rows (`text` or the feature columns, and
`label`, as the label values the source uses) plus `feedback_*` provenance columns, which the
corpus reader ignores. The batches themselves are the ledger: a record whose id is in one of them
is not exported again, so running export twice adds nothing the second time. A batch is written
beside its final name and renamed into place, so a failed export leaves no half batch behind.
`shipyard data prepare` merges every batch (`feedback_batches`) unless told `--no-feedback`.
"""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from shipyard.errors import UserInputError
from shipyard.project import Project
from shipyard.serving.feedback_store import (
    FeedbackRecord,
    feedback_dir,
    feedback_files,
    read_records,
)

BATCH_GLOB = "feedback-*.parquet"
ID_COLUMN = "feedback_id"
PROVENANCE = {  # column -> (record field, Arrow type)
    ID_COLUMN: ("id", pa.string()),
    "feedback_time": ("time", pa.float64()),
    "feedback_prediction": ("prediction", pa.string()),
    "feedback_model": ("model", pa.string()),
    "feedback_version": ("version", pa.int64()),
    "feedback_variant": ("variant", pa.string()),
    "feedback_request_id": ("request_id", pa.string()),
    "feedback_arm": ("arm", pa.string()),
}


@dataclass
class FeedbackExport:
    folder: Path  # where the feedback was read
    path: Path | None  # the batch written, None when there was nothing new
    rows: int
    skipped_duplicates: int  # records already in an earlier batch (or written twice)
    labels: dict[str, int] = field(default_factory=dict)

    def describe(self) -> list[str]:
        """What `shipyard feedback export` prints."""
        seen = f" ({self.skipped_duplicates:,} already exported)" if self.skipped_duplicates else ""
        if self.path is None:
            return [f"no new feedback in {self.folder}{seen}"]
        lines = [f"exported {self.rows:,} feedback rows to {self.path}{seen}"]
        lines += [f"  {label:<20} {n:>8,}" for label, n in sorted(self.labels.items())]
        lines.append("`shipyard data prepare` merges them into the corpus (--no-feedback skips)")
        return lines


def exports_dir(project: Project) -> Path:
    return feedback_dir(project) / "exports"


def feedback_batches(project: Project) -> list[str]:
    """The exported batches, oldest first: the extra sources `shipyard data prepare` adds."""
    folder = exports_dir(project)
    return [str(p) for p in sorted(folder.glob(BATCH_GLOB))] if folder.is_dir() else []


def export_feedback(project: Project, *, out: str | os.PathLike | None = None) -> FeedbackExport:
    """Compact every record not exported yet into one batch in `out` (default
    `<feedback_dir>/exports`); the batches already in `out` say which records those are."""
    folder = feedback_dir(project)
    target = Path(out) if out is not None else folder / "exports"
    done = _exported_ids(target)
    labels = _label_values(project)
    new: list[tuple[FeedbackRecord, Path]] = []
    skipped = 0
    for path in feedback_files(folder):
        for record in read_records(path):
            if record.id in done:
                skipped += 1
                continue
            done.add(record.id)
            _check(project, record, path, labels)
            new.append((record, path))
    if not new:
        return FeedbackExport(folder, None, 0, skipped)
    new.sort(key=lambda rp: (rp[0].time, rp[0].id))
    records = [r for r, _ in new]
    for r in records:
        if labels is not None:
            r.label = labels[r.label]
    table = _table(project, records, [p for _, p in new])
    target.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = target / f"feedback-{stamp}.parquet"
    tmp = target / f".{path.name}.tmp"
    pq.write_table(table, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    counts = dict(Counter(table["label"].to_pylist()))
    return FeedbackExport(folder, path, len(records), skipped, counts)


def _exported_ids(target: Path) -> set[str]:
    if not target.is_dir():
        return set()
    ids: set[str] = set()
    for batch in sorted(target.glob(BATCH_GLOB)):
        try:
            ids.update(pq.read_table(batch, columns=[ID_COLUMN])[ID_COLUMN].to_pylist())
        except (OSError, KeyError, ValueError) as exc:  # ArrowInvalid is a ValueError
            raise UserInputError(f"{batch}: cannot read its {ID_COLUMN!r} column ({exc})") from None
    return ids


def _label_values(project: Project) -> dict[str, str] | None:
    """Accepted label -> the value to store, or None when nothing says which labels exist.

    With `data.label_map` the cleaner accepts its keys (a class of several keys is also known by
    their joined name, which maps to its first key); otherwise the prepared corpus's labels."""
    mapping = project.data.label_map
    if mapping:
        values = {k: k for k in mapping}
        for i in sorted(set(mapping.values())):
            keys = sorted(k for k, v in mapping.items() if v == i)
            values.setdefault("|".join(keys), keys[0])
        return values
    from shipyard.corpus.manifest import PreparedCorpus

    try:
        corpus = PreparedCorpus.load(project.corpus_dir)
    except UserInputError:  # not prepared yet (or by another format): prepare will judge
        return None
    return {label: label for label in corpus.labels}


def check_batch_labels(project: Project, paths: list[str]) -> None:
    """Refuse a batch holding a label the corpus does not have (one written for another corpus,
    or edited by hand): merged, it would add a class instead of correcting one."""
    labels = _label_values(project)
    if labels is None:
        return
    known = ", ".join(sorted(k for k in labels if "|" not in k))
    for path in paths:
        try:
            found = set(pq.read_table(path, columns=["label"])["label"].to_pylist())
        except (OSError, KeyError, ValueError) as exc:  # ArrowInvalid is a ValueError
            raise UserInputError(f"{path}: cannot read its 'label' column ({exc})") from None
        unknown = sorted(str(v) for v in found if v not in labels)
        if unknown:
            raise UserInputError(
                f"{path}: label {unknown[0]!r} is not a label of corpus {project.name} (known:"
                f" {known}); fix or remove this batch before retraining"
            )


def _check(project: Project, record: FeedbackRecord, path: Path, labels: dict | None) -> None:
    if labels is not None and record.label not in labels:
        known = ", ".join(sorted(k for k in labels if "|" not in k))
        raise UserInputError(
            f"{path}: feedback {record.id} has label {record.label!r}, which is not a label of"
            f" corpus {project.name} (known: {known}); correct or remove that line"
        )
    want = str if project.data.kind == "text" else dict
    if not isinstance(record.input, want):
        raise UserInputError(
            f"{path}: feedback {record.id} has a {type(record.input).__name__} input, but"
            f" {project.name} is a {project.data.kind} project"
        )


def _table(project: Project, records: list[FeedbackRecord], paths: list[Path]) -> pa.Table:
    """The corpus's columns for these records, then provenance."""
    if project.data.kind == "text":
        columns: dict[str, pa.Array] = {"text": pa.array([r.input for r in records], pa.string())}
    else:
        columns = _feature_columns(project, records, paths)
    columns["label"] = pa.array([r.label for r in records], pa.string())
    for name, (attr, kind) in PROVENANCE.items():
        if name in columns:
            raise UserInputError(f"data: feature {name!r} clashes with a feedback column")
        columns[name] = pa.array([getattr(r, attr) for r in records], kind)
    return pa.table(columns)


def _feature_columns(project, records, paths) -> dict[str, pa.Array]:
    """The features as the prepared corpus types them (numeric -> float64, categorical ->
    string); before a corpus exists, the configured or seen names with the types the values have
    (strings when mixed: the cleaner parses numbers from strings)."""
    from shipyard.corpus.manifest import PreparedCorpus

    try:
        features = PreparedCorpus.load(project.corpus_dir).features
        numeric, categorical = list(features["numeric"]), list(features["categorical"])
    except (UserInputError, KeyError):
        numeric, categorical = [], []
    columns: dict[str, pa.Array] = {}
    for name in numeric:
        values = []
        for r, path in zip(records, paths, strict=True):
            v = r.input.get(name)
            try:
                values.append(None if v is None or v == "" else float(v))
            except (TypeError, ValueError):
                raise UserInputError(
                    f"{path}: feedback {r.id}: feature {name!r} is numeric but has {v!r}"
                ) from None
        columns[name] = pa.array(values, pa.float64())
    for name in categorical:
        values = [None if (v := r.input.get(name)) is None else str(v) for r in records]
        columns[name] = pa.array(values, pa.string())
    if columns:
        return columns
    configured = project.data.feature_columns or []
    if configured and all(isinstance(c, str) for c in configured):
        names = list(configured)
    else:  # none configured, or by position: the names the service received
        label = project.data.label_column
        names = sorted({k for r in records for k in r.input} - {label, "label"})
    for name in names:
        values = [r.input.get(name) for r in records]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            columns[name] = pa.array([None if v is None else str(v) for v in values], pa.string())
    return columns
