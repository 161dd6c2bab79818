"""Cluster specs: launcher YAML valid for Ray's own schema; KubeRay manifest well formed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from shipyard.cli import main
from shipyard.cluster import doctor, horovod_build, spec

REPO = Path(__file__).resolve().parents[2]

PROJECT = """\
name: gpu-demo
data:
  synthetic: {rows: 100}
training:
  workers: 4
  use_gpu: true
cluster:
  provider: aws
  head: {instance_type: m5.xlarge, cpus: 4, gpus: 0}
  worker: {instance_type: g5.xlarge, cpus: 4, gpus: 1, memory_gb: 16}
  min_workers: 1
  max_workers: 4
  gcp_project: my-project
"""


@pytest.fixture
def project_file(tmp_path):
    path = tmp_path / "project.yaml"
    path.write_text(PROJECT, encoding="utf-8")
    return path


def ray_schema() -> dict:
    path = os.path.join(os.path.dirname(ray.__file__), "autoscaler", "ray-schema.json")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


@pytest.mark.parametrize("provider", ["aws", "gcp"])
def test_launcher_yaml_validates_against_rays_schema(project_file, tmp_path, provider):
    out = tmp_path / f"{provider}.yaml"
    argv = ["cluster", "spec", str(project_file), "--provider", provider, "--out", str(out)]
    assert main(argv) == 0
    config = yaml.safe_load(out.read_text(encoding="utf-8"))
    jsonschema.validate(config, ray_schema())

    nodes = config["available_node_types"]
    worker = nodes["gpu_worker"]
    assert worker["resources"] == {"CPU": 4, "GPU": 1, "memory": 16 * 1024**3}
    assert (worker["min_workers"], worker["max_workers"]) == (1, 4)
    assert config["max_workers"] == 4
    assert nodes[config["head_node_type"]]["resources"] == {"CPU": 4, "GPU": 0}
    # GPU workers build Horovod with NCCL; the CPU-only head must not (no CUDA to build with).
    assert any("HOROVOD_GPU_OPERATIONS=NCCL" in c for c in worker["worker_setup_commands"])
    assert not any("NCCL" in c for c in config["head_setup_commands"])
    assert any("--no-build-isolation" in c for c in config["head_setup_commands"])
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "RAY_AUTH_MODE=token" in head_start and "RAY_TRAIN_V2_ENABLED=0" in head_start
    if provider == "aws":
        assert worker["node_config"]["InstanceType"] == "g5.xlarge"
    else:
        assert worker["node_config"]["guestAccelerators"][0]["acceleratorCount"] == 1
        assert config["provider"]["project_id"] == "my-project"


def make_value(variable: str, *args: str) -> str:
    """A variable of the real Makefile, as make itself expands it."""
    done = subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(REPO),
            *args,
            "--eval",
            f"print-var: ; @echo '$({variable})'",
            "print-var",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("gpu", [False, True])
def test_horovod_build_flags_have_one_source(gpu):
    flags = horovod_build.flags(gpu)
    assert flags["HOROVOD_WITH_TENSORFLOW"] == "1" and flags["HOROVOD_WITH_GLOO"] == "1"
    assert ("HOROVOD_GPU_OPERATIONS" in flags) is gpu
    # make install, the cluster spec's node setup and the doctor's fix all use the same flags.
    assert make_value("HOROVOD_ENV", f"GPU={int(gpu)}") == horovod_build.env_prefix(gpu)
    setup = spec.install_commands(gpu)
    assert any(c.startswith(horovod_build.env_prefix(gpu) + " python3 -m pip") for c in setup)
    assert horovod_build.env_prefix() in doctor.horovod_fix()
    # ... and nobody spells them out a second time.
    for path in ("Makefile", "cluster/spec.py", "cluster/doctor.py"):
        assert "HOROVOD_WITH_GLOO" not in (REPO / path).read_text(encoding="utf-8"), path


def test_a_malformed_flag_line_is_named(tmp_path):
    bad = tmp_path / "flags.env"
    bad.write_text("# ok\nHOROVOD_WITH_GLOO=1 # trailing comment\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"flags.env:2: expected NAME=VALUE"):
        horovod_build.read_flags(bad)


def test_kuberay_manifest(project_file, capsys):
    assert main(["cluster", "spec", str(project_file), "--provider", "kubernetes"]) == 0
    text = capsys.readouterr().out
    manifest = yaml.safe_load(text)
    assert manifest["apiVersion"] == "ray.io/v1"
    assert manifest["kind"] == "RayCluster"
    assert manifest["metadata"]["name"] == "gpu-demo"
    cluster = manifest["spec"]
    assert cluster["rayVersion"] == ray.__version__
    assert cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    head_container = head["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head_container["resources"]["limits"]
    (group,) = cluster["workerGroupSpecs"]
    assert (group["minReplicas"], group["maxReplicas"], group["replicas"]) == (1, 4, 1)
    container = group["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["limits"]["memory"] == "16Gi"
    env = {e["name"]: e for e in container["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    # The token comes from a Secret, never from the manifest.
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "gpu-demo-ray-token"
    assert "value" not in env["RAY_AUTH_TOKEN"]
    assert "&id" not in text  # no YAML anchors: plain manifests for kubectl and humans


def test_gcp_needs_a_project(project_file, capsys):
    text = PROJECT.replace("  gcp_project: my-project\n", "")
    project_file.write_text(text, encoding="utf-8")
    assert main(["cluster", "spec", str(project_file), "--provider", "gcp"]) == 2
    assert "cluster.gcp_project" in capsys.readouterr().err


def test_bad_provider_and_counts(project_file, capsys):
    assert main(["cluster", "spec", str(project_file), "--provider", "azure"]) == 2
    args = ["cluster", "spec", str(project_file), "--cluster.max_workers", "0"]
    assert main(args) == 2
    assert "cluster.max_workers" in capsys.readouterr().err
