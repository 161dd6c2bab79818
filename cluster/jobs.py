"""Jobs on a Ray cluster through Ray's own Jobs API: submit, follow, list, status, logs, stop.

Using the Jobs API (not a private driver connection) means `ray job list`, `ray job logs` and the
dashboard show shipyard's jobs, and shipyard shows theirs. A project job ships the project's
folder as the job's working_dir (without environments, outputs and large files) and runs
`shipyard <action> <project> ...overrides` there; a script job runs any Horovod script through
`shipyard.training.horovod_script`.

Address resolution, first match wins: --address, $RAY_API_SERVER_ADDRESS (what `ray job` reads),
$RAY_ADDRESS when it is an http(s) URL, the project's `cluster.address`, then the dashboard of the
cluster started by `shipyard cluster up`.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from shipyard.cluster import dashboard
from shipyard.cluster.preflight import PreflightResult, check_resources
from shipyard.cluster.runtime import WORKER_ENV
from shipyard.errors import ShipyardError, UserInputError

if TYPE_CHECKING:
    from ray.job_submission import JobDetails, JobSubmissionClient

    from shipyard.project import Project

# Action → the shipyard CLI words that run it inside the job (one place to follow CLI renames).
ACTIONS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "sweep": ("sweep",),
    "prepare": ("data", "prepare"),
}
# Never shipped: environments, VCS data, outputs and caches (Ray matches these like .gitignore).
EXCLUDES = (
    ".venv/",
    "venv/",
    ".git/",
    ".shipyard/",
    "outputs/",
    "mlruns/",
    "mlflow.db",
    "ray_results/",
    "__pycache__/",
    ".pytest_cache/",
    ".ruff_cache/",
    "*.pyc",
)
LARGE_FILE_MB = 20  # larger files stay home: data belongs on shared storage, not in every job
POLL_S = 1.0


@dataclass
class JobRow:
    """One job as the CLI shows it: submission id when there is one, else Ray's job id."""

    id: str
    status: str
    entrypoint: str
    message: str = ""
    start_time: float | None = None
    end_time: float | None = None
    kind: str = "SUBMISSION"

    @classmethod
    def of(cls, job: JobDetails) -> JobRow:
        return cls(
            id=job.submission_id or job.job_id or "?",
            status=str(job.status),
            entrypoint=job.entrypoint or "",
            message=job.message or "",
            start_time=job.start_time / 1000 if job.start_time else None,
            end_time=job.end_time / 1000 if job.end_time else None,
            kind=str(getattr(job.type, "value", job.type)).upper(),
        )


@dataclass
class SubmitResult:
    job_id: str
    address: str
    status: str | None = None  # None with --no-wait
    notes: list[str] = field(default_factory=list)


# -- address -------------------------------------------------------------------------------------
def resolve_address(address: str | None = None, project: Project | None = None) -> str:
    """The Jobs API URL to use, by the documented order."""
    if address:
        return dashboard.normalize_url(address)
    env_url = os.environ.get("RAY_API_SERVER_ADDRESS", "").strip()
    if env_url:
        return dashboard.normalize_url(env_url)
    ray_address = os.environ.get("RAY_ADDRESS", "").strip()
    if ray_address.startswith(("http://", "https://")):
        return dashboard.normalize_url(ray_address)
    if project is not None and project.cluster.address:
        return _dashboard_of(project.cluster.address)
    from shipyard.cluster.local import load_state, state_file

    cluster = load_state()
    if cluster is not None:
        return cluster.dashboard_url
    raise UserInputError(
        "no cluster to submit to: pass --address http://HOST:8265, set RAY_API_SERVER_ADDRESS,"
        f" set cluster.address in the project, or start one with `shipyard cluster up`"
        f" (no {state_file()})"
    )


