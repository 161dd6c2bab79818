"""The embedded Ray that `connect` starts: what its workers inherit from shipyard."""

from __future__ import annotations

import os

import pytest

from shipyard.cluster import runtime


@pytest.fixture
def embedded(monkeypatch):
    import ray

    if ray.is_initialized():
        ray.shutdown()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(runtime.NICENESS_VAR, raising=False)
    runtime.connect(num_cpus=1, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_workers_run_at_the_drivers_priority_not_rays_15(embedded):
    ray = embedded

    # Defined here, not at module level: Ray ships them by value (workers cannot import tests).
    @ray.remote
    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, 0)

    @ray.remote
    class Probe:
        def niceness(self) -> int:
            return os.getpriority(os.PRIO_PROCESS, 0)

    assert ray.get(niceness.remote()) == 0
    assert ray.get(Probe.remote().niceness.remote()) == 0
    # Ray's own default is still one option away, for work that should yield.
    ray_default = niceness.options(runtime_env={"env_vars": {runtime.NICENESS_VAR: "15"}})
    assert ray.get(ray_default.remote()) == 15


def test_the_environments_niceness_wins(monkeypatch):
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    monkeypatch.setenv(runtime.NICENESS_VAR, "10")
    assert runtime._env_vars_not_set_by_job()[runtime.NICENESS_VAR] == "10"
    monkeypatch.delenv(runtime.NICENESS_VAR)
    assert runtime._env_vars_not_set_by_job()[runtime.NICENESS_VAR] == "0"


def test_a_submitted_jobs_own_env_vars_are_not_repeated(monkeypatch):
    # Ray refuses a key that both the job and ray.init set, even with equal values.
    job = '{"runtime_env": {"env_vars": {"RAY_TRAIN_V2_ENABLED": "0"}}}'
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", job)
    monkeypatch.delenv(runtime.NICENESS_VAR, raising=False)
    env = runtime._env_vars_not_set_by_job()
    assert "RAY_TRAIN_V2_ENABLED" not in env and env[runtime.NICENESS_VAR] == "0"


def test_importing_the_cluster_package_changes_no_environment():
    import json
    import subprocess
    import sys

    code = (
        "import json, os; before = dict(os.environ);"
        " import shipyard.cluster, shipyard.cluster.runtime, shipyard.cluster.jobs,"
        " shipyard.cluster.local;"
        " changed = sorted(k for k in set(before) | set(os.environ)"
        "                  if before.get(k) != os.environ.get(k));"
        " from shipyard.cluster.runtime import WORKER_ENV, ensure_train_v1; ensure_train_v1();"
        " print(json.dumps([changed, os.environ['RAY_TRAIN_V2_ENABLED']]))"
    )
    env = {k: v for k, v in os.environ.items() if k not in runtime.WORKER_ENV}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    changed, v2 = json.loads(done.stdout.strip().splitlines()[-1])
    assert changed == []  # importing selects nothing ...
    assert v2 == "0"  # ... the explicit call does


def test_an_embedded_cluster_runs_the_dashboard_only_when_asked(monkeypatch):
    """Off by default (one process fewer on a small machine); `dashboard_port` starts it on
    loopback, where its page answers (its API wants Ray's token, the page asks for it)."""
    import urllib.request

    import ray

    from shipyard.cluster.network import free_ports

    if ray.is_initialized():
        ray.shutdown()
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    (port,) = free_ports(1)
    runtime.connect(num_cpus=1, log_to_driver=False, dashboard_port=port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as page:
            assert page.status == 200 and b"<html" in page.read()
    finally:
        ray.shutdown()
