"""Registered model versions: registering one, resolving a reference, aliases and promotion.

Aliases name the versions that serving and rollouts follow (`champion`, `challenger`). Policy: the
first version registered for a model becomes `champion`; after that an alias moves only when
someone moves it (`shipyard promote`), never as a side effect of training.

References (`resolve`): `models:/name@alias`, `models:/name/3`, `name@alias`, `name/3`, `name:3`,
and for the project's own model `@alias`, `alias`, `3`, or its bare name (the newest version).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from shipyard.errors import ShipyardError, UserInputError, first_line
from shipyard.project import Project
from shipyard.training.mlflow_store import client, tracking_uri

if TYPE_CHECKING:
    from shipyard.training.run_logging import LoggedRun

CHAMPION = "champion"
CHALLENGER = "challenger"  # what a sweep or a retrain that beat the champion is aliased
ALIASES = (CHAMPION, CHALLENGER)
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


@dataclass
class RegisteredVersion:
    name: str
    version: int
    run_id: str | None
    source: str  # artifact URI of the export folder
    tags: dict = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)
    tracking_uri: str = ""
    created_ms: int | None = None  # creation time, milliseconds since the epoch

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def local_path(self) -> str | None:
        """The export folder on this machine, when the artifact store is a local folder."""
        return _local(self.source)


# -- registering ---------------------------------------------------------------------------------
def register_version(project: Project, run: LoggedRun, description: str = "") -> RegisteredVersion:
    """A new version of the project's registered model from a logged run's export, tagged with
    its lineage; the model's first version also becomes `champion`."""
    from mlflow.exceptions import MlflowException

    name = project.registered_model_name
    mlc = client(project)
    try:
        mlc.create_registered_model(name, description=f"shipyard project {project.name}")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    created = mlc.create_model_version(
        name, run.model_source, run_id=run.run_id, tags=run.tags, description=description
    )
    version = _version(created, tracking_uri(project))
    if CHAMPION not in (mlc.get_registered_model(name).aliases or {}):
        mlc.set_registered_model_alias(name, CHAMPION, str(version.version))
        version.aliases = [CHAMPION]
    return version


# -- reading -------------------------------------------------------------------------------------
def list_versions(project: Project, name: str | None = None) -> list[RegisteredVersion]:
    """Every version of a registered model (the project's by default), oldest first, with their
    aliases; empty when the model has none."""
    name = name or project.registered_model_name
    mlc = client(project)
    found = mlc.search_model_versions(f"name = '{_quote(name)}'")
    versions = [_version(v, tracking_uri(project)) for v in found]
    if versions:  # search results leave `aliases` empty; the registered model has them
        aliases = mlc.get_registered_model(name).aliases or {}
        for v in versions:
            v.aliases = sorted(a for a, n in aliases.items() if int(n) == v.version)
    return sorted(versions, key=lambda v: v.version)


def get_alias(project: Project, alias: str, name: str | None = None) -> RegisteredVersion:
    from mlflow.exceptions import MlflowException

    name = name or project.registered_model_name
    try:
        found = client(project).get_model_version_by_alias(name, alias)
    except MlflowException:
        raise UserInputError(f"model {name!r} has no version with alias {alias!r}") from None
    version = _version(found, tracking_uri(project))
    version.aliases = sorted({*version.aliases, alias})
    return version


def champion_or_none(project: Project, name: str | None = None) -> RegisteredVersion | None:
    """The version aliased `champion`, or None when the model has no versions or no champion."""
    if not list_versions(project, name):
        return None
    try:
        return get_alias(project, CHAMPION, name)
    except UserInputError:
        return None


def get_version(project: Project, version: int | str, name: str | None = None):
    from mlflow.exceptions import MlflowException

    name = name or project.registered_model_name
    try:
        found = client(project).get_model_version(name, str(version))
    except MlflowException:
        raise UserInputError(f"model {name!r} has no version {version}") from None
    return _version(found, tracking_uri(project))


