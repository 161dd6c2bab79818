"""`shipyard data prepare`: raw corpus -> cleaned, deduplicated, split, encoded Parquet shards.

The pipeline is Ray Data streaming operators end to end, so it spreads over every node and holds
corpora far larger than memory (the deduplicated corpus sits in Ray's object store, which spills):

    read -> clean (+ key) -> hash-partition by key -> keep one row per key -> [near-dup] ->
    seeded stratified split -> {stats, vocabulary from train} -> encode -> Parquet per split

Output is written to a temporary folder beside the target and renamed into place only when the
manifest is complete, so a failed run never leaves a corpus that looks finished, and an earlier
good corpus stays intact until the new one replaces it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from shipyard.corpus import clean, sources, split, synth
from shipyard.corpus.manifest import FORMAT_VERSION, MANIFEST, PreparedCorpus, write_manifest
from shipyard.errors import ShipyardError, UserInputError
from shipyard.project import DataConfig, Project

TARGET_BLOCK_BYTES = 32 << 20
MAX_CATEGORIES = 1_000


@dataclass
class PrepareResult:
    corpus: PreparedCorpus
    reused: bool

    @property
    def manifest(self) -> dict:
        return self.corpus.manifest


def prepare(
    project: Project, *, force: bool = False, extra_sources: list[str] = ()
) -> PrepareResult:
    """Prepare the project's corpus, or reuse the one on disk when its inputs are unchanged."""
    from shipyard.cluster import connect

    data = project.data
    out = project.corpus_dir
    inputs = _resolve_inputs(project, list(extra_sources))
    files = [f for src in inputs for f in sources.fingerprint(src)]
    fingerprint = _fingerprint(data, files)
    if not force:
        reused = _reuse(out, fingerprint)
        if reused:
            return PrepareResult(reused, reused=True)
    connect(project.cluster.address, num_cpus=project.cluster.num_cpus)
    tmp = f"{out.rstrip('/')}.partial-{uuid.uuid4().hex[:8]}"
    os.makedirs(tmp)
    try:
        manifest = _run(project, inputs, tmp)
        manifest.update(
            format_version=FORMAT_VERSION,
            name=project.name,
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            fingerprint=fingerprint,
            sources=[f.__dict__ for f in files],
            config=data.model_dump(mode="json"),
        )
        write_manifest(tmp, manifest)
        _swap_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return PrepareResult(PreparedCorpus(out, manifest), reused=False)


# -- inputs --------------------------------------------------------------------------------------
def _resolve_inputs(project: Project, extra: list[str]) -> list[sources.Source]:
    data = project.data
    if data.synthetic:
        return [sources.resolve(_synthesize(project), "data.synthetic")]
    if data.source_splits:
        inputs = [
            sources.resolve(project.path(p), f"data.source_splits.{name}", split=name)
            for name, p in data.source_splits.items()
        ]
    else:
        inputs = [sources.resolve(project.path(data.source), "data.source")]
    for i, path in enumerate([*data.extra_sources, *extra]):
        inputs.append(sources.resolve(project.path(path), f"data.extra_sources[{i}]"))
    return inputs


def _synthesize(project: Project) -> str:
    """Generate the synthetic source once per spec; it is an input, kept beside the corpus."""
    spec = project.data.synthetic
    path = project.workdir_path / "raw" / f"synthetic-{project.fingerprint('data')}.parquet"
    if not path.exists():
        synth.write(synth.SynthSpec(**spec.model_dump()), path)
    return str(path)


