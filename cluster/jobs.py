"""Jobs on a Ray cluster through Ray's own Jobs API: submit, follow, list, status, logs, stop.

Using the Jobs API (not a private driver connection) means `ray job list`, `ray job logs` and the
dashboard show shipyard's jobs, and shipyard shows theirs. A project job ships the project's
folder as the job's working_dir (without environments, outputs and large files) and runs
`shipyard <action> <project> ...overrides` there; a script job runs any Horovod script through
`shipyard.training.horovod_script`.

Address resolution, first match wins: --address, $RAY_API_SERVER_ADDRESS (what `ray job` reads),
$RAY_ADDRESS when it is an http(s) URL, the project's `cluster.address`, then the dashboard of the
cluster started by `shipyard cluster up`.

Output is for a person: what was submitted, where it runs, the job's own log, the outcome and the
command to look further. The lines the Jobs API itself writes into every job's log (Ray's INFO
lines, "Running entrypoint for job ...") show only with `--verbose`, which is also passed on to
the job (SHIPYARD_VERBOSE) so shipyard inside it shows Ray's tables and notices too.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from shipyard.cluster import dashboard
from shipyard.cluster.network import is_loopback
from shipyard.cluster.preflight import PreflightResult, check_resources
from shipyard.cluster.runtime import WORKER_ENV
from shipyard.errors import ShipyardError, UserInputError, first_line
from shipyard.source_commit import source_commit
from shipyard.verbosity import is_verbose, verbose_env

if TYPE_CHECKING:
    from ray.job_submission import JobDetails, JobSubmissionClient

    from shipyard.project import Project

# Action → the shipyard CLI words that run it inside the job (one place to follow CLI renames).
ACTIONS: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "sweep": ("sweep",),
    "prepare": ("data", "prepare"),
    # On a cluster `shipyard serve` deploys and returns (like `serve deploy`): the app outlives
    # the job, and `shipyard serve status|down --cluster.address ...` reach it from here.
    "serve": ("serve",),
}
# Actions that start Horovod workers: checked against the cluster before submitting.
TRAINING_ACTIONS = ("train", "sweep")
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
    from shipyard.cluster.local_state import load_state, state_file

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
    if preflight and action in TRAINING_ACTIONS:
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
    if path_overrides and not is_loopback(urlparse(url).hostname or ""):
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
        # The job runs in a copy of the folder without .git: it reads the submitting checkout's
        # commit and dirtiness from SHIPYARD_SOURCE_COMMIT (shipyard.source_commit).
        "env_vars": {
            **WORKER_ENV,
            **source_commit(str(working_dir)).to_env(),
            **verbose_env(),
        },
    }
    metadata = {"shipyard.project": project.name, "shipyard.action": action}
    where = [
        f"runs:    shipyard {' '.join(ACTIONS[action])} {source.name}, in a copy of {working_dir}",
        f"outputs: {project.workdir_path}",
    ]
    return _submit(
        client, url, shlex.join(args), runtime_env, metadata, wait, notes, where, address
    )


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
        "env_vars": {**WORKER_ENV, **verbose_env()},
    }
    metadata = {"shipyard.script": path.name, "shipyard.workers": str(workers)}
    per_worker = f"{cpus_per_worker:g} CPU" + (f" + {gpus_per_worker:g} GPU" if use_gpu else "")
    where = [
        f"runs:    {path.name} {shlex.join(args)}".rstrip()
        + f" on {workers} Horovod worker(s) × {per_worker}, in a copy of {working_dir}",
    ]
    return _submit(
        client, url, shlex.join(entry), runtime_env, metadata, wait, notes, where, address
    )


def _submit(
    client: JobSubmissionClient,
    url: str,
    entrypoint: str,
    runtime_env: dict,
    metadata: dict[str, str],
    wait: bool,
    notes: list[str],
    where: list[str],
    address: str | None,
) -> SubmitResult:
    for note in notes:
        print(note, flush=True)
    try:
        job_id = client.submit_job(
            entrypoint=entrypoint, runtime_env=runtime_env, metadata=metadata
        )
    except Exception as exc:  # upload too large, bad runtime_env, auth: Ray says which
        raise UserInputError(f"the Jobs API at {url} refused the job: {first_line(exc)}") from None
    flag = f" --address {url}" if address else ""
    print(f"submitted job {job_id} to {url}", flush=True)
    for line in where:
        print(f"  {line}", flush=True)
    print(
        f"  follow:  shipyard jobs logs {job_id} --follow{flag}"
        f"   stop: shipyard jobs stop {job_id}{flag}",
        flush=True,
    )
    result = SubmitResult(job_id=job_id, address=url, notes=notes)
    if not wait:
        return result
    started = time.monotonic()
    result.status = follow(client, job_id)
    _raise_unless_succeeded(client, job_id, result.status, time.monotonic() - started, flag)
    return result


# Lines the Jobs API writes into every job's log on its own (ray/dashboard/modules/job/
# job_manager.py, job_supervisor.py), and Ray's INFO log lines from the job's driver: shown only
# with --verbose. Ray's WARNING and ERROR lines and everything the job prints are always shown.
_RAY_INFO_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\t(?:DEBUG|INFO) \S+:\d+ -- ")
_RAY_ENTRYPOINT_LINE = "Running entrypoint for job "


def is_ray_noise(line: str) -> bool:
    """A line of Ray's own bookkeeping in a job's log (not the job's output, not a warning)."""
    return bool(_RAY_INFO_LINE.match(line)) or line.startswith(_RAY_ENTRYPOINT_LINE)


def readable_log(text: str, verbose: bool | None = None) -> str:
    """The job's log without Ray's bookkeeping lines, unless verbose."""
    if is_verbose() if verbose is None else verbose:
        return text
    return "".join(
        line for line in text.splitlines(keepends=True) if not is_ray_noise(line.rstrip("\n"))
    )


def follow(client: JobSubmissionClient, job_id: str, poll_s: float = POLL_S) -> str:
    """Print the job's log as it grows until the job ends; return its final status."""
    verbose = is_verbose()
    printed = 0
    pending = ""  # an incomplete last line waits for its end before it is judged

    def emit(text: str) -> None:
        if text:
            sys.stdout.write(readable_log(text, verbose))
            sys.stdout.flush()

    try:
        while True:
            status = client.get_job_status(job_id)
            logs = client.get_job_logs(job_id)
            if len(logs) > printed:
                pending += logs[printed:]
                printed = len(logs)
                complete, newline, pending = pending.rpartition("\n")
                emit(complete + newline)
            if status.is_terminal():
                emit(pending)
                if pending and not pending.endswith("\n"):
                    sys.stdout.write("\n")
                return str(status)
            time.sleep(poll_s)
    except KeyboardInterrupt:
        # Only the following stops; the job is the cluster's now.
        print(f"\njob {job_id} keeps running; stop it with: shipyard jobs stop {job_id}")
        raise


def _raise_unless_succeeded(
    client: JobSubmissionClient, job_id: str, status: str, seconds: float, flag: str = ""
) -> None:
    if status == "SUCCEEDED":
        print(f"job {job_id} SUCCEEDED after {seconds:.1f}s", flush=True)
        return
    info = client.get_job_info(job_id)
    raise ShipyardError(
        f"job {job_id} {status}: {info.message or 'no message from Ray'}"
        f" (whole log: shipyard jobs logs {job_id} --verbose{flag})"
    )


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


# -- list, status, logs, stop --------------------------------------------------------------------
@dataclass
class StopResult:
    row: JobRow
    stopped: bool  # False: the job had already ended, nothing was asked of Ray


def list_jobs(address: str | None = None) -> list[JobRow]:
    client = dashboard.job_client(resolve_address(address))
    rows = [JobRow.of(job) for job in client.list_jobs()]
    return sorted(rows, key=lambda r: r.start_time or 0)


def job_status(job_id: str, address: str | None = None) -> JobRow:
    url = resolve_address(address)
    return JobRow.of(_info(dashboard.job_client(url), job_id, url))


def job_logs(job_id: str, address: str | None = None, *, follow_logs: bool = False) -> str:
    """The job's whole log so far (or, following, print it live and return the final status).

    Without --verbose, the lines Ray's Jobs API adds to every log are left out.
    """
    url = resolve_address(address)
    client = dashboard.job_client(url)
    _info(client, job_id, url)  # unknown ids fail here with a message naming them
    if follow_logs:
        return follow(client, job_id)
    return readable_log(client.get_job_logs(job_id))


def stop_job(job_id: str, address: str | None = None, timeout_s: float = 30.0) -> StopResult:
    """Ask Ray to stop the job and wait (bounded) until it has."""
    url = resolve_address(address)
    client = dashboard.job_client(url)
    info = _info(client, job_id, url)
    if info.status.is_terminal():
        return StopResult(JobRow.of(info), stopped=False)
    client.stop_job(job_id)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = client.get_job_info(job_id)
        if info.status.is_terminal():
            break
        time.sleep(0.5)
    return StopResult(JobRow.of(info), stopped=True)


def _info(client: JobSubmissionClient, job_id: str, url: str) -> JobDetails:
    try:
        return client.get_job_info(job_id)
    except RuntimeError as exc:
        if "404" in str(exc) or "does not exist" in str(exc):
            raise UserInputError(f"no job {job_id!r} on the cluster at {url}") from None
        raise ShipyardError(f"cannot read job {job_id!r}: {first_line(exc)}") from None


def format_jobs(rows: list[JobRow], address_flag: str = "") -> str:
    """One line per job (`job`: submitted through the Jobs API; `driver`: a plain `ray.init`)."""
    if not rows:
        return "no jobs on this cluster yet; run one with: shipyard submit PROJECT.yaml train"
    lines = [f"{'id':<30} {'kind':<6} {'status':<10} {'started':<19} entrypoint"]
    for row in rows:
        kind = "job" if row.kind == "SUBMISSION" else row.kind.lower()
        entry = row.entrypoint if len(row.entrypoint) <= 60 else row.entrypoint[:57] + "..."
        lines.append(f"{row.id:<30} {kind:<6} {row.status:<10} {_when(row.start_time):<19} {entry}")
    lines.append(
        f"one job: shipyard jobs status ID{address_flag} | shipyard jobs logs ID{address_flag}"
    )
    return "\n".join(lines)


def format_job(row: JobRow, address_flag: str = "") -> str:
    took = ""
    if row.start_time and row.end_time:
        took = f" after {row.end_time - row.start_time:.1f}s"
    lines = [
        f"job:        {row.id}",
        f"status:     {row.status}{took}",
        f"started:    {_when(row.start_time)}",
    ]
    if row.message:
        lines.append(f"message:    {row.message}")
    lines.append(f"entrypoint: {row.entrypoint}")
    if row.kind == "SUBMISSION":
        lines.append(f"log:        shipyard jobs logs {row.id}{address_flag}")
    return "\n".join(lines)


def _when(timestamp: float | None) -> str:
    if not timestamp:
        return "-"  # not started yet
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