def parse_ref(ref: str, own: str) -> tuple[str, int | str | None]:
    """(model name, version number, alias, or None for the newest version)."""
    body = ref.strip().removeprefix("models:/")
    if "@" in body:
        name, alias = body.rsplit("@", 1)
        if not alias:
            raise UserInputError(f"{ref!r}: expected name@ALIAS")
        return name or own, alias
    cut = max(body.rfind("/"), body.rfind(":"))
    if cut >= 0:
        name, number = body[:cut], body[cut + 1 :]
        if not number.isdigit() or not name:
            raise UserInputError(f"{ref!r}: expected NAME/VERSION or NAME:VERSION with a number")
        return name, int(number)
    if body.isdigit():
        return own, int(body)
    if body in (own, ""):
        return own, None
    return own, body


def resolve(project: Project, ref: str) -> RegisteredVersion:
    """The registered version a reference names (see the module docstring for the forms)."""
    name, which = parse_ref(ref, project.registered_model_name)
    if isinstance(which, int):
        return get_version(project, which, name)
    if isinstance(which, str):
        return get_alias(project, which, name)
    versions = list_versions(project, name)
    if not versions:
        raise UserInputError(f"model {name!r} has no registered versions")
    return versions[-1]


def artifact_path(project: Project, ref: str | RegisteredVersion) -> str:
    """The export folder of a registered version on this machine (downloaded when remote)."""
    version = ref if isinstance(ref, RegisteredVersion) else resolve(project, ref)
    local = version.local_path
    if local and os.path.isdir(local):
        return local
    return fetch_export(version, project.workdir_path / "model_cache")


def fetch_export(version: RegisteredVersion, cache: str | os.PathLike) -> str:
    """Download a version's export from the registry's artifact store into `cache` (once).

    What a process on another node does (a serving replica): it needs the artifact store's URI,
    not the registry's database."""
    import mlflow.artifacts

    # Keyed by the artifact URI too: another registry's version 1 of the same name is another model.
    where = hashlib.sha256(version.source.encode()).hexdigest()[:12]
    folder = os.path.join(os.fspath(cache), version.name, f"{version.version}-{where}")
    done = os.path.join(folder, ".complete")
    if os.path.isfile(done):
        return os.path.join(folder, "export")
    os.makedirs(folder, exist_ok=True)
    # Each process downloads into its own folder: replicas starting together on a node race.
    scratch = tempfile.mkdtemp(prefix="download-", dir=folder)
    try:
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=version.source, dst_path=scratch, tracking_uri=version.tracking_uri
        )
    except Exception as exc:
        raise ShipyardError(
            f"cannot fetch {version.uri} from {version.source}: {first_line(exc)}"
        ) from None
    with contextlib.suppress(OSError):  # another process finished first: its copy is the same
        os.replace(path, os.path.join(folder, "export"))
    shutil.rmtree(scratch, ignore_errors=True)
    open(done, "w").close()
    return os.path.join(folder, "export")


# -- aliases -------------------------------------------------------------------------------------
@dataclass
class Promotion:
    name: str
    alias: str
    version: int
    previous: int | None  # the version the alias named before (None: it named none)

    def describe(self) -> str:
        if self.previous == self.version:
            return f"{self.name}@{self.alias} is already version {self.version}"
        before = f"version {self.previous}" if self.previous is not None else "no version"
        return f"{self.name}@{self.alias}: {before} -> version {self.version}"


def set_alias(project: Project, alias: str, version: int | str, name: str | None = None) -> None:
    name = name or project.registered_model_name
    _check_alias(alias)
    get_version(project, version, name)  # a clear error for a version that does not exist
    client(project).set_registered_model_alias(name, alias, str(version))