def _fingerprint(data: DataConfig, files: list[sources.SourceFile]) -> str:
    blob = json.dumps(
        {"config": data.model_dump(mode="json"), "files": [f.sha256 for f in files]},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _reuse(out: str, fingerprint: str) -> PreparedCorpus | None:
    if not os.path.exists(os.path.join(out, MANIFEST)):
        return None
    corpus = PreparedCorpus.load(out)
    return corpus if corpus.manifest.get("fingerprint") == fingerprint else None


# -- the pipeline --------------------------------------------------------------------------------
def _run(project: Project, inputs: list[sources.Source], tmp: str) -> dict:
    data = project.data
    datasets = [sources.read(src, data) for src in inputs]
    opts = _clean_options(data, datasets[0], inputs[0])
    cleaned = []
    for ds, src in zip(datasets, inputs, strict=True):
        if src.field.startswith("data.extra_sources"):  # feedback rows: our own schema
            ds = ds.select_columns([*_feature_columns(opts), opts.label_column, "source"])
        cleaned.append(ds.map_batches(clean.clean_batch, fn_args=(opts,), batch_format="pyarrow"))
    ds = cleaned[0].union(*cleaned[1:]) if len(cleaned) > 1 else cleaned[0]

    has_split = bool(data.source_splits)
    total_bytes = sum(f.bytes for f in (f for src in inputs for f in sources.fingerprint(src)))
    blocks = max(4, total_bytes // TARGET_BLOCK_BYTES)
    try:
        if data.dedup == "none":
            deduped = ds.materialize()
        else:
            deduped = (
                ds.repartition(blocks, keys=["key"])
                .map_batches(
                    clean.dedup_block, fn_args=(has_split,), batch_format="pandas", batch_size=None
                )
                .materialize()
            )
    except Exception as exc:  # parse errors surface here, wrapped by Ray: name the file and row
        raise _input_error(exc, inputs, data) from None

    dropped: dict[str, int] = {}
    read = unique_ok = 0
    for row in deduped.map_batches(_status_counts, batch_format="pyarrow").iter_rows():
        read += row["copies"]
        if row["status"] == clean.OK:
            unique_ok += row["rows"]
        else:
            dropped[row["status"]] = dropped.get(row["status"], 0) + row["copies"]
    kept = deduped.map_batches(_only_ok, batch_format="pyarrow")
    near_removed = 0
    if data.dedup == "near" and data.kind == "text":
        from shipyard.corpus.near_dup import near_duplicate_keys

        drop = near_duplicate_keys(kept, threshold=data.near_dup_threshold, seed=data.seed)
        near_removed = len(drop)
        if drop:
            kept = kept.map_batches(_drop_keys, fn_args=(drop,), batch_format="pyarrow")
    if not has_split:
        drawn = kept.map_batches(split.add_draw, fn_args=(data.seed,), batch_format="pyarrow")
        drawn = drawn.materialize()
        fractions = (data.splits.train, data.splits.validation)
        cuts = split.stratified_cuts(drawn, fractions)
        kept = drawn.map_batches(split.assign, fn_args=(cuts,), batch_format="pyarrow")
    final = kept.materialize()
    del deduped

    stats = _statistics(final)
    if not stats["rows"]:
        raise UserInputError(
            f"{inputs[0].field}: the corpus is empty after cleaning ({_describe_drops(dropped)})"
        )
    labels, label_index = _labels(data, stats)
    manifest: dict = {
        "kind": data.kind,
        "labels": labels,
        "seed": data.seed,
        "counts": {
            "read": read,
            "dropped": dropped,
            "exact_duplicates": read - sum(dropped.values()) - unique_ok,
            "near_duplicates": near_removed,
            "kept": stats["rows"],
        },
        "splits": stats["splits"],
        "extra_sources": [
            f for src in inputs if src.field.startswith("data.extra") for f in src.files
        ],
    }
    train = final.map_batches(split.is_split, fn_args=("train",), batch_format="pyarrow")
    if data.kind == "text":
        from shipyard.corpus import vocab
        from shipyard.corpus.tokenizer import TokenizerSettings

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
        import ray.data

        from shipyard.corpus.encode import EncodeText

        encoded = final.map_batches(
            EncodeText,
            fn_constructor_args=(vocabulary, settings, label_index),
            batch_format="numpy",
            batch_size=4096,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, _cpus())),
        )
    else:
        from shipyard.corpus import vocab

        stats_tab = vocab.tabular_statistics(
            train, list(opts.numeric), list(opts.categorical), MAX_CATEGORIES
        )
        manifest["features"] = stats_tab
        manifest["schema"] = {
            **{c: "float32" for c in opts.numeric},
            **{c: "string" for c in opts.categorical},
            "label": "int32",
        }
        from shipyard.corpus.encode import encode_tabular

        encoded = final.map_batches(
            encode_tabular, fn_args=(stats_tab, label_index), batch_format="pyarrow"
        )
    encoded.write_parquet(tmp, partition_cols=["split"])
    for name in split.SPLITS:
        hive = os.path.join(tmp, f"split={name}")
        if os.path.isdir(hive):
            os.rename(hive, os.path.join(tmp, name))
    manifest["content_hash"] = _content_hash(manifest, stats["digest"])
    return manifest


