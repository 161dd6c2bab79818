"""Connect to Ray: start an embedded local cluster, or join a running one by address.

This module holds the Ray Train V1 switch (`RAY_TRAIN_V2_ENABLED=0`, in `WORKER_ENV`): the V2 API
refuses `HorovodTrainer`, and the switch is read when `ray.train` is first imported. Importing this
module changes nothing; code that starts Ray Train work calls `ensure_train_v1()` before importing
`ray.train`, and `connect` ships `WORKER_ENV` to worker processes through the job's runtime
environment. The same runtime environment runs the job's workers at the driver's CPU priority
instead of Ray's niceness 15 (see below).
"""

from __future__ import annotations

import json
import logging
import os
from urllib.parse import urlparse

from shipyard.cluster.network import unreachable
from shipyard.errors import UserInputError
from shipyard.verbosity import is_verbose

WORKER_ENV = {
    "RAY_TRAIN_V2_ENABLED": "0",
    # V1 is a deliberate choice (V2 refuses HorovodTrainer); its migration notices are noise.
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "TF_CPP_MIN_LOG_LEVEL": "2",  # TensorFlow's C++ start-up chatter drowns the epoch lines
    # Ray Train V1 sets a Ray Data option that Ray itself deprecated; nothing a user can change.
    "PYTHONWARNINGS": "ignore:`ExecutionOptions.exclude_resources` is deprecated",
}


# Ray starts worker processes at niceness 15 so that its daemons win any contention for CPU
# (ray-project/ray#24928). A shipyard job's workers are the job's main work, though: at 15, any
# nice-0 process on the node (the driver polling its trial, an agent, a notebook) preempts a
# Horovod rank mid-step, and the other ranks wait for it in the allreduce. Ray runs its own job
# drivers at 0 for that reason (#33287); shipyard runs its jobs' workers at 0 too. Measured with
# bench/training.py's runs, interleaved: 1 worker x 2 CPUs did 0.92 of plain Keras at 15 and 1.00
# at 0. The environment's own RAY_worker_niceness, when set, wins.
RAY_DATA_QUIET_LOGGING = os.path.join(os.path.dirname(__file__), "ray_data_quiet_logging.yaml")
NICENESS_VAR = "RAY_worker_niceness"  # ray._private.ray_constants.RAY_WORKER_NICENESS, unimported
JOB_WORKER_NICENESS = "0"


def ensure_train_v1() -> None:
    """Select Ray Train's V1 API in this process; harmless when called again."""
    for key, value in WORKER_ENV.items():
        os.environ.setdefault(key, value)
    if os.environ["RAY_TRAIN_V2_ENABLED"] != "0":
        raise UserInputError(
            "RAY_TRAIN_V2_ENABLED is set to "
            f"{os.environ['RAY_TRAIN_V2_ENABLED']!r}; HorovodTrainer needs Ray Train's V1 API"
            " (unset it or set it to 0)"
        )


def connect(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    log_to_driver: bool = True,
    dashboard_port: int | None = None,
) -> dict:
    """Start an embedded Ray (no address, no RAY_ADDRESS) or join the cluster at `address`.

    Returns Ray's view of the cluster's resources. Idempotent: when Ray is already initialized in
    this process (a test's `ray.init(num_cpus=2)`, a Ray job's driver), it is reused as is.
    `dashboard_port`: an embedded cluster also runs Ray's dashboard, on 127.0.0.1 at that port
    (off by default: one more process competing for the CPUs); a joined cluster has its own.
    """
    import ray

    if ray.is_initialized():
        return ray.cluster_resources()
    address = address or os.environ.get("RAY_ADDRESS") or None
    env_vars = _env_vars_not_set_by_job()
    runtime_env = {"env_vars": env_vars} if env_vars else None
    if address and address != "local":
        _check_reachable(address)
        _keep_loopback(address)
        ray.init(
            address=address,
            runtime_env=runtime_env,
            log_to_driver=log_to_driver,
            logging_level=logging.WARNING,
            logging_config=_worker_logging(),
        )
    else:
        # address="local" always starts a private cluster, even when a stale
        # /tmp/ray/ray_current_cluster from a dead `ray start` is lying around. Its token
        # authentication notice is noise for a cluster nobody else can join.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
            logging.ERROR
        )
        if not is_verbose():  # this machine's own install: the file is surely there
            env_vars.setdefault("RAY_DATA_LOGGING_CONFIG", RAY_DATA_QUIET_LOGGING)
            runtime_env = {"env_vars": env_vars}
        ray.init(
            address="local",
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=dashboard_port is not None,
            dashboard_host="127.0.0.1",
            dashboard_port=dashboard_port,
            runtime_env=runtime_env,
            log_to_driver=log_to_driver,
            logging_level=logging.WARNING,
            logging_config=_worker_logging(),
        )
    _configure_progress()
    return ray.cluster_resources()


