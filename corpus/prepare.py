"""`shipyard data prepare`: raw corpus -> cleaned, deduplicated, split, encoded Parquet shards.

This module decides whether to run at all and publishes the result; the work is elsewhere:

    project_inputs    what to read and how to parse and clean each source
    pipeline          the Ray Data stages (clean, dedup, profile, split, encode, write)
    ray_data_context  the Ray Data settings the pipeline runs under
    input_errors      errors from inside Ray tasks -> one line naming file, row and value
    summary           what the command prints

A corpus whose inputs (source hashes, data section, pipeline version) are unchanged is reused.
Output is written to a staging folder beside the target and renamed into place only when the
manifest is complete, so a failed run never leaves a corpus that looks finished, and an earlier
good corpus stays intact until the new one replaces it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

import ray

from shipyard.atomic_dir import staging_path, swap_into_place
from shipyard.corpus import pipeline, sources
from shipyard.corpus.input_errors import input_error
from shipyard.corpus.labels import check_label_map
from shipyard.corpus.manifest import FORMAT_VERSION, MANIFEST, PreparedCorpus, write_manifest
from shipyard.corpus.project_inputs import reading, resolve_inputs
from shipyard.corpus.provenance import Provenance
from shipyard.corpus.ray_data_context import data_context
from shipyard.corpus.summary import format_plan, format_summary
from shipyard.errors import UserInputError
from shipyard.project import DataConfig, Project

__all__ = ["PIPELINE_VERSION", "PrepareResult", "format_summary", "prepare"]

PIPELINE_VERSION = 4  # part of the fingerprint: corpora built by older code are rebuilt


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
    feedback: bool = False,
    provenance: bool = False,
    announce: Callable[[str], None] | None = None,
) -> PrepareResult:
    """Prepare the project's corpus, or reuse the one on disk when its inputs are unchanged.

    `extra_sources`: more labeled rows (Parquet with the source's text and label columns) merged
    into the source before dedup. `feedback`: also merge every feedback batch `shipyard feedback
    export` wrote. `shipyard data prepare`, `train` and `sweep` all pass it, so they agree on the
    inputs: a corpus prepared with feedback is reused by training, never rebuilt without it.
    `provenance`: also record which nodes cleaned and encoded how many rows (one small actor
    call per batch). `announce`: called with one line saying what runs where (nodes, CPUs, the
    sources) once Ray is up, before the work.
    """
    from shipyard.cluster import connect

    data = project.data
    out = project.corpus_dir
    extra = list(extra_sources)
    if feedback:
        # Serving writes the batches; the corpus only lists them (pyarrow, no Ray, no TF).
        from shipyard.serving.feedback_export import feedback_batches

        extra += [path for path in feedback_batches(project) if path not in extra]
    inputs = resolve_inputs(project, extra)
    files = [sources.fingerprint(src) for src in inputs]
    fingerprint = _fingerprint(data, [f for group in files for f in group])
    if not force:
        reused = _reuse(out, fingerprint)
        if reused:
            return PrepareResult(reused, reused=True)
    # Bad files and settings fail here, in the driver, before Ray starts.
    layouts = [sources.inspect(src, reading(src, data)) for src in inputs]
    check_label_map(data)
    connect(project.cluster.address, num_cpus=project.cluster.num_cpus)
    if announce is not None:
        announce(_plan(project.name, inputs, layouts, files))
    recorder = Provenance.remote() if provenance else None
    tmp = staging_path(out)
    os.makedirs(tmp)
    try:
        try:
            with data_context():
                manifest = pipeline.run(project, inputs, layouts, files, tmp, recorder)
        except Exception as exc:
            raise input_error(exc, inputs, layouts, data) from None
        manifest.update(
            format_version=FORMAT_VERSION,
            name=project.name,
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            fingerprint=fingerprint,
            sources=[f.__dict__ for group in files for f in group],
            config=data.model_dump(mode="json"),
        )
        write_manifest(tmp, manifest)
        swap_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    nodes = ray.get(recorder.snapshot.remote()) if recorder else {}
    return PrepareResult(PreparedCorpus(out, manifest), reused=False, provenance=nodes)


def _plan(
    name: str,
    inputs: list[sources.Source],
    layouts: list[sources.Layout],
    files: list[list[sources.SourceFile]],
) -> str:
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    cpus = int(ray.cluster_resources().get("CPU", 0))
    every = [f for group in files for f in group]
    return format_plan(
        name, nodes, cpus, len(every), sum(f.bytes for f in every), _rows(inputs, layouts)
    )


def _rows(inputs: list[sources.Source], layouts: list[sources.Layout]) -> int | None:
    """The sources' row count when their metadata holds it (Parquet), else None: counting the
    lines of a text file would read it all before the work starts."""
    if any(layout.fmt != "parquet" for layout in layouts):
        return None
    import pyarrow.parquet as pq

    try:
        return sum(
            pq.ParquetFile(src.filesystem.open_input_file(path)).metadata.num_rows
            for src in inputs
            for path in src.files
        )
    except (OSError, ValueError):  # pyarrow.lib.ArrowInvalid is a ValueError
        return None


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
