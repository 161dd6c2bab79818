"""`shipyard data prepare`: raw corpus -> cleaned, deduplicated, split, encoded Parquet shards.

The pipeline is Ray Data streaming operators end to end, so it spreads over every node and holds
corpora far larger than memory (nothing is materialized: exact dedup partitions rows into buckets
on disk, see `dedup.py`, and the later passes stream the deduplicated Parquet back):

    read line ranges -> clean (+ key, draw, row hash) -> bucket by key -> keep one row per key
    -> [near-dup] -> profile (counts, split histograms, content digest) -> split cuts ->
    vocabulary or statistics from train -> encode + split -> Parquet per split

Only small aggregates reach the driver. Output is written to a temporary folder beside the target
and renamed into place only when the manifest is complete, so a failed run never leaves a corpus
that looks finished, and an earlier good corpus stays intact until the new one replaces it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import ray.data

from shipyard.corpus import clean, dedup, parquet_parts, sources, split, synth
from shipyard.corpus.manifest import FORMAT_VERSION, MANIFEST, PreparedCorpus, write_manifest
from shipyard.corpus.memory import release_memory
from shipyard.errors import ShipyardError, UserInputError
from shipyard.project import DataConfig, Project

MAX_CATEGORIES = 1_000
OBJECT_STORE_BYTES_PER_CPU = 96 << 20  # Ray Data's in-flight budget: a few blocks per CPU
ENCODE_BATCH_ROWS = 16_384  # per encoding call: its temporaries are ~40x the text
PIPELINE_VERSION = 2  # part of the fingerprint: corpora built by older code are rebuilt
EXTRA = "data.extra_sources"
log = logging.getLogger(__name__)


@dataclass
class PrepareResult:
    corpus: PreparedCorpus
    reused: bool
    # stage -> node id -> rows, when prepare(..., provenance=True): which nodes did the work.
    provenance: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def manifest(self) -> dict:
        return self.corpus.manifest


def prepare(
    project: Project,
    *,
    force: bool = False,
    extra_sources: list[str] = (),
    provenance: bool = False,
) -> PrepareResult:
    """Prepare the project's corpus, or reuse the one on disk when its inputs are unchanged.

    `extra_sources`: more labeled rows (e.g. the feedback a service captured, Parquet with
    `text`, `label`) merged into the source before dedup. `provenance`: also record which nodes
    cleaned and encoded how many rows (one small actor call per batch).
    """
    from shipyard.cluster import connect

    data = project.data
    out = project.corpus_dir
    inputs = _resolve_inputs(project, list(extra_sources))
    files = [sources.fingerprint(src) for src in inputs]
    fingerprint = _fingerprint(data, [f for group in files for f in group])
    if not force:
        reused = _reuse(out, fingerprint)
        if reused:
            return PrepareResult(reused, reused=True)
    # Bad files and settings fail here, in the driver, before Ray starts.
    layouts = [sources.inspect(src, _reading(src, data)) for src in inputs]
    _check_label_map(data)
    connect(project.cluster.address, num_cpus=project.cluster.num_cpus)
    recorder = _Provenance.remote() if provenance else None
    tmp = f"{out.rstrip('/')}.partial-{uuid.uuid4().hex[:8]}"
    os.makedirs(tmp)
    try:
        try:
            with _data_context():
                manifest = _run(project, inputs, layouts, files, tmp, recorder)
        except Exception as exc:
            raise _input_error(exc, inputs, layouts, data) from None
        manifest.update(
            format_version=FORMAT_VERSION,
            name=project.name,
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            fingerprint=fingerprint,
            sources=[f.__dict__ for group in files for f in group],
            config=data.model_dump(mode="json"),
        )
        write_manifest(tmp, manifest)
        _swap_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    nodes = ray.get(recorder.snapshot.remote()) if recorder else {}
    return PrepareResult(PreparedCorpus(out, manifest), reused=False, provenance=nodes)


@contextlib.contextmanager
def _data_context():
    """Ray Data settings for this pipeline, restored afterwards (the context is per process).

    - A task's own exception (a BadValue naming file and value), not Ray Data's generic wrapper.
    - The actor-based hash shuffle: the default (SHUFFLE_V2) runs its map tasks in a worker pool
      of their own (another runtime env), and Ray's idle-worker limit (one per CPU) then evicts
      the workers that already imported TensorFlow and pandas. Every later stage pays the start-up
      again: measured 12 s instead of 1.5 s for a 3,000-row corpus, 35 s instead of 18 s for 1M.
    - Blocks in flight between operators are capped (OBJECT_STORE_BYTES_PER_CPU): by default Ray
      Data may fill half the object store, whose pages stay resident once touched.
    - Its aggregator actors reserve no CPU: by default each takes a quarter CPU, and on 1-CPU nodes
      the shuffle's 1-CPU map tasks then never fit beside them (a deadlock).
    """
    from ray.data.context import ShuffleStrategy

    context = ray.data.DataContext.get_current()
    names = (
        "raise_original_map_exception",
        "shuffle_strategy",
        "hash_shuffle_operator_actor_num_cpus_override",
    )
    saved = {name: getattr(context, name) for name in names}
    saved_limits = context.execution_options.resource_limits
    context.execution_options.resource_limits = saved_limits.copy(
        object_store_memory=OBJECT_STORE_BYTES_PER_CPU * _cpus()
    )
    context.raise_original_map_exception = True
    context.shuffle_strategy = ShuffleStrategy.HASH_SHUFFLE
    context.hash_shuffle_operator_actor_num_cpus_override = 0
    try:
        yield context
    finally:
        for name, value in saved.items():
            setattr(context, name, value)
        context.execution_options.resource_limits = saved_limits


# -- inputs --------------------------------------------------------------------------------------
def _resolve_inputs(project: Project, extra: list[str]) -> list[sources.Source]:
    data = project.data
    if data.synthetic:
        inputs = [sources.resolve(_synthesize(project), "data.synthetic")]
    elif data.source_splits:
        inputs = [
            sources.resolve(project.path(p), f"data.source_splits.{name}", split=name)
            for name, p in data.source_splits.items()
        ]
    else:
        inputs = [sources.resolve(project.path(data.source), "data.source")]
    for i, path in enumerate([*data.extra_sources, *extra]):
        inputs.append(sources.resolve(project.path(path), f"{EXTRA}[{i}]"))
    return inputs


def _reading(src: sources.Source, data: DataConfig) -> DataConfig:
    """How to parse a source: the data section's format options describe the main source only;
    extra rows (feedback) are recognized by extension, with a header and default quoting."""
    if not src.field.startswith(EXTRA):
        return data
    return data.model_copy(
        update={
            "format": "auto",
            "header": True,
            "quoting": True,
            "delimiter": None,
            "column_names": None,
        }
    )


def _synthesize(project: Project) -> str:
    """Generate the synthetic source once per spec; it is an input, kept beside the corpus."""
    spec = project.data.synthetic
    path = project.workdir_path / "raw" / f"synthetic-{project.fingerprint('data')}.parquet"
    if not path.exists():
        synth.write(synth.SynthSpec(**spec.model_dump()), path)
    return str(path)


def _fingerprint(data: DataConfig, files: list[sources.SourceFile]) -> str:
    blob = json.dumps(
        {
            "config": data.model_dump(mode="json"),
            "files": [f.sha256 for f in files],
            "pipeline": PIPELINE_VERSION,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _reuse(out: str, fingerprint: str) -> PreparedCorpus | None:
    if not os.path.exists(os.path.join(out, MANIFEST)):
        return None
    try:
        corpus = PreparedCorpus.load(out)
    except (UserInputError, ValueError):  # another format version, or a damaged manifest
        return None
    return corpus if corpus.manifest.get("fingerprint") == fingerprint else None


# -- provenance ----------------------------------------------------------------------------------
@ray.remote(num_cpus=0)
class _Provenance:
    """Rows per stage and node, reported by the tasks themselves (opt-in; tests use it)."""

    def __init__(self):
        self.rows: dict[str, dict[str, int]] = {}

    def add(self, stage: str, node: str, rows: int) -> None:
        per_node = self.rows.setdefault(stage, {})
        per_node[node] = per_node.get(node, 0) + rows

    def snapshot(self) -> dict[str, dict[str, int]]:
        return self.rows


def _record(recorder, stage: str, rows: int) -> None:
    if recorder is not None:  # waited on, so the driver's snapshot sees every batch
        ray.get(recorder.add.remote(stage, ray.get_runtime_context().get_node_id(), rows))


def _clean_stage(batch: pa.Table, opts: clean.CleanOptions, recorder) -> pa.Table:
    out = clean.clean_batch(batch, opts)
    _record(recorder, "clean", batch.num_rows)
    release_memory()
    return out


def _encode_stage(batch: pa.Table, fn, args: tuple, recorder) -> pa.Table:
    out = fn(batch, *args)
    _record(recorder, "encode", batch.num_rows)
    release_memory()
    return out


# -- the pipeline --------------------------------------------------------------------------------
def _run(
    project: Project,
    inputs: list[sources.Source],
    layouts: list[sources.Layout],
    files: list[list[sources.SourceFile]],
    tmp: str,
    recorder,
) -> dict:
    data = project.data
    cpus = _cpus()
    clock = _Clock()
    opts = _clean_options(data, layouts[0], has_split=bool(data.source_splits))
    work_dir = os.path.join(tmp, ".work")  # intermediate Parquet, removed before the rename
    deduped = _clean_and_dedup(data, inputs, layouts, files, opts, cpus, recorder, work_dir)
    clock.lap("read, clean, dedup")
    profile = _profile_of(deduped.read(*_PROFILE_COLUMNS), opts.draw)
    clock.lap("profile")
    kept = deduped.usable()
    near_removed = 0
    if data.dedup == "near" and data.kind == "text":
        from shipyard.corpus.near_dup import near_duplicate_keys

        drop = near_duplicate_keys(kept, threshold=data.near_dup_threshold, seed=data.seed)
        near_removed = len(drop)
        if drop:
            kept = kept.map_batches(_drop_keys, fn_args=(drop,), batch_format="pyarrow")
            kept = kept.materialize()
            deduped = _Rows(kept)
            first, profile = profile, _profile_of(kept, opts.draw)
            profile.update(read=first["read"], dropped=first["dropped"])
        clock.lap("near-dup")
    if not profile["kept"]:
        names = ", ".join(src.files[0] for src in inputs if not src.field.startswith(EXTRA))
        raise UserInputError(
            f"{names}: the corpus is empty after cleaning ({_describe_drops(profile['dropped'])})"
        )
    labels, label_index = _labels(data, profile["labels"])
    if opts.draw:
        fractions = (data.splits.train, data.splits.validation)
        cuts = split.stratified_cuts(deduped.usable("label", "u"), profile["histograms"], fractions)
        per_split = split.split_counts(profile["histograms"], fractions)
        clock.lap("split cuts")
    else:
        cuts, per_split = None, profile["split_labels"]
    manifest: dict = {
        "kind": data.kind,
        "labels": labels,
        "seed": data.seed,
        "counts": {
            "read": profile["read"],
            "dropped": profile["dropped"],
            "exact_duplicates": profile["read"]
            - sum(profile["dropped"].values())
            - profile["kept"]
            - near_removed,
            "near_duplicates": near_removed,
            "kept": profile["kept"],
        },
        "splits": {
            name: {"rows": sum(rows.values()), "labels": dict(sorted(rows.items()))}
            for name in split.SPLITS
            if sum((rows := per_split.get(name, {})).values())
        },
        "extra_sources": [],
    }
    extras = [
        (src, layout, group)
        for src, layout, group in zip(inputs, layouts, files, strict=True)
        if src.field.startswith(EXTRA)
    ]
    if extras:  # feedback is small: counting its rows again costs little
        manifest["extra_sources"] = [
            {**f.__dict__, "field": src.field} for src, _, group in extras for f in group
        ]
        read = sum(
            sources.read(src, _reading(src, data), layout, cpus).count()
            for src, layout, _ in extras
        )
        manifest["counts"]["extra_rows"] = {"read": read, "kept": profile["extra_kept"]}

    needed = ["text"] if data.kind == "text" else [*opts.numeric, *opts.categorical]
    train = deduped.usable("label", "u", "split", *needed).map_batches(
        split.is_split, fn_args=("train", cuts), batch_format="pyarrow"
    )
    if data.kind == "text":
        fn, args, batch_size = _learn_text(data, train, label_index, cuts, manifest)
        clock.lap("vocabulary")
    else:
        fn, args, batch_size = _learn_tabular(opts, train, label_index, cuts, manifest)
        clock.lap("statistics")
    encoded = kept.map_batches(
        _encode_stage, fn_args=(fn, args, recorder), batch_format="pyarrow", batch_size=batch_size
    )
    encoded.write_parquet(tmp, partition_cols=["split"])
    clock.lap("encode, write")
    for name in split.SPLITS:
        hive = os.path.join(tmp, f"split={name}")
        if os.path.isdir(hive):
            os.rename(hive, os.path.join(tmp, name))
    manifest["content_hash"] = _content_hash(manifest, profile["digests"], data, opts.draw)
    shutil.rmtree(work_dir, ignore_errors=True)
    return manifest


def _clean_and_dedup(data, inputs, layouts, files, opts, cpus, recorder, work_dir) -> _Rows:
    """Every source read and cleaned, unioned, and one row kept per key, written to Parquet under
    `work_dir` (later stages read it several times, each only the columns it needs)."""
    has_split = bool(data.source_splits)
    extras = [src.field.startswith(EXTRA) for src in inputs]
    cleaned = []
    for src, layout, is_extra in zip(inputs, layouts, extras, strict=True):
        o = _extra_options(opts, layout, src, has_split) if is_extra else opts
        if any(extras):
            o = dataclasses.replace(o, extra=is_extra)
        ds = sources.read(src, _reading(src, data), layout, cpus)
        cleaned.append(ds.map_batches(_clean_stage, fn_args=(o, recorder), batch_format="pyarrow"))
    ds = cleaned[0].union(*cleaned[1:]) if len(cleaned) > 1 else cleaned[0]
    if data.dedup == "none":
        return _Rows(dedup.persist(ds, work_dir))
    total_bytes = sum(f.bytes for group in files for f in group)
    return _Rows(dedup.exact(ds, work_dir, dedup.bucket_count(total_bytes, cpus), has_split))


# What the profile pass reads (those present): everything but the text, key and features.
_PROFILE_COLUMNS = ("status", "label", "split", "copies", "rowhash", "extra", "u")


class _Rows:
    """The deduplicated rows: Parquet read back with only the columns a pass needs (the text is
    most of the bytes and most passes never look at it), or, after near-duplicate removal, the
    usable rows as an in-memory dataset."""

    def __init__(self, source):
        self.source = source
        if isinstance(source, str):
            import pyarrow.parquet as pq

            self.files = parquet_parts.files_in(source)
            self.names = set(pq.read_schema(self.files[0]).names) if self.files else set()

    def read(self, *columns: str):
        """Every row, unusable ones included, with `columns` (those present; all when none)."""
        if not isinstance(self.source, str):
            return self.source
        wanted = [c for c in columns if c in self.names] if columns else None
        return parquet_parts.read(self.files, wanted)

    def usable(self, *columns: str):
        """The rows that pass cleaning, with `columns` (all when none)."""
        if not isinstance(self.source, str):
            return self.source  # filtered before it was kept in memory
        wanted = ("status", *columns) if columns else ()
        return self.read(*wanted).map_batches(_only_ok, batch_format="pyarrow")


def _learn_text(data: DataConfig, train, label_index, cuts, manifest: dict):
    """The vocabulary from train; returns the encoder stage (function, arguments, batch size)."""
    from shipyard.corpus import encode, vocab
    from shipyard.corpus.tokenizer_settings import TokenizerSettings

    settings = TokenizerSettings(
        mode=data.tokenizer,
        lowercase=data.lowercase,
        sequence_length=data.sequence_length,
        vocab_size=data.vocab_size,
    )
    vocabulary = vocab.build_vocabulary(train, settings)
    if not vocabulary:
        raise UserInputError("data: the training split has no tokens to build a vocabulary")
    manifest["tokenizer"] = settings.to_dict()
    manifest["vocabulary"] = vocabulary
    manifest["schema"] = {
        "key": "string",
        "text": "string",
        "ids": f"int32[{settings.sequence_length}]",
        "label": "int32",
    }
    vocab_id = hashlib.sha256(json.dumps([vocabulary, settings.to_dict()]).encode()).hexdigest()
    args = (vocab_id, vocabulary, settings, label_index, cuts)
    return encode.encode_text, args, ENCODE_BATCH_ROWS


def _learn_tabular(opts: clean.CleanOptions, train, label_index, cuts, manifest: dict):
    """Normalization statistics and category vocabularies from train; returns the encoder."""
    from shipyard.corpus import encode, vocab

    stats = vocab.tabular_statistics(
        train, list(opts.numeric), list(opts.categorical), MAX_CATEGORIES
    )
    manifest["features"] = stats
    manifest["schema"] = {
        **{c: "float32" for c in opts.numeric},
        **{c: "string" for c in opts.categorical},
        "label": "int32",
    }
    return encode.encode_tabular, (stats, label_index, cuts), None


class _Clock:
    """Seconds per phase, logged at debug level (`logging.getLogger("shipyard.corpus")`)."""

    def __init__(self):
        self.last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        log.debug("prepare: %-20s %6.2f s", phase, now - self.last)
        self.last = now


def _clean_options(data: DataConfig, layout: sources.Layout, has_split: bool) -> clean.CleanOptions:
    names = list(layout.names)
    label = sources.select_columns(names, data.label_column, "data.label_column")
    label_map = tuple(sorted(data.label_map.items())) if data.label_map else None
    common = {"label_map": label_map, "seed": data.seed, "draw": not has_split}
    if data.kind == "text":
        text = sources.select_columns(names, data.text_column, "data.text_column")
        return clean.CleanOptions(
            kind="text",
            text_column=text,
            label_column=label,
            lowercase=data.lowercase,
            min_chars=data.min_chars,
            max_chars=data.max_chars,
            **common,
        )
    wanted = data.feature_columns or [n for n in names if n != label]
    features = [sources.select_columns(names, c, "data.feature_columns") for c in wanted]
    categorical = {
        sources.select_columns(names, c, "data.categorical_columns")
        for c in data.categorical_columns
    }
    for name in features:
        if not _is_numeric(layout.type_of(name)):
            categorical.add(name)
    return clean.CleanOptions(
        kind="tabular",
        text_column=None,
        label_column=label,
        numeric=tuple(f for f in features if f not in categorical),
        categorical=tuple(f for f in features if f in categorical),
        **common,
    )


def _extra_options(
    opts: clean.CleanOptions, layout: sources.Layout, src: sources.Source, has_split: bool
) -> clean.CleanOptions:
    """Feedback rows use shipyard's own column names (`text` or the features, and `label`); with
    splits from the source they join train, so the source's evaluation splits stay fixed."""
    wanted = ["text"] if opts.kind == "text" else [*opts.numeric, *opts.categorical]
    missing = [c for c in [*wanted, "label"] if c not in layout.names]
    if missing:
        raise UserInputError(
            f"{src.field}: {src.files[0]} has no column {missing[0]!r}"
            f" (extra rows need {', '.join([*wanted, 'label'])}; found {', '.join(layout.names)})"
        )
    return dataclasses.replace(
        opts,
        text_column="text" if opts.kind == "text" else None,
        label_column="label",
        default_split="train" if has_split else None,
    )


