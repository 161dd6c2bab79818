"""One verbosity switch for the CLI and the library: `shipyard --verbose ...` or SHIPYARD_VERBOSE=1.

By default shipyard prints what a person needs (what runs where, results, where to look next) and
keeps Ray's internal tables, INFO lines and warnings out of the way; verbose shows them all. The
switch lives in the environment, so processes shipyard starts (a Ray job's driver, its workers
through the job's runtime_env) see the same setting.
"""

from __future__ import annotations

import logging
import os
import warnings

VERBOSE_ENV = "SHIPYARD_VERBOSE"


def is_verbose() -> bool:
    """True when `--verbose` was given (here or in the process that started this one)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes")


def set_verbose(verbose: bool = True) -> None:
    """Turn verbose output on (exported to child processes) or off."""
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
    else:
        os.environ.pop(VERBOSE_ENV, None)


def verbose_env() -> dict[str, str]:
    """`{SHIPYARD_VERBOSE: "1"}` when verbose, else empty: for a job's runtime_env env_vars."""
    return {VERBOSE_ENV: "1"} if is_verbose() else {}


def ray_log_level() -> int:
    """Ray's own default (INFO) when verbose, else errors only."""
    return logging.INFO if is_verbose() else logging.ERROR


def quiet_ray_logs() -> None:
    """Unless verbose, let only Ray's errors through its log handler in this process.

    Call it after `ray` is imported: importing Ray configures its "ray" logger at INFO, and some
    of its modules set INFO on their own loggers (the Jobs SDK's "Uploading package ..."), so
    the filter sits on the handler every "ray.*" record goes through, not on a logger's level.
    """
    if is_verbose():
        return
    ray_logger = logging.getLogger("ray")
    for handler in ray_logger.handlers:
        if not any(isinstance(f, _RayErrorsOnly) for f in handler.filters):
            handler.addFilter(_RayErrorsOnly())


class _RayErrorsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= ray_log_level() or not record.name.startswith("ray")


def quiet_engines() -> None:
    """Unless verbose: no TensorFlow start-up chatter (its C++ log level is read once, when
    TensorFlow is first imported, so call this before), no absl/Keras warnings from saving or
    loading a SavedModel, no MLflow notices, and Ray Data's plans and progress notices kept to
    its log file. Safe in any process: drivers and Ray workers alike."""
    if is_verbose():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name in ("tensorflow", "absl", "keras", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for module in ("tensorflow", "keras", "mlflow", "pydantic"):
        warnings.filterwarnings("ignore", module=module)
    quiet_ray_data()


def quiet_ray_data() -> None:
    """Ray Data logs every execution plan at INFO and, when progress bars are off (no
    terminal), a warning saying so in every process: keep them off the console (its own
    handler; the ray-data.log file still has everything)."""
    if is_verbose():
        return
    for handler in logging.getLogger("ray.data").handlers:
        if type(handler).__name__ == "PlainRayHandler" and handler.level < logging.ERROR:
            handler.setLevel(logging.ERROR)


def quiet_serve() -> None:
    """Unless verbose: Serve's controller, proxy and replicas log to their files only (Serve
    reads the variable when Ray starts their processes: call this before the embedded Ray
    starts), and Serve's INFO lines in this process ("Application ... is ready") are dropped,
    since `shipyard serve` prints its own. Serve replaces its handlers, so the filter sits on its
    logger."""
    if is_verbose():
        return
    os.environ.setdefault("RAY_SERVE_LOG_TO_STDERR", "0")
    serve_logger = logging.getLogger("ray.serve")
    if not any(isinstance(f, WarningsAndUp) for f in serve_logger.filters):
        serve_logger.addFilter(WarningsAndUp())


class WarningsAndUp(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING
