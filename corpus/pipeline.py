"""The Ray Data pipeline behind `prepare`, stage by stage, writing shards into a staging folder.

    read line ranges -> clean (+ key, draw, row hash) -> bucket by key -> keep one row per key
    -> [near-dup] -> profile (counts, split histograms, content digest) -> split cuts ->
    vocabulary or statistics from train -> encode + split -> Parquet per split

Streaming operators end to end, so it spreads over every node and holds corpora far larger than
memory (nothing is materialized: exact dedup partitions rows into buckets on disk, see `dedup.py`,
and the later passes stream the deduplicated Parquet back). Only small aggregates reach the
driver. Returns the manifest, less what `prepare` adds about the run itself.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time

import pyarrow as pa

from shipyard.corpus import clean, dedup, sources, split
from shipyard.corpus.content_hash import content_hash
from shipyard.corpus.deduped_rows import DedupedRows, drop_keys
from shipyard.corpus.fit_encoder import fit_tabular_encoder, fit_text_encoder
from shipyard.corpus.labels import class_labels
from shipyard.corpus.memory import release_memory
from shipyard.corpus.profile import PROFILE_COLUMNS, describe_drops, profile_of
from shipyard.corpus.project_inputs import clean_options, extra_options, is_extra, reading
from shipyard.corpus.provenance import record
from shipyard.corpus.ray_data_context import cluster_cpus
from shipyard.errors import UserInputError
from shipyard.project import Project

log = logging.getLogger("shipyard.corpus.prepare")


def run(
    project: Project,
    inputs: list[sources.Source],
    layouts: list[sources.Layout],
    files: list[list[sources.SourceFile]],
    tmp: str,
    recorder,
) -> dict:
    data = project.data
    cpus = cluster_cpus()
    clock = _Clock()
    opts = clean_options(data, layouts[0], has_split=bool(data.source_splits))
    work_dir = os.path.join(tmp, ".work")  # intermediate Parquet, removed before the rename
    deduped = _clean_and_dedup(data, inputs, layouts, files, opts, cpus, recorder, work_dir)
    clock.lap("read, clean, dedup")
    profile = profile_of(deduped.read(*PROFILE_COLUMNS), opts.draw)
    clock.lap("profile")
    kept = deduped.usable()
    near_removed = 0
    if data.dedup == "near" and data.kind == "text":
        from shipyard.corpus.near_dup import near_duplicate_keys

        drop = near_duplicate_keys(kept, threshold=data.near_dup_threshold, seed=data.seed)
        near_removed = len(drop)
        if drop:
            kept = kept.map_batches(drop_keys, fn_args=(drop,), batch_format="pyarrow")
            kept.set_name("near-dup")
            kept = kept.materialize()
            deduped = DedupedRows(kept)
            first, profile = profile, profile_of(kept, opts.draw)
            profile.update(read=first["read"], dropped=first["dropped"])
        clock.lap("near-dup")
    if not profile["kept"]:
        names = ", ".join(src.files[0] for src in inputs if not is_extra(src))
        raise UserInputError(
            f"{names}: the corpus is empty after cleaning ({describe_drops(profile['dropped'])})"
        )
    labels, label_index = class_labels(data, profile["labels"])
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
        if is_extra(src)
    ]
    if extras:  # feedback is small: counting its rows again costs little
        manifest["extra_sources"] = [
            {**f.__dict__, "field": src.field} for src, _, group in extras for f in group
        ]
        extra_rows = [
            sources.read(src, reading(src, data), layout, cpus) for src, layout, _ in extras
        ]
        for ds in extra_rows:
            ds.set_name("count-extra-rows")
        read = sum(ds.count() for ds in extra_rows)
        manifest["counts"]["extra_rows"] = {
            "read": read,
            "kept": profile["extra_kept"],
            # feedback whose text (or row) the source also has, with another label
            "contradicting": profile["contradicts"],
        }

    needed = ["text"] if data.kind == "text" else [*opts.numeric, *opts.categorical]
    train = deduped.usable("label", "u", "split", *needed).map_batches(
        split.is_split, fn_args=("train", cuts), batch_format="pyarrow"
    )
    if data.kind == "text":
        fn, args, batch_size = fit_text_encoder(data, train, label_index, cuts, manifest)
        clock.lap("vocabulary")
    else:
        fn, args, batch_size = fit_tabular_encoder(opts, train, label_index, cuts, manifest)
        clock.lap("statistics")
    encoded = kept.map_batches(
        _encode_stage, fn_args=(fn, args, recorder), batch_format="pyarrow", batch_size=batch_size
    )
    encoded.set_name("encode+write")
    encoded.write_parquet(tmp, partition_cols=["split"])
    clock.lap("encode, write")
    for name in split.SPLITS:
        hive = os.path.join(tmp, f"split={name}")
        if os.path.isdir(hive):
            os.rename(hive, os.path.join(tmp, name))
    manifest["content_hash"] = content_hash(manifest, profile["digests"], data, opts.draw)
    shutil.rmtree(work_dir, ignore_errors=True)
    return manifest


def _clean_and_dedup(data, inputs, layouts, files, opts, cpus, recorder, work_dir) -> DedupedRows:
    """Every source read and cleaned, unioned, and one row kept per key, written to Parquet under
    `work_dir` (later stages read it several times, each only the columns it needs)."""
    has_split = bool(data.source_splits)
    extras = [is_extra(src) for src in inputs]
    cleaned = []
    for src, layout, extra in zip(inputs, layouts, extras, strict=True):
        o = extra_options(opts, layout, src, has_split) if extra else opts
        if any(extras):
            o = dataclasses.replace(o, extra=extra)
        ds = sources.read(src, reading(src, data), layout, cpus)
        cleaned.append(ds.map_batches(_clean_stage, fn_args=(o, recorder), batch_format="pyarrow"))
    ds = cleaned[0].union(*cleaned[1:]) if len(cleaned) > 1 else cleaned[0]
    ds.set_name("read+clean")  # what its progress bar says
    if data.dedup == "none":
        return DedupedRows(dedup.persist(ds, work_dir))
    total_bytes = sum(f.bytes for group in files for f in group)
    return DedupedRows(dedup.exact(ds, work_dir, dedup.bucket_count(total_bytes, cpus), has_split))


def _clean_stage(batch: pa.Table, opts: clean.CleanOptions, recorder) -> pa.Table:
    out = clean.clean_batch(batch, opts)
    record(recorder, "clean", batch.num_rows)
    release_memory()
    return out


def _encode_stage(batch: pa.Table, fn, args: tuple, recorder) -> pa.Table:
    out = fn(batch, *args)
    record(recorder, "encode", batch.num_rows)
    release_memory()
    return out


class _Clock:
    """Seconds per phase, logged at debug level (`logging.getLogger("shipyard.corpus")`)."""

    def __init__(self):
        self.last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        log.debug("prepare: %-20s %6.2f s", phase, now - self.last)
        self.last = now
