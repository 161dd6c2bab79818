"""Cluster specs for real GPU clusters from the project's `cluster` section.

Two targets, both Ray's own: a cluster-launcher YAML for `ray up` (aws, gcp) and a KubeRay
`RayCluster` manifest (kubernetes). Nodes get the same stack as `make install GPU=1`: the pinned
packages from pyproject.toml, then Horovod compiled against the installed TensorFlow, without
build isolation, with NCCL on GPU nodes. The head's dashboard and Jobs API listen on
`cluster.dashboard_host` (127.0.0.1 by default: reach them through `ray dashboard` or
`kubectl port-forward`, both SSH/API-server tunnels) and every node runs with token auth.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from shipyard.cluster import horovod_build
from shipyard.cluster.runtime import WORKER_ENV
from shipyard.errors import UserInputError

if TYPE_CHECKING:
    from shipyard.project import NodeType, Project

PROVIDERS = ("aws", "gcp", "kubernetes")
REMOTE_SOURCE = "~/shipyard"  # where the launcher syncs this repository on every node
# The same folder in shell commands ("~" does not expand inside quotes).
REMOTE_SOURCE_SH = "$HOME/shipyard"
SYNC_EXCLUDES = [".venv", ".git", ".shipyard", "outputs", "mlruns", "__pycache__", "bench/results"]
GCS_PORT = 6379
DASHBOARD_PORT = 8265

_DEFAULTS = {
    "aws": {"region": "us-west-2", "cpu": "m5.2xlarge", "gpu": "g5.2xlarge"},
    "gcp": {"region": "us-central1", "cpu": "n1-standard-8", "gpu": "n1-standard-8"},
}


@dataclass
class Spec:
    provider: str
    text: str
    path: str | None = None


def install_commands(gpu: bool, source: str = REMOTE_SOURCE_SH) -> list[str]:
    """`make install` (GPU=1 on GPU nodes) as shell steps on a node holding the repository."""
    extra = "gpu" if gpu else "cpu"
    horovod_env = horovod_build.env_prefix(gpu)  # the flags `make install` uses
    pip = "python3 -m pip install -q"
    return [
        f'{pip} -U pip "setuptools>=69" wheel',
        f'{pip} -e "{source}[{extra}]"',
        # After TensorFlow and without build isolation, or Horovod builds without TF ops.
        f'{horovod_env} {pip} --no-build-isolation -e "{source}[{extra},horovod]"',
        "shipyard doctor --no-cluster",
    ]


def render(project: Project, provider: str | None = None) -> Spec:
    """The spec as YAML text (with a header saying how to use it); nothing is written."""
    provider = provider or project.cluster.provider
    if provider not in PROVIDERS:
        raise UserInputError(
            f"--provider: must be one of {', '.join(PROVIDERS)} (got {provider!r}; set it or"
            " cluster.provider)"
        )
    _check_counts(project)
    if provider == "kubernetes":
        body, header = kuberay_manifest(project), _kubernetes_header(project)
    else:
        body, header = launcher_config(project, provider), _launcher_header(project)
    text = header + yaml.safe_dump(body, sort_keys=False, default_flow_style=False, width=100)
    return Spec(provider=provider, text=text)


def write_spec(project: Project, provider: str | None = None, out: str | None = None) -> Spec:
    """Render the spec and write it to `out` (or return it for printing when `out` is None)."""
    spec = render(project, provider)
    if out:
        path = Path(out)
        if path.parent and not path.parent.exists():
            raise UserInputError(f"--out {out}: folder {path.parent} does not exist")
        path.write_text(spec.text, encoding="utf-8")
        spec.path = str(path)
    return spec


# -- ray up --------------------------------------------------------------------------------------
def launcher_config(project: Project, provider: str) -> dict[str, Any]:
    """A cluster-launcher config that validates against ray/autoscaler/ray-schema.json."""
    c = project.cluster
    defaults = _DEFAULTS[provider]
    region = c.region or defaults["region"]
    head_type, worker_type = "head", "gpu_worker" if c.worker.gpus else "cpu_worker"
    if provider == "aws":
        provider_cfg: dict[str, Any] = {
            "type": "aws",
            "region": region,
            "cache_stopped_nodes": False,  # stopped GPU nodes still cost their disks
        }
        if c.zone:
            provider_cfg["availability_zone"] = c.zone
    else:
        if not c.gcp_project:
            raise UserInputError("cluster.gcp_project: required for --provider gcp (got None)")
        provider_cfg = {
            "type": "gcp",
            "region": region,
            "availability_zone": c.zone or f"{region}-a",
            "project_id": c.gcp_project,
        }
    env = _env_prefix()
    return {
        "cluster_name": project.name,
        "max_workers": c.max_workers,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 10,
        "provider": provider_cfg,
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": {
            head_type: {
                "resources": _resources(c.head),
                "node_config": _node_config(provider, c.head, project),
                "max_workers": 0,
            },
            worker_type: {
                "min_workers": c.min_workers,
                "max_workers": c.max_workers,
                "resources": _resources(c.worker),
                "node_config": _node_config(provider, c.worker, project),
                "worker_setup_commands": install_commands(gpu=c.worker.gpus > 0),
            },
        },
        "head_node_type": head_type,
        # This repository on every node (installed below), and the cluster token: the token file
        # is copied, never written into this spec.
        "file_mounts": {REMOTE_SOURCE: _repo_root(), "~/.ray/auth_token": "~/.ray/auth_token"},
        "rsync_exclude": list(SYNC_EXCLUDES),
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": install_commands(gpu=c.head.gpus > 0),
        "head_start_ray_commands": [
            "ray stop",
            f"ulimit -n 65536; {env} ray start --head --port={GCS_PORT}"
            " --object-manager-port=8076 --autoscaling-config=~/ray_bootstrap_config.yaml"
            f" --dashboard-host={c.dashboard_host} --dashboard-port={DASHBOARD_PORT}",
        ],
        "worker_start_ray_commands": [
            "ray stop",
            f"ulimit -n 65536; {env} ray start --address=$RAY_HEAD_IP:{GCS_PORT}"
            " --object-manager-port=8076",
        ],
    }


def _node_config(provider: str, node: NodeType, project: Project) -> dict[str, Any]:
    c = project.cluster
    defaults = _DEFAULTS[provider]
    instance = node.instance_type or (defaults["gpu"] if node.gpus else defaults["cpu"])
    if provider == "aws":
        config: dict[str, Any] = {
            "InstanceType": instance,
            "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 200}}],
        }
        if c.image and c.image.startswith("ami-"):
            config["ImageId"] = c.image
        return config
    family = "common-cu121" if node.gpus else "common-cpu"
    config = {
        "machineType": instance,
        "disks": [
            {
                "boot": True,
                "autoDelete": True,
                "type": "PERSISTENT",
                "initializeParams": {
                    "diskSizeGb": 200,
                    "sourceImage": c.image
                    or f"projects/deeplearning-platform-release/global/images/family/{family}",
                },
            }
        ],
    }
    if node.gpus:
        config["guestAccelerators"] = [
            {"acceleratorType": c.gpu_type or "nvidia-tesla-t4", "acceleratorCount": node.gpus}
        ]
        config["scheduling"] = [{"onHostMaintenance": "TERMINATE"}]  # GPUs cannot live-migrate
        config["metadata"] = {"items": [{"key": "install-nvidia-driver", "value": "True"}]}
    return config


def _resources(node: NodeType) -> dict[str, int]:
    resources = {"CPU": node.cpus, "GPU": node.gpus}
    if node.memory_gb:
        resources["memory"] = node.memory_gb * 1024**3
    return resources


def _launcher_header(project: Project) -> str:
    name = project.name
    return (
        f"# Ray cluster-launcher config for project {name!r} (by `shipyard cluster spec`).\n"
        f"#   ray up {name}.yaml                      # start (nodes install shipyard's stack)\n"
        f"#   ray dashboard {name}.yaml               # tunnel the dashboard to 127.0.0.1:8265\n"
        f"#   shipyard submit PROJECT.yaml train --address http://127.0.0.1:8265\n"
        "#   ray down <this file>\n"
        "# Needs ~/.ray/auth_token here (created by `shipyard cluster up` or"
        " `ray get-auth-token --generate`); clients use RAY_AUTH_MODE=token.\n"
    )


# -- KubeRay -------------------------------------------------------------------------------------
def kuberay_manifest(project: Project) -> dict[str, Any]:
    """A KubeRay `RayCluster` (ray.io/v1) with a GPU worker group that autoscales."""
    import ray

    c = project.cluster
    image = c.image or f"rayproject/ray:{ray.__version__}-py311-gpu"
    env = [
        {"name": "RAY_AUTH_MODE", "value": "token"},
        {
            "name": "RAY_AUTH_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": _secret_name(project), "key": "auth_token"}},
        },
        *({"name": k, "value": v} for k, v in WORKER_ENV.items()),
    ]
    autoscale = c.max_workers > c.min_workers
    spec: dict[str, Any] = {
        "rayVersion": ray.__version__,
        "enableInTreeAutoscaling": autoscale,
        "headGroupSpec": {
            "rayStartParams": {
                "dashboard-host": c.dashboard_host,
                "num-cpus": str(c.head.cpus),
            },
            "template": {"spec": _pod_spec("ray-head", image, c.head, env, head=True)},
        },
        "workerGroupSpecs": [
            {
                "groupName": "gpu-workers" if c.worker.gpus else "cpu-workers",
                "replicas": c.min_workers,
                "minReplicas": c.min_workers,
                "maxReplicas": c.max_workers,
                "rayStartParams": {},
                "template": {"spec": _pod_spec("ray-worker", image, c.worker, env, head=False)},
            }
        ],
    }
    if autoscale:
        spec["autoscalerOptions"] = {"idleTimeoutSeconds": 600, "upscalingMode": "Default"}
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {
            "name": _k8s_name(project.name),
            "namespace": c.namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "shipyard",
                "shipyard/project": project.name,
            },
        },
        "spec": spec,
    }


def _pod_spec(name: str, image: str, node: NodeType, env: list[dict], head: bool) -> dict[str, Any]:
    memory = f"{node.memory_gb or node.cpus * 4}Gi"
    limits: dict[str, Any] = {"cpu": str(node.cpus), "memory": memory}
    if node.gpus:
        limits["nvidia.com/gpu"] = node.gpus
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "env": copy.deepcopy(env),  # own copies: YAML would otherwise render anchors/aliases
        "resources": {"limits": limits, "requests": dict(limits)},
        # Horovod/NCCL and Ray's object store need more shared memory than a pod's default 64 MB.
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }
    if head:
        container["ports"] = [
            {"containerPort": GCS_PORT, "name": "gcs"},
            {"containerPort": DASHBOARD_PORT, "name": "dashboard"},
            {"containerPort": 10001, "name": "client"},
        ]
    pod: dict[str, Any] = {
        "containers": [container],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}],
    }
    if node.gpus:
        pod["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    return pod


def _kubernetes_header(project: Project) -> str:
    import ray

    name, ns = _k8s_name(project.name), project.cluster.namespace
    steps = "\n".join(f"#   RUN {cmd}" for cmd in install_commands(True, "/opt/shipyard"))
    return (
        f"# KubeRay RayCluster for project {project.name!r}, generated by"
        " `shipyard cluster spec`.\n"
        "# 1. Build an image with this project's stack (as `make install GPU=1`) and set"
        " cluster.image to it:\n"
        f"#   FROM rayproject/ray:{ray.__version__}-py311-gpu  (with CUDA toolkit, NCCL headers)\n"
        "#   COPY . /opt/shipyard\n"
        f"{steps}\n"
        "# 2. Store the cluster token (never in this file):\n"
        f"#   kubectl -n {ns} create secret generic {_secret_name(project)}"
        " --from-file=auth_token=$HOME/.ray/auth_token\n"
        f"# 3. kubectl apply -f <this file>; kubectl -n {ns} port-forward"
        f" svc/{name}-head-svc 8265:8265\n"
        "#    shipyard submit PROJECT.yaml train --address http://127.0.0.1:8265\n"
    )


def _secret_name(project: Project) -> str:
    return f"{_k8s_name(project.name)}-ray-token"


def _k8s_name(name: str) -> str:
    """Kubernetes names: lowercase letters, digits and dashes, at most 63 characters."""
    cleaned = "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-")
    return cleaned[:50] or "shipyard"


# -- shared --------------------------------------------------------------------------------------
def _check_counts(project: Project) -> None:
    c = project.cluster
    if c.max_workers < c.min_workers:
        raise UserInputError(
            f"cluster.max_workers: must be >= cluster.min_workers ({c.min_workers})"
            f" (got {c.max_workers})"
        )
    if c.worker.gpus == 0 and project.training.use_gpu:
        raise UserInputError(
            "cluster.worker.gpus: must be >= 1 when training.use_gpu is true (got 0)"
        )


def _env_prefix() -> str:
    pairs = {"RAY_AUTH_MODE": "token", **WORKER_ENV}
    return " ".join(f"{k}={v}" for k, v in pairs.items())


def _repo_root() -> str:
    """The shipyard source tree next to this package (what `pip install -e` installs on nodes)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