def _dashboard_of(address: str) -> str:
    """cluster.address may be a dashboard URL or a GCS/client address; jobs need the dashboard."""
    if address.startswith(("http://", "https://")):
        return dashboard.normalize_url(address)
    if address in ("auto", "local"):
        raise UserInputError(
            f"cluster.address {address!r} names no remote cluster; pass --address http://HOST:8265"
        )
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    if not parsed.hostname:
        raise UserInputError(f"cluster.address {address!r}: expected http://HOST:8265")
    return f"http://{parsed.hostname}:8265"  # Ray's default dashboard port next to that GCS


# -- submit --------------------------------------------------------------------------------------
def submit_project(
    project: Project,
    action: str,
    overrides: list[tuple[str, str]] | tuple = (),
    *,
    address: str | None = None,
    wait: bool = True,
    preflight: bool = True,
) -> SubmitResult:
    """Run `shipyard <action> <project>` on the cluster, shipping the project's folder."""
    if action not in ACTIONS:
        raise UserInputError(f"action: must be one of {', '.join(ACTIONS)} (got {action!r})")
    source = Path(project.source_file)
    if not source.is_file():
        raise UserInputError(f"{source}: project file not found")
    url = resolve_address(address, project)
    client = dashboard.job_client(url)
    notes: list[str] = []
    if preflight and action in ("train", "sweep"):
        notes += _preflight(
            url,
            project.training.workers,
            project.training.cpus_per_worker,
            project.training.gpus_per_worker,
            project.training.use_gpu,
            autoscaling=project.cluster.provider != "local",
        )
    working_dir = source.resolve().parent
    excludes, excluded_large = _excludes(working_dir)
    if excluded_large:
        notes.append(
            f"not shipped (over {LARGE_FILE_MB} MB): {', '.join(excluded_large)}; jobs read them by"
            " absolute path, which works on this machine or a shared filesystem"
        )
    path_overrides = _path_overrides(project, working_dir, excluded_large)
    if path_overrides and not _is_local(url):
        notes.append(
            "paths passed as absolute local paths ("
            + ", ".join(k for k, _ in path_overrides)
            + "); a remote cluster needs them on shared storage (s3://, gs://, NFS)"
        )
    args = [
        "shipyard",
        *ACTIONS[action],
        source.name,
        *_flat(overrides),
        *_flat(path_overrides),
        # Inside the job, join the cluster running it (RAY_ADDRESS set by Ray), whatever the
        # project's cluster.address says about reaching it from the laptop.
        "--cluster.address",
        "auto",
    ]
    runtime_env = {
        "working_dir": str(working_dir),
        "excludes": excludes,
        "env_vars": dict(WORKER_ENV),
    }
    metadata = {"shipyard.project": project.name, "shipyard.action": action}
    return _submit(client, url, shlex.join(args), runtime_env, metadata, wait, notes)


def submit_script(
    script: str,
    args: list[str] | tuple = (),
    workers: int = 2,
    *,
    cpus_per_worker: float = 1,
    gpus_per_worker: float = 1,
    use_gpu: bool = False,
    address: str | None = None,
    wait: bool = True,
    preflight: bool = True,
) -> SubmitResult:
    """Run an unchanged Horovod script as a `workers`-rank job; its folder is the working_dir."""
    path = Path(script)
    if not path.is_file():
        raise UserInputError(f"--script {script}: file not found")
    if workers < 1:
        raise UserInputError(f"--workers: must be >= 1 (got {workers})")
    url = resolve_address(address)
    client = dashboard.job_client(url)
    notes: list[str] = []
    if preflight:
        notes += _preflight(url, workers, cpus_per_worker, gpus_per_worker, use_gpu, False)
    working_dir = path.resolve().parent
    excludes, excluded_large = _excludes(working_dir)
    if excluded_large:
        notes.append(f"not shipped (over {LARGE_FILE_MB} MB): {', '.join(excluded_large)}")
    entry = [
        "python",
        "-m",
        "shipyard.training.horovod_script",
        path.name,
        "--workers",
        str(workers),
        "--cpus-per-worker",
        f"{cpus_per_worker:g}",
    ]
    if use_gpu:
        entry += ["--use-gpu", "--gpus-per-worker", f"{gpus_per_worker:g}"]
    entry += ["--", *args]
    runtime_env = {
        "working_dir": str(working_dir),
        "excludes": excludes,
        "env_vars": dict(WORKER_ENV),
    }
    metadata = {"shipyard.script": path.name, "shipyard.workers": str(workers)}
    return _submit(client, url, shlex.join(entry), runtime_env, metadata, wait, notes)