def _is_numeric(t) -> bool:
    return t is not None and (pa.types.is_integer(t) or pa.types.is_floating(t))


def _only_ok(batch: pa.Table) -> pa.Table:
    """The usable rows. Dedup sorts by key and the `~status` keys sort last, so they are
    usually a prefix: a zero-copy slice instead of copying every column of the corpus."""
    ok = pc.equal(batch["status"], clean.OK)
    usable = pc.sum(ok).as_py() or 0
    if usable == batch.num_rows or (usable and pc.all(ok.slice(0, usable)).as_py()):
        return batch.slice(0, usable).drop_columns(["status"])
    return batch.filter(ok).drop_columns(["status"])


def _drop_keys(batch: pa.Table, keys: set[str]) -> pa.Table:
    mask = pc.invert(pc.is_in(batch["key"], value_set=pa.array(sorted(keys), pa.string())))
    return batch.filter(mask)


# -- the profile: one pass, small partial aggregates ---------------------------------------------
def _profile(batch: pa.Table, draw: bool) -> pa.Table:
    """Per (status, label, split) group of a batch: rows, copies, feedback rows kept, the content
    digest, and the histogram of split draws."""
    n = batch.num_rows
    status = batch["status"] if "status" in batch.column_names else pa.array([clean.OK] * n)
    parts = [status, batch["label"]]
    has_split = "split" in batch.column_names
    if has_split:
        parts.append(batch["split"])
    codes = np.zeros(n, dtype=np.int64)
    dictionaries = []
    for part in parts:
        encoded = pc.dictionary_encode(part)
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.unify_dictionaries().combine_chunks()
        dictionaries.append(encoded.dictionary.to_pylist())
        codes = codes * len(dictionaries[-1]) + encoded.indices.to_numpy(zero_copy_only=False)
    combos, codes = np.unique(codes, return_inverse=True)
    k = len(combos)
    rows = np.bincount(codes, minlength=k)
    copies = np.zeros(k, dtype=np.int64)
    np.add.at(copies, codes, batch["copies"].to_numpy())
    digest = np.zeros(k, dtype=np.uint64)
    np.add.at(digest, codes, batch["rowhash"].to_numpy())  # wraps: a sum mod 2**64
    extra = np.zeros(k, dtype=np.int64)
    if "extra" in batch.column_names:
        np.add.at(extra, codes, batch["extra"].to_numpy().astype(np.int64))
    hists: list[list[int] | None] = [None] * k
    if draw:
        bins = split.bins_of(batch["u"].to_numpy())
        for g in range(k):
            hists[g] = np.bincount(bins[codes == g], minlength=split.BINS).tolist()
    fields: list[list[str | None]] = []
    for combo in combos.tolist():
        values: list[str | None] = []
        for dictionary in reversed(dictionaries):
            combo, i = divmod(combo, len(dictionary))
            values.append(dictionary[i])
        fields.append(values[::-1] + ([] if has_split else [None]))
    return pa.table(
        {
            "status": [f[0] for f in fields],
            "label": [f[1] for f in fields],
            "split": pa.array([f[2] for f in fields], pa.string()),
            "rows": rows,
            "copies": copies,
            "extra_kept": extra,
            "digest": pa.array(digest, pa.uint64()),
            "hist": pa.array(hists, pa.list_(pa.int64())),
        }
    )