def _worker_logging():
    """Ray's INFO lines from worker processes (worker placement, every checkpoint persisted,
    every Ray Data execution plan) only with `--verbose`; warnings and errors always."""
    import ray

    from shipyard.verbosity import is_verbose

    return ray.LoggingConfig(log_level="INFO" if is_verbose() else "WARNING")


def _configure_progress() -> None:
    """Ray Data's live progress bars on a terminal; in logs and CI, only warnings.

    Without a terminal Ray Data prints a multi-line status block every few seconds, which buries
    the lines that matter (the prepare summary, Keras epochs) in CI logs.
    """
    import sys

    import ray.data

    from shipyard.verbosity import quiet_ray_data

    if not sys.stderr.isatty():
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    quiet_ray_data()


def _env_vars_not_set_by_job() -> dict[str, str]:
    """WORKER_ENV and the workers' niceness, minus what the Ray job running this driver sets.

    Inside a submitted job Ray merges the job's runtime_env with ray.init's and refuses any key
    given by both (even with equal values); `shipyard submit` ships WORKER_ENV with the job.
    """
    job_json = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    job_env: dict = {}
    if job_json:
        try:
            job_env = (json.loads(job_json).get("runtime_env") or {}).get("env_vars") or {}
        except (ValueError, AttributeError):
            job_env = {}
    wanted = {
        **WORKER_ENV,
        NICENESS_VAR: os.environ.get(NICENESS_VAR, JOB_WORKER_NICENESS),
    }
    return {k: v for k, v in wanted.items() if k not in job_env}


def _keep_loopback(address: str) -> None:
    """Join a loopback cluster (`shipyard cluster up`) on loopback.

    Its GCS listens on 127.0.0.1 only, and Ray's driver swaps a loopback address for the
    machine's own before connecting, then retries "Failed to connect to GCS" forever. This is the
    switch `shipyard cluster env` exports for other clients (`client_env.KEEP_LOOPBACK_VAR`);
    Ray read its variable when it was imported, so this process sets the constant it became;
    both stay for the rest of the process (Ray would need a restart of the process to unread
    them), which only matters to a process that later joins a non-loopback cluster.
    """
    from shipyard.cluster.client_env import KEEP_LOOPBACK_VAR
    from shipyard.cluster.network import is_loopback

    host = urlparse(address if "://" in address else f"tcp://{address}").hostname or ""
    if address == "auto" or not is_loopback(host):
        return
    import ray._private.ray_constants as ray_constants

    os.environ[KEEP_LOOPBACK_VAR] = "0"  # and for the processes this one starts
    ray_constants.ENABLE_RAY_CLUSTER = False


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds with a fix, instead of Ray's minute of retries, when nothing listens."""
    if address == "auto":
        return
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    host, port = parsed.hostname, parsed.port or 6379
    if parsed.scheme in ("ray",):
        port = parsed.port or 10001
    reason = unreachable(host, port, timeout_s)
    if reason:
        raise UserInputError(
            f"cannot reach a Ray cluster at {address} ({reason});"
            " start one with `shipyard cluster up` or `ray start --head`, or omit the address"
            " to use an embedded local cluster"
        )