def promote(project: Project, ref: str, alias: str = CHAMPION) -> Promotion:
    """Point `alias` at the version `ref` names (`name:3`, `3`, `name@challenger`, ...)."""
    _check_alias(alias)
    target = resolve(project, ref)
    mlc = client(project)
    aliases = mlc.get_registered_model(target.name).aliases or {}
    previous = int(aliases[alias]) if alias in aliases else None
    if previous != target.version:
        mlc.set_registered_model_alias(target.name, alias, str(target.version))
    return Promotion(target.name, alias, target.version, previous)


def _check_alias(alias: str) -> None:
    # MLflow reserves `latest` and version-like names (`v3`); keep aliases plain words.
    if not _ALIAS.match(alias) or alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        raise UserInputError(
            f"--alias: {alias!r} is not an alias name (letters, digits, _ and -, starting with a"
            " letter; not `latest` or `v<number>`)"
        )


# -- a table of versions -------------------------------------------------------------------------
@dataclass
class VersionSummary:
    version: RegisteredVersion
    val_accuracy: float | None = None  # the kept model's validation accuracy
    test_accuracy: float | None = None


def describe_versions(project: Project, name: str | None = None) -> list[VersionSummary]:
    """Every version of a model with its key metrics (from its training run)."""
    from mlflow.exceptions import MlflowException

    own = project.registered_model_name
    versions = list_versions(project, name or own)
    if not versions and name and name != own:
        known = sorted(m.name for m in client(project).search_registered_models())
        listed = f" (registered: {', '.join(known)})" if known else ""
        raise UserInputError(f"no registered model {name!r}{listed}")
    mlc = client(project)
    out = []
    for version in versions:
        metrics: dict = {}
        if version.run_id:
            with contextlib.suppress(MlflowException):  # a run deleted since: the version stands
                metrics = mlc.get_run(version.run_id).data.metrics
        val = metrics.get("final_val_accuracy", metrics.get("val_accuracy"))
        out.append(VersionSummary(version, val, metrics.get("test_accuracy")))
    return out


def format_versions(summaries: list[VersionSummary], name: str) -> str:
    """A compact table: version, aliases, val/test accuracy, corpus, source commit, created."""
    if not summaries:
        return f"model {name!r} has no registered versions yet (`shipyard train` registers one)"
    rows = [("version", "aliases", "val_acc", "test_acc", "corpus", "commit", "created")]
    dirty = False
    for s in summaries:
        v = s.version
        commit = v.tags.get("source_commit", v.tags.get("git_commit", "?"))[:10]
        if v.tags.get("source_dirty") == "true":
            commit += "*"
            dirty = True
        created = (
            dt.datetime.fromtimestamp(v.created_ms / 1000).strftime("%Y-%m-%d %H:%M")
            if v.created_ms
            else "?"
        )
        rows.append(
            (
                str(v.version),
                ",".join(v.aliases) or "-",
                _score(s.val_accuracy),
                _score(s.test_accuracy),
                v.tags.get("corpus_content_hash", "?")[:12],
                commit,
                created,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    right = {0, 2, 3}  # numbers
    lines = [f"{name}  ({summaries[0].version.tracking_uri})"]
    for r in rows:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    if dirty:
        lines.append("  * built from a checkout with uncommitted changes")
    return "\n".join(lines)


def _score(value: float | None) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-"


# -- helpers -------------------------------------------------------------------------------------
def _version(mv, uri: str) -> RegisteredVersion:
    return RegisteredVersion(
        name=mv.name,
        version=int(mv.version),
        run_id=mv.run_id,
        source=mv.source,
        tags=dict(mv.tags or {}),
        aliases=list(getattr(mv, "aliases", None) or []),
        tracking_uri=uri,
        created_ms=getattr(mv, "creation_timestamp", None),
    )


def _local(uri: str) -> str | None:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return unquote(parsed.path)
    if parsed.scheme == "" and os.path.isabs(uri):
        return uri
    return None


def _quote(name: str) -> str:
    return name.replace("'", "\\'")
