"""The chain behind a registered version: corpus sources, feedback, run, sweep, metrics, serving.

Everything is read, nothing recomputed: the version's tags and its run's params, tags and metrics
from the registry, the corpus manifest the version points to (or, when that file is gone or has
been rebuilt since, the copy the run logged), the sweep's parent run when a sweep promoted the
version, and the serving marker `<workdir>/serve.json`. Ray is never started: a running service
is asked over its own HTTP API (`GET /v1/model`), with a short timeout.

A link the chain cannot read (a deleted manifest, a deleted run) is reported as missing, with the
reason, and the rest of the chain is still shown.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import os
import tempfile
import textwrap
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

from shipyard.errors import first_line
from shipyard.project import Project
from shipyard.temporary_env import temporary_env
from shipyard.training.mlflow_store import client
from shipyard.training.model_versions import CHAMPION, RegisteredVersion, resolve

DEFAULT_REF = f"@{CHAMPION}"
MANIFEST_ARTIFACT = "corpus/manifest.json"  # the copy `run_logging.log_run` logs with the run
SERVICE_TIMEOUT_S = 2.0
# Run params that say how the run was spread over the cluster.
SCALING_PARAMS = ("training.workers", "training.cpus_per_worker", "training.use_gpu")
KEY_METRICS = (  # shown first, in this order, when the run has them
    "val_accuracy",
    "test_accuracy",
    "test_f1",
    "val_loss",
    "latency_ms",
)


# -- the chain -----------------------------------------------------------------------------------
@dataclass
class SourceEntry:
    path: str
    sha256: str
    bytes: int | None = None
    field: str | None = None  # extra rows only: the config field that named them
    feedback: bool = False  # extra rows only: a batch `shipyard feedback export` wrote


@dataclass
class CorpusLink:
    content_hash: str | None  # what the version records (tag `corpus_content_hash`)
    manifest_path: str | None  # what the version points to (tag `corpus_manifest`)
    # Where the manifest shown was read: "manifest" (the file the version points to), "run copy"
    # (the copy logged with the run: the file is gone or holds another corpus now), or None.
    read_from: str | None = None
    # The file the version points to: "ok", "missing", "unreadable (...)", "rebuilt since (...)"
    # or "not recorded"; and, when it was not usable, the run's copy: "ok" or "missing (...)".
    manifest_state: str = "not recorded"
    run_copy_state: str | None = None
    manifest_content_hash: str | None = None
    name: str | None = None
    created_at: str | None = None
    splits: dict[str, int] = field(default_factory=dict)
    sources: list[SourceEntry] = field(default_factory=list)
    # Merged extra rows (feedback batches among them); None: the manifest records none.
    extra_sources: list[SourceEntry] | None = None
    extra_rows: dict[str, int] | None = None  # {"read": n, "kept": n}

    @property
    def feedback(self) -> list[SourceEntry] | None:
        if self.extra_sources is None:
            return None
        return [s for s in self.extra_sources if s.feedback]


@dataclass
class RunLink:
    run_id: str | None
    name: str | None = None
    status: str | None = None
    started: str | None = None
    source_commit: str | None = None
    source_dirty: str | None = None  # "true", "false" or "unknown", as tagged
    workers: int | None = None
    cpus_per_worker: float | None = None
    use_gpu: bool | None = None
    nodes: list[str] | None = None  # the Ray node id of each rank (tag `worker_nodes`)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)  # the run's own tags (mlflow.* dropped)
    missing: str | None = None  # why the run could not be read


@dataclass
class SweepLink:
    name: str | None
    parent_run_id: str
    trial_id: str | None = None
    trial_run_id: str | None = None
    trial_state: str | None = None
    trial_values: dict[str, str] = field(default_factory=dict)
    search: str | None = None
    scheduler: str | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class ServedArm:
    role: str  # champion or challenger
    percent: float  # its share of traffic
    variant: str


@dataclass
class ServingLink:
    # "served", "not served", "not reachable" or "stale marker".
    state: str
    summary: str
    marker: str
    app: str | None = None
    url: str | None = None
    pid: int | None = None
    arms: list[ServedArm] = field(default_factory=list)  # arms that serve this version


@dataclass
class Lineage:
    name: str
    version: int
    uri: str
    aliases: list[str]
    created: str | None
    tracking_uri: str
    export_source: str
    tags: dict[str, str]
    corpus: CorpusLink
    run: RunLink
    sweep: SweepLink | None
    metrics: dict[str, float]
    serving: ServingLink

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["corpus"]["feedback"] = (
            None
            if self.corpus.feedback is None
            else [asdict(s) for s in self.corpus.feedback]  # the batches, also in extra_sources
        )
        return out


def lineage(project: Project, ref: str = DEFAULT_REF) -> Lineage:
    """The chain behind the version `ref` names (resolved like `model_versions.resolve`; an
    unknown reference is a `UserInputError`)."""
    version = resolve(project, ref)
    mlc = client(project)
    aliases = mlc.get_registered_model(version.name).aliases or {}
    version.aliases = sorted(a for a, n in aliases.items() if int(n) == version.version)
    run, data = _run(mlc, version)
    return Lineage(
        name=version.name,
        version=version.version,
        uri=version.uri,
        aliases=version.aliases,
        created=_time(version.created_ms),
        tracking_uri=version.tracking_uri,
        export_source=version.source,
        tags=dict(version.tags),
        corpus=corpus_of(mlc, version),
        run=run,
        sweep=_sweep(mlc, data) if data is not None else None,
        metrics=dict(data.data.metrics) if data is not None else {},
        serving=_serving(project, version),
    )


# -- reading each link ---------------------------------------------------------------------------
def _run(mlc, version: RegisteredVersion):
    from mlflow.exceptions import MlflowException

    if not version.run_id:
        return RunLink(None, missing="the version records no run"), None
    try:
        found = mlc.get_run(version.run_id)
    except MlflowException as exc:
        return RunLink(version.run_id, missing=f"not in the registry ({first_line(exc)})"), None
    params, tags = dict(found.data.params), dict(found.data.tags)
    link = RunLink(
        run_id=version.run_id,
        name=found.info.run_name,
        status=found.info.status,
        started=_time(found.info.start_time),
        source_commit=tags.get("source_commit", tags.get("mlflow.source.git.commit")),
        source_dirty=tags.get("source_dirty"),
        workers=_int(params.get("training.workers")),
        cpus_per_worker=_float(params.get("training.cpus_per_worker")),
        use_gpu=_bool(params.get("training.use_gpu")),
        nodes=_nodes(tags.get("worker_nodes")),
        params=dict(sorted(params.items())),
        tags={k: v for k, v in sorted(tags.items()) if not k.startswith("mlflow.")},
    )
    return link, found


def corpus_of(mlc, version: RegisteredVersion) -> CorpusLink:
    """The corpus a version was trained on, as its manifest (or the run's copy of it) records
    it; `retrain` reads it too, to tell which feedback batches the version already learned from."""
    tags = version.tags
    link = CorpusLink(tags.get("corpus_content_hash"), tags.get("corpus_manifest"))
    manifest = None
    if link.manifest_path:
        manifest, problem = _read_json(link.manifest_path)
        link.manifest_state = problem or "ok"
        if manifest is not None and link.content_hash:
            now = manifest.get("content_hash")
            if now != link.content_hash:  # the corpus folder holds a newer corpus now
                link.manifest_state = f"rebuilt since (it now holds content {str(now)[:12]})"
                manifest = None
        if manifest is not None:
            link.read_from = "manifest"
    if manifest is None and version.run_id:
        manifest, problem = _logged_manifest(mlc, version.run_id)
        link.run_copy_state = problem or "ok"
        if manifest is not None:
            link.read_from = "run copy"
    if manifest is None:
        return link
    link.manifest_content_hash = manifest.get("content_hash")
    link.name = manifest.get("name")
    link.created_at = manifest.get("created_at")
    link.splits = {k: int(v.get("rows", 0)) for k, v in (manifest.get("splits") or {}).items()}
    extras = manifest.get("extra_sources")
    merged = {(e.get("path"), e.get("sha256")) for e in extras or []}
    link.sources = [  # `sources` lists every file read, the extra rows' too: those go below
        _entry(s)
        for s in manifest.get("sources") or []
        if (s.get("path"), s.get("sha256")) not in merged
    ]
    if extras is not None:
        link.extra_sources = [_entry(s, extra=True) for s in extras]
        extra = (manifest.get("counts") or {}).get("extra_rows")
        link.extra_rows = dict(extra) if isinstance(extra, dict) else None
    return link


def _entry(raw: dict, extra: bool = False) -> SourceEntry:
    from shipyard.serving.feedback_export import BATCH_GLOB

    path = str(raw.get("path", "?"))
    return SourceEntry(
        path=path,
        sha256=str(raw.get("sha256", "?")),
        bytes=_int(raw.get("bytes")),
        field=raw.get("field") if extra else None,
        feedback=extra and fnmatch.fnmatch(os.path.basename(path), BATCH_GLOB),
    )


def _read_json(path: str) -> tuple[dict | None, str | None]:
    import pyarrow.fs as pafs

    try:
        if "://" in path:
            fs, inner = pafs.FileSystem.from_uri(path)
            with fs.open_input_stream(inner) as f:
                return json.loads(f.read()), None
        with open(path, encoding="utf-8") as f:
            return json.load(f), None
    except FileNotFoundError:
        return None, "missing"
    except (OSError, ValueError) as exc:
        return None, f"unreadable ({first_line(exc)})"


def _logged_manifest(mlc, run_id: str) -> tuple[dict | None, str | None]:
    """The manifest logged with the run: read in place from a local artifact store, downloaded
    (quietly) from any other."""
    from shipyard.training.model_versions import _local

    try:
        root = _local(mlc.get_run(run_id).info.artifact_uri)
        if root:
            return _read_json(os.path.join(root, MANIFEST_ARTIFACT))
        with (
            temporary_env("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"),
            tempfile.TemporaryDirectory(prefix="lineage-") as tmp,
        ):
            return _read_json(mlc.download_artifacts(run_id, MANIFEST_ARTIFACT, tmp))
    except Exception as exc:  # MLflow raises OSError or MlflowException for an absent artifact
        return None, f"missing ({first_line(exc)})"


def _sweep(mlc, run) -> SweepLink | None:
    """The sweep that promoted the version: its run's parent, when that is a sweep's run."""
    from mlflow.exceptions import MlflowException

    parent_id = run.data.tags.get("mlflow.parentRunId")
    if not parent_id:
        return None
    try:
        parent = mlc.get_run(parent_id)
    except MlflowException as exc:
        link = SweepLink(None, parent_id)
        link.problems.append(f"parent run {parent_id} not in the registry ({first_line(exc)})")
        return link
    if parent.data.tags.get("shipyard.kind") != "sweep":
        return None
    params = parent.data.params
    link = SweepLink(
        name=parent.info.run_name,
        parent_run_id=parent_id,
        trial_id=parent.data.tags.get("best_trial"),
        search=params.get("tuning.search"),
        scheduler=params.get("tuning.scheduler"),
    )
    if not link.trial_id:  # promoted runs are named <sweep>-<trial id>
        prefix = f"{link.name}-"
        if run.info.run_name and run.info.run_name.startswith(prefix):
            link.trial_id = run.info.run_name.removeprefix(prefix)
    if link.trial_id:
        try:
            children = mlc.search_runs(
                [parent.info.experiment_id],
                f"tags.`mlflow.parentRunId` = '{parent_id}'"
                f" and tags.`shipyard.trial_id` = '{link.trial_id}'",
                max_results=1,
            )
        except MlflowException as exc:
            children = []
            link.problems.append(f"trial run: {first_line(exc)}")
        if children:
            child = children[0]
            link.trial_run_id = child.info.run_id
            link.trial_state = child.data.tags.get("state")
            link.trial_values = dict(sorted(child.data.params.items()))
        else:
            link.problems.append(f"no trial run for {link.trial_id} under the sweep's run")
    return link


def _serving(project: Project, version: RegisteredVersion) -> ServingLink:
    """Read the serving marker; when there is one, ask the service itself which arms it serves
    (HTTP, short timeout: Ray is not started here)."""
    from shipyard.serving.deploy import PID_FILE

    marker = project.workdir_path / PID_FILE
    if not marker.is_file():
        return ServingLink("not served", f"not served (no {PID_FILE})", str(marker))
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return ServingLink("stale marker", f"{marker} unreadable ({first_line(exc)})", str(marker))
    link = ServingLink(
        "not reachable",
        "",
        str(marker),
        app=info.get("app"),
        url=info.get("url"),
        pid=_int(info.get("pid")),
    )
    if link.pid is not None and not _alive(link.pid):
        link.state = "stale marker"
        link.summary = f"not served (stale {PID_FILE}: process {link.pid} has exited)"
        return link
    if not link.url:
        link.summary = f"{PID_FILE} names no URL"
        return link
    try:
        with urllib.request.urlopen(
            f"{link.url.rstrip('/')}/v1/model", timeout=SERVICE_TIMEOUT_S
        ) as response:
            service = json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError) as exc:
        link.summary = f"app {link.app!r} at {link.url} did not answer ({first_line(exc)})"
        return link
    percent = float(service.get("challenger_percent") or 0.0)
    for role in ("champion", "challenger"):
        arm = service.get(role)
        if arm and arm.get("name") == version.name and arm.get("version") == version.version:
            share = percent if role == "challenger" else 100.0 - percent
            link.arms.append(ServedArm(role, share, str(arm.get("variant", "full"))))
    if link.arms:
        link.state = "served"
        arms = ", ".join(f"{a.role} ({a.percent:g}% of traffic)" for a in link.arms)
        link.summary = f"app {link.app!r} at {link.url} as {arms}"
    else:
        link.state = "not served"
        others = ", ".join(
            f"{role} models:/{a['name']}/{a['version']}"
            for role in ("champion", "challenger")
            if (a := service.get(role))
        )
        link.summary = f"not served: app {link.app!r} at {link.url} serves {others}"
    return link


# -- the text ------------------------------------------------------------------------------------
def format_lineage(lin: Lineage) -> str:
    """Short aligned sections: the version, its corpus, run, sweep, metrics and service."""
    out = [f"{lin.uri}  ({lin.tracking_uri})"]
    out += _rows(
        [
            ("aliases", ", ".join(lin.aliases) or "-"),
            ("created", lin.created or "?"),
            ("export", lin.export_source),
        ]
    )

    c = lin.corpus
    out += ["", "corpus"]
    rows = [("content", c.content_hash or "not recorded")]
    made = f" ({c.name}, {c.created_at})" if c.name else ""
    if c.read_from == "manifest":
        rows.append(("manifest", f"{c.manifest_path}{made}"))
    else:
        rows.append(("manifest", f"{c.manifest_path or '(not recorded)'}: {c.manifest_state}"))
        if c.read_from == "run copy":
            rows.append(("", f"shown instead: the copy logged with the run{made}"))
        elif c.run_copy_state:
            rows.append(("", f"the copy logged with the run: {c.run_copy_state}"))
    if c.read_from and c.manifest_content_hash != c.content_hash:
        rows.append(("", f"! the manifest's own content hash is {c.manifest_content_hash}"))
    if c.read_from:
        rows.append(("splits", "  ".join(f"{k} {v:,}" for k, v in c.splits.items()) or "-"))
    out += _rows(rows)
    if c.read_from:
        out += _files("sources", c.sources, "none recorded")
        if c.extra_sources is None:
            out += _rows([("feedback", "none recorded")])
        else:
            counts = ""
            if c.extra_rows:
                counts = (
                    f" ({c.extra_rows.get('read', 0):,} rows read,"
                    f" {c.extra_rows.get('kept', 0):,} kept)"
                )
            feedback = c.feedback or []
            other = [s for s in c.extra_sources if not s.feedback]
            out += _files("feedback", feedback, "none merged")
            if other:
                out += _files("extra rows", other, "")
            if counts:
                out.append(f"  {'':<11} merged extra rows{counts}")

    r = lin.run
    out += ["", "training run"]
    if r.missing:
        out += _rows([("run", f"{r.run_id or '?'}: missing ({r.missing})")])
    else:
        dirty = {"true": " (uncommitted changes)", "unknown": " (uncommitted changes: unknown)"}
        scale = f"{r.workers if r.workers is not None else '?'} worker{'s' * (r.workers != 1)}"
        if r.cpus_per_worker is not None:
            scale += f" × {r.cpus_per_worker:g} CPU"
        if r.use_gpu:
            scale += " + GPU"
        if r.workers != 1 and (r.cpus_per_worker is not None or r.use_gpu):
            scale += " each"
        placement = r.params.get("training.placement_strategy")
        if placement:
            scale += f", {placement}"
        out += _rows(
            [
                ("run", f"{r.run_id}  {r.name or ''} ({r.status}, {r.started or '?'})"),
                ("commit", f"{r.source_commit or 'not recorded'}{dirty.get(r.source_dirty, '')}"),
                ("workers", scale),
                ("nodes", _describe_nodes(r.nodes)),
                ("checkpoint", _checkpoint(r.tags)),
            ]
        )
        for section in ("model", "training"):
            items = [
                f"{k.removeprefix(section + '.')}={v}"
                for k, v in r.params.items()
                if k.startswith(section + ".") and k not in SCALING_PARAMS
            ]
            out += _wrapped(section, items)

    out += ["", "sweep"]
    s = lin.sweep
    if s is None:
        out.append("  none (not promoted by a sweep)")
    else:
        how = ", ".join(x for x in (s.search, s.scheduler) if x)
        out += _rows(
            [
                ("sweep", f"{s.name or '?'}  run {s.parent_run_id}" + (f" ({how})" if how else "")),
                (
                    "trial",
                    f"{s.trial_id or '?'}"
                    + (f"  run {s.trial_run_id}" if s.trial_run_id else "")
                    + (f" ({s.trial_state})" if s.trial_state else ""),
                ),
            ]
        )
        out += _wrapped("values", [f"{k}={v}" for k, v in s.trial_values.items()])
        out += [f"  {'!':<11} {p}" for p in s.problems]

    out += ["", "metrics"]
    if not lin.metrics:
        out.append("  none (the run is missing)" if r.missing else "  none logged")
    else:
        key = [k for k in KEY_METRICS if k in lin.metrics]
        out += _rows([(k, _number(lin.metrics[k])) for k in key], max(11, *map(len, key)))
        rest = [f"{k}={_number(v)}" for k, v in sorted(lin.metrics.items()) if k not in key]
        out += _wrapped("others", rest)

    out += ["", "serving"]
    out += _rows([("now", lin.serving.summary)])
    return "\n".join(out)


def _nodes(tag: str | None) -> list[str] | None:
    try:
        nodes = json.loads(tag) if tag else None
    except ValueError:
        return None
    return [str(n) for n in nodes] if isinstance(nodes, list) else None


def _describe_nodes(nodes: list[str] | None) -> str:
    """ "2 nodes: 3f9a1c2b0d4e (ranks 0, 2), 77b0e1aa9c3d (ranks 1, 3)"."""
    if not nodes:
        return "not recorded by the run"
    ranks: dict[str, list[int]] = {}
    for rank, node in enumerate(nodes):
        ranks.setdefault(node, []).append(rank)
    parts = [
        f"{node[:12]} (rank{'s' * (len(r) > 1)} {', '.join(map(str, r))})"
        for node, r in ranks.items()
    ]
    return f"{len(ranks)} node{'s' * (len(ranks) != 1)}: {', '.join(parts)}"


def _rows(rows: list[tuple[str, str]], width: int = 11) -> list[str]:
    return [f"  {k:<{width}} {v}".rstrip() for k, v in rows]


def _files(label: str, files: list[SourceEntry], empty: str) -> list[str]:
    if not files:
        return _rows([(label, empty)]) if empty else []
    size = max(len(f"{f.bytes:,}") if f.bytes is not None else 1 for f in files)
    lines = []
    for i, f in enumerate(files):
        shown = f"{f.bytes:,}" if f.bytes is not None else "?"
        lines.append(f"  {label if i == 0 else '':<11} {f.sha256}  {shown:>{size}} B  {f.path}")
    return lines


def _wrapped(label: str, items: list[str], width: int = 100) -> list[str]:
    if not items:
        return []
    lines = textwrap.wrap("  ".join(items), width - 14, break_on_hyphens=False) or [""]
    return [f"  {label if i == 0 else '':<11} {line}" for i, line in enumerate(lines)]


def _checkpoint(tags: dict[str, str]) -> str:
    epoch, best = tags.get("checkpoint_epoch"), tags.get("best_epoch")
    shown = f"epoch {epoch}" if epoch else "not recorded"
    if best:
        shown += f" (best epoch {best})"
    return shown + (f"  {tags['checkpoint']}" if tags.get("checkpoint") else "")


def _number(value: float) -> str:
    if float(value).is_integer() and abs(value) >= 2:  # counts and sizes; 1.0 stays a rate
        return f"{int(value):,}"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"


def _time(ms: int | None) -> str | None:
    if not ms:
        return None
    return dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def _int(value) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _float(value) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _bool(value) -> bool | None:
    return {"True": True, "true": True, "False": False, "false": False}.get(str(value))
