"""Jobs on a real local cluster through Ray's Jobs API: `ray job` and shipyard see the same."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from shipyard.cli import main
from shipyard.cluster import auth, client_env, jobs, network

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "horovod_keras_mnist_like.py"
RAY = str(Path(sys.executable).parent / "ray")

pytestmark = pytest.mark.multinode


def ray_cli(*args: str, timeout: float = 120) -> str:
    """Ray's own CLI, as a user would run it (token mode on, token from RAY_AUTH_TOKEN)."""
    done = subprocess.run(
        [RAY, *args], env=auth.client_env(), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def submitted_id(out: str) -> str:
    match = re.search(r"submitted job (\S+) to ", out)
    assert match, out
    return match.group(1)


def test_ray_job_submit_shows_up_in_shipyard(local_cluster, capsys):
    job_id = f"raycli-{uuid.uuid4().hex[:8]}"
    url = local_cluster.dashboard_url
    ray_cli(
        *f"job submit --address {url} --submission-id {job_id} --".split(),
        "python",
        "-c",
        "print('hello from ray job submit')",
    )
    # No --address: the cluster recorded by `cluster up` is the default.
    assert main(["jobs", "list"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if job_id in line)
    assert "SUCCEEDED" in line
    assert main(["jobs", "status", job_id]) == 0
    assert "status:     SUCCEEDED" in capsys.readouterr().out
    assert main(["jobs", "logs", job_id]) == 0
    out = capsys.readouterr().out
    assert "hello from ray job submit" in out
    # The Jobs API's own lines show only with --verbose.
    assert f"Running entrypoint for job {job_id}" not in out
    assert main(["jobs", "logs", job_id, "--verbose"]) == 0
    out = capsys.readouterr().out
    assert f"Running entrypoint for job {job_id}" in out and "hello from ray job submit" in out


def test_horovod_script_job_runs_two_ranks_and_ray_sees_it(local_cluster, tmp_path, capsys):
    ranks = tmp_path / "ranks"
    started = time.monotonic()
    argv = ["submit", "--script", str(EXAMPLE), "--workers", "2"]
    code = main([*argv, "--", "--epochs", "1", "--rank-dir", str(ranks)])
    seconds = time.monotonic() - started
    out = capsys.readouterr().out
    assert code == 0, out
    assert "rank 0/2 done" in out and "rank 1/2 done" in out
    assert "SUCCEEDED" in out
    records = [json.loads(p.read_text()) for p in sorted(ranks.glob("rank-*.json"))]
    assert [(r["rank"], r["size"]) for r in records] == [(0, 2), (1, 2)]
    assert records[0]["loss"] == pytest.approx(records[1]["loss"])  # one model, averaged metrics

    job_id = submitted_id(out)
    listing = ray_cli("job", "list", "--address", local_cluster.dashboard_url)
    assert job_id in listing
    logs = ray_cli("job", "logs", job_id, "--address", local_cluster.dashboard_url)
    assert "rank 1/2 done" in logs
    print(f"2-rank Horovod job: {seconds:.1f}s")


ARGV_SCRIPT = """\
import json, sys
with open(sys.argv[-1], "w") as handle:
    json.dump(sys.argv[1:], handle)
print("argv written")
"""


def test_everything_after_double_dash_reaches_the_script(local_cluster, tmp_path, capsys):
    script = tmp_path / "argv.py"
    script.write_text(ARGV_SCRIPT)
    out_file = tmp_path / "argv.json"
    script_args = ["--data.dir", "/x", "--training.workers=3", "--verbose", str(out_file)]
    assert main(["submit", "--script", str(script), "--workers", "1", "--", *script_args]) == 0
    assert json.loads(out_file.read_text()) == script_args  # none taken as shipyard's own
    captured = capsys.readouterr()
    out = captured.out
    # What runs where and where to look next, in shipyard's words; none of Ray's bookkeeping.
    job_id = submitted_id(out)
    assert f"runs:    argv.py {' '.join(script_args)} on 1 Horovod worker(s) × 1 CPU" in out
    assert f"follow:  shipyard jobs logs {job_id} --follow" in out
    assert re.search(rf"job {job_id} SUCCEEDED after \d+\.\ds", out), out
    assert "argv written" in out
    for noise in ("Running entrypoint for job", "INFO job_manager.py", "Uploading package"):
        assert noise not in captured.out + captured.err, noise


def test_a_project_job_carries_the_submitting_checkouts_commit(
    local_cluster, tmp_path, monkeypatch, capsys
):
    monkeypatch.delenv("SHIPYARD_SOURCE_COMMIT", raising=False)
    folder = tmp_path / "checkout"
    folder.mkdir()
    project = folder / "tiny.yaml"
    project.write_text("name: tiny\ndata:\n  synthetic: {rows: 200, seed: 1}\n")

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout.strip()

    git("init", "-q")
    git("add", "tiny.yaml")
    git("commit", "-q", "-m", "tiny")
    head = git("rev-parse", "HEAD")
    project.write_text(project.read_text() + "# an uncommitted change\n")

    argv = ["--verbose", "submit", str(project), "train", "--no-wait", "--skip-preflight"]
    assert main(argv) == 0
    job_id = submitted_id(capsys.readouterr().out)
    try:
        env_vars = (
            jobs.dashboard.job_client(local_cluster.dashboard_url)
            .get_job_info(job_id)
            .runtime_env["env_vars"]
        )
    finally:
        jobs.stop_job(job_id)
    assert json.loads(env_vars["SHIPYARD_SOURCE_COMMIT"]) == {"commit": head, "dirty": True}
    assert env_vars["SHIPYARD_VERBOSE"] == "1"  # --verbose travels with the job
    assert env_vars["RAY_TRAIN_V2_ENABLED"] == "0"


def test_failing_script_exits_1(local_cluster, tmp_path, capsys):
    script = tmp_path / "broken.py"
    script.write_text("import horovod.tensorflow as hvd\nhvd.init()\nraise SystemExit(3)\n")
    assert main(["submit", "--script", str(script), "--workers", "1"]) == 1
    captured = capsys.readouterr()
    assert "broken.py exited with 3" in captured.out
    assert "FAILED" in captured.err


def test_stop_a_running_job_and_unknown_ids(local_cluster, capsys):
    job_id = f"sleeper-{uuid.uuid4().hex[:8]}"
    url = local_cluster.dashboard_url
    ray_cli(
        *f"job submit --no-wait --address {url} --submission-id {job_id} --".split(),
        "python",
        "-c",
        "import time; time.sleep(300)",
    )
    assert main(["jobs", "stop", job_id]) == 0
    assert "status:     STOPPED" in capsys.readouterr().out
    assert main(["jobs", "stop", job_id]) == 0
    out = capsys.readouterr().out
    assert f"job {job_id} had already ended; nothing to stop" in out and "STOPPED" in out
    assert main(["jobs", "logs", "raysubmit_doesnotexist"]) == 2
    assert "raysubmit_doesnotexist" in capsys.readouterr().err


def test_preflight_refuses_a_job_that_never_fits(local_cluster, capsys):
    before = len(jobs.list_jobs())
    assert main(["submit", "--script", str(EXAMPLE), "--workers", "3"]) == 2
    err = capsys.readouterr().err
    assert "can never be scheduled" in err
    assert "3 workers × 1 CPU = 3 CPU" in err and "2 nodes (1 CPU)" in err
    assert len(jobs.list_jobs()) == before  # nothing was submitted


@pytest.mark.slow
def test_project_job_ships_the_folder_and_writes_outputs_home(local_cluster, tmp_path, capsys):
    folder = tmp_path / "proj"
    (folder / "outputs").mkdir(parents=True)
    (folder / "outputs" / "old.txt").write_text("left at home")
    with open(folder / "blob.bin", "wb") as handle:  # sparse: large to stat, cheap to make
        handle.truncate((jobs.LARGE_FILE_MB + 1) * 1024 * 1024)
    (folder / "tiny.yaml").write_text(
        "name: tiny\ndata:\n  synthetic: {rows: 300, seed: 3}\n  vocab_size: 200\n"
        "  sequence_length: 8\n",
        encoding="utf-8",
    )
    code = main(["submit", str(folder / "tiny.yaml"), "prepare", "--data.seed", "5"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "not shipped (over 20 MB): blob.bin" in out
    job = jobs.job_status(submitted_id(out))
    assert job.status == "SUCCEEDED"
    assert job.entrypoint.startswith("shipyard data prepare tiny.yaml --data.seed 5 --workdir ")
    assert "--cluster.address auto" in job.entrypoint
    # Outputs land in the project's own folder, not in the job's temporary copy.
    manifests = list((folder / ".shipyard" / "tiny").rglob("manifest*.json"))
    assert manifests, sorted(p.name for p in folder.rglob("*"))


def test_nothing_listening_fails_fast(isolated_state, free_port, capsys):
    address = f"http://127.0.0.1:{free_port}"
    for argv in (
        ["jobs", "list", "--address", address],
        ["submit", "--script", str(EXAMPLE), "--workers", "2", "--address", address],
    ):
        started = time.monotonic()
        assert main(argv) == 2
        assert time.monotonic() - started < 10
        err = capsys.readouterr().err
        assert f"no Ray dashboard at {address}" in err and "shipyard cluster up" in err


def test_address_resolution_order(isolated_state, monkeypatch, tmp_path, capsys):
    project_file = tmp_path / "p.yaml"
    project_file.write_text(
        "name: p\ndata: {synthetic: {rows: 10}}\ncluster: {address: '10.1.2.3:6379'}\n"
    )
    from shipyard.project import load_project

    project = load_project(project_file)
    assert jobs.resolve_address(None, project) == "http://10.1.2.3:8265"
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:1111/")
    assert jobs.resolve_address(None, project) == "http://127.0.0.1:1111"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "127.0.0.1:2222")
    assert jobs.resolve_address(None, project) == "http://127.0.0.1:2222"
    assert jobs.resolve_address("http://127.0.0.1:3333", project) == "http://127.0.0.1:3333"
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS")
    monkeypatch.delenv("RAY_ADDRESS")
    with pytest.raises(Exception, match="shipyard cluster up"):
        jobs.resolve_address(None, None)


def test_excludes_leave_environments_outputs_and_large_files_home(tmp_path):
    (tmp_path / ".venv" / "lib").mkdir(parents=True)
    with open(tmp_path / ".venv" / "lib" / "big.so", "wb") as handle:
        handle.truncate(50 * 1024 * 1024)
    with open(tmp_path / "data.parquet", "wb") as handle:
        handle.truncate(30 * 1024 * 1024)
    (tmp_path / "train.py").write_text("print(1)\n")
    patterns, large = jobs._excludes(tmp_path)
    assert large == ["data.parquet"]
    assert "/data.parquet" in patterns
    assert {".venv/", ".git/", ".shipyard/", "outputs/", "mlruns/"} <= set(patterns)


def test_a_serve_job_runs_shipyard_serve_on_the_cluster(local_cluster, tmp_path, capsys):
    # Nothing registered yet: the job's `shipyard serve` resolves the champion in the project's
    # registry on the cluster and fails there with the registry's message, which comes home.
    (tmp_path / "tiny.yaml").write_text(
        "name: tiny\ndata:\n  synthetic: {rows: 300, seed: 3}\n", encoding="utf-8"
    )
    assert main(["submit", str(tmp_path / "tiny.yaml"), "serve"]) == 1
    captured = capsys.readouterr()
    job = jobs.job_status(submitted_id(captured.out))
    assert job.status == "FAILED"
    assert job.entrypoint.startswith("shipyard serve tiny.yaml --workdir ")
    assert "--cluster.address auto" in job.entrypoint
    assert "model 'tiny' has no" in captured.out + captured.err


def test_a_serve_job_deploys_the_champion_and_it_outlives_the_job(local_cluster, tmp_path, capsys):
    """With a champion registered, the job deploys it on the cluster and returns; the service
    answers from the cluster afterwards, and `serve down` from here stops it."""
    import requests
    from trained_models import train_in_process

    from shipyard.corpus.manifest import PreparedCorpus
    from shipyard.project import load_project
    from shipyard.training.publish import publish

    (port,) = network.free_ports(1)
    file = tmp_path / "served.yaml"
    file.write_text(
        "name: served\n"
        "data:\n  synthetic: {rows: 300, seed: 3}\n  vocab_size: 400\n  sequence_length: 12\n"
        "model: {kind: lstm_classifier, embedding_dim: 8, units: 8}\n"
        "training: {epochs: 1, batch_size: 32}\n"
        f"serving: {{port: {port}, min_replicas: 1, max_replicas: 1, replica_cpus: 0.5}}\n",
        encoding="utf-8",
    )
    project = load_project(file)
    assert main(["submit", str(file), "prepare"]) == 0  # the corpus is prepared on the cluster
    capsys.readouterr()
    corpus = PreparedCorpus.load(project.corpus_dir)
    version = publish(project, train_in_process(project, corpus, tmp_path / "run").result).version
    try:
        assert main(["submit", str(file), "serve"]) == 0
        out = capsys.readouterr().out
        assert jobs.job_status(submitted_id(out)).status == "SUCCEEDED"
        reply = requests.post(
            f"http://127.0.0.1:{port}/v1/predict", json={"inputs": ["see you at lunch"]}, timeout=60
        )
        assert reply.status_code == 200, reply.text
        (answer,) = reply.json()["predictions"]
        assert answer["model"]["version"] == version.version and answer["model"]["name"] == "served"
    finally:
        # As a user would, from a shell that ran `eval "$(shipyard cluster env)"`.
        env = {**auth.client_env(), **client_env.client_env(local_cluster)}
        down = subprocess.run(
            [str(Path(sys.executable).parent / "shipyard"), "serve", "down", str(file)],
            env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert down.returncode == 0, down.stdout + down.stderr
    try:  # the app is gone; Serve's proxy may stay up and answer 404 for every route
        after = requests.post(
            f"http://127.0.0.1:{port}/v1/predict", json={"inputs": ["x"]}, timeout=30
        ).status_code
    except requests.ConnectionError:
        after = None
    assert after in (None, 404), after