def _profile_of(ds, draw: bool) -> dict:
    """Merge the partial profiles: what was read and dropped, what is kept per label and split."""
    out: dict = {
        "read": 0,
        "dropped": {},
        "kept": 0,
        "labels": set(),
        "split_labels": {},
        "histograms": {},
        "digests": {},
        "extra_kept": 0,
    }
    partial = ds.map_batches(_profile, fn_args=(draw,), batch_format="pyarrow")
    for batch in partial.iter_batches(batch_format="pyarrow", batch_size=None):
        for row in batch.to_pylist():
            out["read"] += row["copies"]
            if row["status"] != clean.OK:
                out["dropped"][row["status"]] = out["dropped"].get(row["status"], 0) + row["copies"]
                continue
            label, name = row["label"], row["split"] or ""
            out["kept"] += row["rows"]
            out["extra_kept"] += row["extra_kept"]
            out["labels"].add(label)
            per_label = out["split_labels"].setdefault(name, {})
            per_label[label] = per_label.get(label, 0) + row["rows"]
            key = f"{name}/{label}"
            out["digests"][key] = (out["digests"].get(key, 0) + row["digest"]) % 2**64
            if draw:
                hist = np.asarray(row["hist"], dtype=np.int64)
                out["histograms"][label] = out["histograms"].get(label, 0) + hist
    out["dropped"] = dict(sorted(out["dropped"].items()))
    return out


def _check_label_map(data: DataConfig) -> None:
    """Class ids index the model's outputs: they must be 0..n-1."""
    if data.label_map:
        ids = sorted(set(data.label_map.values()))
        if ids != list(range(len(ids))):
            raise UserInputError(
                f"data.label_map: ids must be 0..{len(ids) - 1} without gaps (got {ids})"
            )


def _labels(data: DataConfig, seen: set[str]) -> tuple[list[str], dict[str, int]]:
    if data.label_map:
        ids = sorted(set(data.label_map.values()))
        names = ["|".join(k for k, v in sorted(data.label_map.items()) if v == i) for i in ids]
        return names, dict(data.label_map)
    found = sorted(seen)
    if len(found) < 2:
        raise UserInputError(
            f"data.label_column: found {len(found)} label(s) {found}; need at least 2"
        )
    return found, {lab: i for i, lab in enumerate(found)}


def _content_hash(manifest: dict, digests: dict[str, int], data: DataConfig, drawn: bool) -> str:
    """What the shards hold: every kept row (order-independent digest per split/label), the split
    rule when splits are drawn, the labels, the vocabulary or statistics, and the schema."""
    identity = {
        "digests": {k: str(v) for k, v in sorted(digests.items())},
        "split_rule": (
            {"seed": data.seed, "fractions": data.splits.model_dump()} if drawn else "source"
        ),
        "splits": manifest["splits"],
        "labels": manifest["labels"],
        "tokenizer": manifest.get("tokenizer"),
        "vocabulary": manifest.get("vocabulary"),
        "features": manifest.get("features"),
        "schema": manifest["schema"],
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _swap_into_place(tmp: str, out: str) -> None:
    old = None
    if os.path.exists(out):
        old = f"{out.rstrip('/')}.old-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    os.rename(tmp, out)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def _cpus() -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _describe_drops(dropped: dict) -> str:
    return ", ".join(f"{v} {k}" for k, v in sorted(dropped.items())) or "no rows read"


# -- errors --------------------------------------------------------------------------------------
def _input_error(
    exc: Exception, inputs: list[sources.Source], layouts: list[sources.Layout], data: DataConfig
) -> Exception:
    """Turn an error raised inside Ray tasks into a one-line user error naming file and row."""
    chain = [exc]
    while True:
        nxt = chain[-1].__cause__ or getattr(chain[-1], "cause", None)
        if nxt is None or nxt in chain:
            break
        chain.append(nxt)
    if isinstance(exc, UserInputError) and not isinstance(exc, ray.exceptions.RayError):
        return exc  # raised by the driver itself: already one clear line
    for e in reversed(chain):  # the innermost: the original, not Ray's wrapper with a traceback
        if isinstance(e, clean.BadValue):
            for src, layout in zip(inputs, layouts, strict=True):
                if e.path in src.files:
                    column = e.column
                    if column == "label" and not src.field.startswith(EXTRA):
                        column = sources.select_columns(
                            list(layout.names), data.label_column, "data.label_column"
                        )
                    where = sources.locate_value(src, _reading(src, data), layout, column, e.value)
                    if where:
                        return UserInputError(f"{where}: {e.problem}")
            return UserInputError(str(e.args[0]) if e.args else str(e))
        if isinstance(e, UserInputError) and not isinstance(e, ray.exceptions.RayError):
            return UserInputError(str(e))
    for e in chain:
        if isinstance(e, pa.ArrowInvalid | UnicodeDecodeError) or "ArrowInvalid" in str(e):
            for src, layout in zip(inputs, layouts, strict=True):
                where = sources.locate_bad_row(src, _reading(src, data), layout.fmt)
                if where:
                    return UserInputError(where)
            return UserInputError(f"{inputs[0].field}: cannot parse the input: {_first_line(e)}")
    if isinstance(exc, ShipyardError):
        return exc
    inner = chain[-1]  # the original error, not Ray's wrappers around it
    return ShipyardError(f"corpus preparation failed: {type(inner).__name__}: {_first_line(inner)}")


def _first_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def format_summary(manifest: dict) -> str:
    """What `shipyard data prepare` prints: rows read, dropped, deduplicated, per split/label."""
    counts = manifest["counts"]
    lines = [
        f"corpus {manifest['name']}  content {manifest['content_hash'][:12]}",
        f"  read                {counts['read']:>10,}",
    ]
    if "extra_rows" in counts:
        extra = counts["extra_rows"]
        lines.append(f"  of them extra rows  {extra['read']:>10,}  ({extra['kept']:,} kept)")
    for reason, n in sorted(counts["dropped"].items()):
        lines.append(f"  dropped ({reason + ')':<10} {n:>10,}")
    lines.append(f"  exact duplicates    {counts['exact_duplicates']:>10,}")
    if counts["near_duplicates"]:
        lines.append(f"  near duplicates     {counts['near_duplicates']:>10,}")
    lines.append(f"  kept                {counts['kept']:>10,}")
    labels = sorted({lab for s in manifest["splits"].values() for lab in s["labels"]})
    lines.append("  " + f"{'split':<12}{'rows':>10}" + "".join(f"{lab[:12]:>14}" for lab in labels))
    for name, entry in manifest["splits"].items():
        cells = "".join(f"{entry['labels'].get(lab, 0):>14,}" for lab in labels)
        lines.append(f"  {name:<12}{entry['rows']:>10,}{cells}")
    if "vocabulary" in manifest:
        lines.append(f"  vocabulary          {len(manifest['vocabulary']) + 2:>10,} tokens")
    return "\n".join(lines)