def _submit(
    client: JobSubmissionClient,
    url: str,
    entrypoint: str,
    runtime_env: dict,
    metadata: dict[str, str],
    wait: bool,
    notes: list[str],
) -> SubmitResult:
    for note in notes:
        print(note, flush=True)
    try:
        job_id = client.submit_job(
            entrypoint=entrypoint, runtime_env=runtime_env, metadata=metadata
        )
    except Exception as exc:  # upload too large, bad runtime_env, auth: Ray says which
        raise UserInputError(f"the Jobs API at {url} refused the job: {_first_line(exc)}") from None
    print(f"submitted job {job_id} to {url}", flush=True)
    result = SubmitResult(job_id=job_id, address=url, notes=notes)
    if not wait:
        print(f"follow it with: shipyard jobs logs {job_id} --address {url}", flush=True)
        return result
    result.status = follow(client, job_id)
    _raise_unless_succeeded(client, job_id, result.status)
    return result


def follow(client: JobSubmissionClient, job_id: str, poll_s: float = POLL_S) -> str:
    """Print the job's log as it grows until the job ends; return its final status."""
    printed = 0
    try:
        while True:
            status = client.get_job_status(job_id)
            logs = client.get_job_logs(job_id)
            if len(logs) > printed:
                sys.stdout.write(logs[printed:])
                sys.stdout.flush()
                printed = len(logs)
            if status.is_terminal():
                return str(status)
            time.sleep(poll_s)
    except KeyboardInterrupt:
        # Only the following stops; the job is the cluster's now.
        print(f"\njob {job_id} keeps running; stop it with: shipyard jobs stop {job_id}")
        raise


def _raise_unless_succeeded(client: JobSubmissionClient, job_id: str, status: str) -> None:
    if status == "SUCCEEDED":
        print(f"job {job_id} SUCCEEDED", flush=True)
        return
    info = client.get_job_info(job_id)
    raise ShipyardError(f"job {job_id} {status}: {info.message or 'no message from Ray'}")


def _preflight(
    url: str,
    workers: int,
    cpus_per_worker: float,
    gpus_per_worker: float,
    use_gpu: bool,
    autoscaling: bool,
) -> list[str]:
    """Check the job against the target cluster's nodes, as seen by its dashboard."""
    resources = dashboard.cluster_resources(url)
    result: PreflightResult = check_resources(
        workers, cpus_per_worker, gpus_per_worker, use_gpu, resources, autoscaling=autoscaling
    )
    return [result.describe()]


# -- shipping the working folder -----------------------------------------------------------------
def _excludes(working_dir: Path) -> tuple[list[str], list[str]]:
    """Ray's exclude patterns for the folder, plus the large files found (relative paths)."""
    skip_dirs = {e.rstrip("/") for e in EXCLUDES if e.endswith("/")}
    large: list[str] = []
    limit = LARGE_FILE_MB * 1024 * 1024
    for root, dirs, files in os.walk(working_dir):
        dirs[:] = [d for d in dirs if d not in skip_dirs and not os.path.islink(Path(root, d))]
        for name in files:
            full = Path(root, name)
            try:
                if full.stat().st_size > limit:
                    large.append(full.relative_to(working_dir).as_posix())
            except OSError:
                continue
    return [*EXCLUDES, *(f"/{rel}" for rel in sorted(large))], sorted(large)


# Fields holding paths: outputs always go to absolute paths (a job's working_dir copy is deleted
# with the job), inputs only when they live outside the shipped folder or were left behind.
_OUTPUT_FIELDS = ("workdir", "data.output", "training.storage_path", "serving.feedback_path")
_INPUT_FIELDS = ("data.source",)