def _clean_options(data: DataConfig, ds, source: sources.Source) -> clean.CleanOptions:
    try:
        names = ds.schema().names
    except Exception as exc:
        raise _input_error(exc, [source], data) from None
    label = sources.select_columns(names, data.label_column, "data.label_column")
    label_map = tuple(sorted(data.label_map.items())) if data.label_map else None
    if data.kind == "text":
        text = sources.select_columns(names, data.text_column, "data.text_column")
        return clean.CleanOptions(
            kind="text",
            text_column=text,
            label_column=label,
            label_map=label_map,
            lowercase=data.lowercase,
            min_chars=data.min_chars,
            max_chars=data.max_chars,
        )
    wanted = data.feature_columns or [n for n in names if n not in (label, "source", "split")]
    features = [sources.select_columns(names, c, "data.feature_columns") for c in wanted]
    categorical = {
        sources.select_columns(names, c, "data.categorical_columns")
        for c in data.categorical_columns
    }
    schema = ds.schema()
    types = dict(zip(schema.names, schema.types, strict=True))
    for name in features:
        if not _is_numeric(types.get(name)):
            categorical.add(name)
    return clean.CleanOptions(
        kind="tabular",
        text_column=None,
        label_column=label,
        numeric=tuple(f for f in features if f not in categorical),
        categorical=tuple(f for f in features if f in categorical),
        label_map=label_map,
    )


def _is_numeric(t) -> bool:
    return t is not None and (pa.types.is_integer(t) or pa.types.is_floating(t))


def _feature_columns(opts: clean.CleanOptions) -> list[str]:
    return [opts.text_column] if opts.kind == "text" else [*opts.numeric, *opts.categorical]


def _status_counts(batch: pa.Table) -> pa.Table:
    grouped = batch.group_by("status").aggregate([("copies", "sum"), ("copies", "count")])
    return grouped.select(["status", "copies_sum", "copies_count"]).rename_columns(
        ["status", "copies", "rows"]
    )


def _only_ok(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.equal(batch["status"], clean.OK)).drop_columns(["status"])


def _drop_keys(batch: pa.Table, keys: set[str]) -> pa.Table:
    mask = pc.invert(pc.is_in(batch["key"], value_set=pa.array(sorted(keys), pa.string())))
    return batch.filter(mask)


def _statistics(ds) -> dict:
    """Rows and copies per split and label, and an order-independent digest of the content."""
    partial = ds.map_batches(_partial_stats, batch_format="pyarrow")
    splits: dict[str, dict] = {}
    rows = copies = digest = 0
    for row in partial.iter_rows():
        entry = splits.setdefault(row["split"], {"rows": 0, "labels": {}})
        entry["rows"] += row["rows"]
        entry["labels"][row["label"]] = entry["labels"].get(row["label"], 0) + row["rows"]
        rows += row["rows"]
        copies += row["copies"]
        digest = (digest + int(row["digest"])) % 2**64
    for entry in splits.values():
        entry["labels"] = dict(sorted(entry["labels"].items()))
    ordered = {s: splits[s] for s in split.SPLITS if s in splits}
    return {"rows": rows, "copies": copies, "digest": digest, "splits": ordered}


