"""`shipyard doctor`: the versions and build flags that decide whether distributed training works.

The first thing to run when a cluster misbehaves. The classic failure is a Horovod wheel built
without TensorFlow ops (pip's build isolation hid TensorFlow) or without Gloo, which only shows up
later as an obscure import or rendezvous error; the doctor names it and gives the one-line fix.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from dataclasses import dataclass, field

from shipyard.cluster.horovod_build import as_env, env_prefix, gpu_flags
from shipyard.verbosity import is_verbose

HOROVOD_VERSION = "0.28.1"  # pinned in pyproject.toml (the `horovod` extra)

PACKAGES = ("ray", "tensorflow", "horovod", "pyarrow", "mlflow", "numpy", "pandas", "optuna")


@dataclass
class Report:
    versions: dict[str, str | None]
    horovod: dict[str, bool | str]
    resources: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _version(dist: str) -> str | None:
    names = {"tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-gpu")}.get(dist, (dist,))
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def horovod_build() -> dict[str, bool | str]:
    """Horovod's build flags as its TensorFlow extension reports them."""
    if not is_verbose():  # TensorFlow's C++ start-up notices (oneDNN, CPU features) are noise here
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import horovod.tensorflow as hvd
    except ImportError as exc:
        return {"tensorflow_ops": False, "error": str(exc).splitlines()[0]}
    return {
        "tensorflow_ops": True,
        "gloo": bool(hvd.gloo_built()),
        "nccl": bool(hvd.nccl_built()),
        "mpi": bool(hvd.mpi_built()),
        "cuda": bool(hvd.cuda_built()),
    }


def horovod_fix() -> str:
    """The one-line reinstall with the build flags `make install` uses."""
    return (
        "reinstall Horovod against the installed TensorFlow: pip uninstall -y horovod &&"
        f" {env_prefix()} pip install --no-build-isolation --no-cache-dir"
        f" horovod=={HOROVOD_VERSION}"
        f" (GPU machines add {as_env(gpu_flags())})"
    )


def problems(versions: dict[str, str | None], build: dict[str, bool | str]) -> list[str]:
    """One line per problem, each with the command that fixes it."""
    found = [
        f"{name} is not installed: run `make install`"
        for name in ("ray", "tensorflow", "horovod", "pyarrow", "mlflow")
        if versions.get(name) is None
    ]
    if versions.get("horovod"):
        if not build.get("tensorflow_ops"):
            found.append(f"Horovod has no TensorFlow ops: {horovod_fix()}")
        elif not build.get("gloo"):
            found.append(f"Horovod was built without Gloo: {horovod_fix()}")
    return found


def diagnose(address: str | None = None, *, check_cluster: bool = True) -> Report:
    versions = {"python": platform.python_version()}
    versions.update({name: _version(name) for name in PACKAGES})
    build = horovod_build() if versions["horovod"] else {}
    report = Report(versions=versions, horovod=build, problems=problems(versions, build))
    if check_cluster and versions["ray"]:
        from shipyard.cluster.runtime import connect

        report.resources = {
            k: v for k, v in connect(address, log_to_driver=False).items() if k in ("CPU", "GPU")
        }
        report.resources.setdefault("GPU", 0.0)
    return report


def format_report(report: Report) -> str:
    lines = ["versions:"]
    lines += [
        f"  {name:<11} {version or 'not installed'}" for name, version in report.versions.items()
    ]
    if report.horovod:
        lines.append("horovod build:")
        lines += [f"  {key:<15} {value}" for key, value in report.horovod.items()]
    if report.resources:
        lines.append("cluster:")
        lines += [f"  {key:<11} {value:g}" for key, value in report.resources.items()]
    lines += [f"problem: {p}" for p in report.problems] or ["ok"]
    return "\n".join(lines)