def _path_overrides(
    project: Project, working_dir: Path, excluded: list[str]
) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    left_behind = {str((working_dir / rel).resolve()) for rel in excluded}

    def shipped(path: str) -> bool:
        resolved = Path(path).resolve()
        inside = resolved == working_dir or working_dir in resolved.parents
        under_excluded = any(part in {e.rstrip("/") for e in EXCLUDES} for part in resolved.parts)
        return inside and not under_excluded and str(resolved) not in left_behind

    workdir = str(project.workdir_path)
    out.append(("workdir", workdir))
    for name in _OUTPUT_FIELDS[1:]:
        value = _get(project, name)
        if value and "://" not in value:
            out.append((name, project.path(value)))
    for name in _INPUT_FIELDS:
        value = _get(project, name)
        if value and "://" not in value and not shipped(project.path(value)):
            out.append((name, project.path(value)))
    data = project.data
    if data.extra_sources:
        values = [project.path(v) if "://" not in v else v for v in data.extra_sources]
        if any("://" not in v and not shipped(v) for v in values):
            out.append(("data.extra_sources", json.dumps(values)))
    for split, value in (data.source_splits or {}).items():
        if "://" not in value and not shipped(project.path(value)):
            out.append((f"data.source_splits.{split}", project.path(value)))
    return out


def _get(project: Project, dotted: str) -> str | None:
    node = project
    for part in dotted.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    return node if isinstance(node, str) else None


def _flat(pairs: list[tuple[str, str]] | tuple) -> list[str]:
    return [item for key, value in pairs for item in (f"--{key}", str(value))]


def _is_local(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


# -- list, status, logs, stop --------------------------------------------------------------------
def list_jobs(address: str | None = None) -> list[JobRow]:
    client = dashboard.job_client(resolve_address(address))
    rows = [JobRow.of(job) for job in client.list_jobs()]
    return sorted(rows, key=lambda r: r.start_time or 0)


def job_status(job_id: str, address: str | None = None) -> JobRow:
    url = resolve_address(address)
    return JobRow.of(_info(dashboard.job_client(url), job_id, url))


def job_logs(job_id: str, address: str | None = None, *, follow_logs: bool = False) -> str:
    """The job's whole log so far (or, following, print it live and return the final status)."""
    url = resolve_address(address)
    client = dashboard.job_client(url)
    _info(client, job_id, url)  # unknown ids fail here with a message naming them
    if follow_logs:
        return follow(client, job_id)
    return client.get_job_logs(job_id)


def stop_job(job_id: str, address: str | None = None, timeout_s: float = 30.0) -> JobRow:
    """Ask Ray to stop the job and wait (bounded) until it has."""
    url = resolve_address(address)
    client = dashboard.job_client(url)
    info = _info(client, job_id, url)
    if not info.status.is_terminal():
        client.stop_job(job_id)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            info = client.get_job_info(job_id)
            if info.status.is_terminal():
                break
            time.sleep(0.5)
    return JobRow.of(info)


def _info(client: JobSubmissionClient, job_id: str, url: str) -> JobDetails:
    try:
        return client.get_job_info(job_id)
    except RuntimeError as exc:
        if "404" in str(exc) or "does not exist" in str(exc):
            raise UserInputError(f"no job {job_id!r} on the cluster at {url}") from None
        raise ShipyardError(f"cannot read job {job_id!r}: {_first_line(exc)}") from None


def format_jobs(rows: list[JobRow]) -> str:
    if not rows:
        return "no jobs"
    lines = [f"{'id':<30} {'status':<10} {'started':<19} entrypoint"]
    for row in rows:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.start_time or 0))
        entry = row.entrypoint if len(row.entrypoint) <= 70 else row.entrypoint[:67] + "..."
        lines.append(f"{row.id:<30} {row.status:<10} {started:<19} {entry}")
    return "\n".join(lines)


def format_job(row: JobRow) -> str:
    lines = [f"job:        {row.id}", f"status:     {row.status}"]
    if row.message:
        lines.append(f"message:    {row.message}")
    lines.append(f"entrypoint: {row.entrypoint}")
    return "\n".join(lines)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