def _partial_stats(batch: pa.Table) -> pa.Table:
    content = [c for c in batch.column_names if c not in ("copies", "source")]
    values = [pc.cast(batch[c], pa.string()).to_pylist() for c in content]
    digests = [
        int.from_bytes(hashlib.blake2b("\x1f".join(map(str, row)).encode(), digest_size=8).digest())
        for row in zip(*values, strict=True)
    ]
    groups: dict[tuple[str, str], list[int]] = {}
    for s, lab, c, d in zip(
        batch["split"].to_pylist(),
        batch["label"].to_pylist(),
        batch["copies"].to_pylist(),
        digests,
        strict=True,
    ):
        g = groups.setdefault((s, lab), [0, 0, 0])
        g[0] += 1
        g[1] += c
        g[2] = (g[2] + d) % 2**64
    keys = list(groups)
    return pa.table(
        {
            "split": [k[0] for k in keys],
            "label": [k[1] for k in keys],
            "rows": [groups[k][0] for k in keys],
            "copies": [groups[k][1] for k in keys],
            "digest": [str(groups[k][2]) for k in keys],
        }
    )


def _labels(data: DataConfig, stats: dict) -> tuple[list[str], dict[str, int]]:
    if data.label_map:
        count = max(data.label_map.values()) + 1
        names = [
            "|".join(k for k, v in sorted(data.label_map.items()) if v == i) for i in range(count)
        ]
        return names, dict(data.label_map)
    seen = sorted({lab for entry in stats["splits"].values() for lab in entry["labels"]})
    if len(seen) < 2:
        raise UserInputError(
            f"data.label_column: found {len(seen)} label(s) {seen}; need at least 2"
        )
    return seen, {lab: i for i, lab in enumerate(seen)}


def _content_hash(manifest: dict, digest: int) -> str:
    identity = {
        "digest": str(digest),
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
    import ray

    return int(ray.cluster_resources().get("CPU", 1))


def _describe_drops(dropped: dict) -> str:
    return ", ".join(f"{v} {k}" for k, v in sorted(dropped.items())) or "no rows read"


def _input_error(exc: Exception, inputs: list[sources.Source], data: DataConfig) -> Exception:
    """Turn an error raised inside Ray tasks into a one-line user error naming file and row."""
    chain = [exc]
    while chain[-1].__cause__ is not None or getattr(chain[-1], "cause", None) is not None:
        nxt = chain[-1].__cause__ or chain[-1].cause
        if nxt in chain:
            break
        chain.append(nxt)
    for e in chain:
        if isinstance(e, UserInputError):
            return UserInputError(str(e))
    for e in chain:
        if isinstance(e, pa.ArrowInvalid | UnicodeDecodeError) or "ArrowInvalid" in str(e):
            for src in inputs:
                where = sources.locate_bad_row(src, data, sources.detect_format(src, data))
                if where:
                    return UserInputError(where)
            return UserInputError(f"{inputs[0].field}: cannot parse the input: {_first_line(e)}")
    return ShipyardError(f"corpus preparation failed: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def format_summary(manifest: dict) -> str:
    """What `shipyard data prepare` prints: rows read, dropped, deduplicated, per split/label."""
    counts = manifest["counts"]
    lines = [
        f"corpus {manifest['name']}  content {manifest['content_hash'][:12]}",
        f"  read                {counts['read']:>10,}",
    ]
    for reason, n in sorted(counts["dropped"].items()):
        lines.append(f"  dropped ({reason + ')':<10} {n:>10,}")
    lines.append(f"  exact duplicates    {counts['exact_duplicates']:>10,}")
    if counts["near_duplicates"]:
        lines.append(f"  near duplicates     {counts['near_duplicates']:>10,}")
    labels = sorted({lab for s in manifest["splits"].values() for lab in s["labels"]})
    lines.append("  " + f"{'split':<12}{'rows':>10}" + "".join(f"{lab[:12]:>14}" for lab in labels))
    for name, entry in manifest["splits"].items():
        cells = "".join(f"{entry['labels'].get(lab, 0):>14,}" for lab in labels)
        lines.append(f"  {name:<12}{entry['rows']:>10,}{cells}")
    if "vocabulary" in manifest:
        lines.append(f"  vocabulary          {len(manifest['vocabulary']) + 2:>10,} tokens")
    return "\n".join(lines)
