"""`shipyard lineage`: the chain behind a registered version, read from the registry and the
manifests, for a version trained directly, one a sweep promoted, one whose corpus merged feedback
and one whose manifest has been deleted since.

The versions are registrations of the session's in-process LSTM run (`text_run`) in a fresh
workdir; the sweep's runs are written by the sweep's own tracking code (`tuning.tracking`)."""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from types import SimpleNamespace
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from export_helpers import compressed_export, fresh_workdir
from trained_models import TEXT_PROJECT

from shipyard.cli import main
from shipyard.corpus.manifest import MANIFEST, PreparedCorpus
from shipyard.errors import UserInputError
from shipyard.project import Project
from shipyard.source_commit import SourceCommit
from shipyard.training import model_versions as versions
from shipyard.training.checkpoint import read_state
from shipyard.training.lineage import format_lineage, lineage
from shipyard.training.mlflow_store import client
from shipyard.training.run_logging import log_run
from shipyard.tuning import tracking

pytestmark = pytest.mark.slow

COMMIT = SourceCommit("c0ffee1234" * 4, dirty=False)
SWEEP, TRIAL = "sweep-lineage", "TorchTrainer_7a3f0_00002"


@dataclasses.dataclass
class Chain:
    project: Project
    workdir: str
    direct: versions.RegisteredVersion  # version 1, champion
    swept: versions.RegisteredVersion  # promoted by a sweep
    fed: versions.RegisteredVersion  # its corpus merged a feedback batch
    fed_corpus: PreparedCorpus
    feedback_batch: str
    gone: versions.RegisteredVersion  # its manifest was deleted after registering
    rebuilt: versions.RegisteredVersion  # its corpus folder holds another corpus now
    sweep_parent: str

    def cli(self, *args: str) -> int:
        return main(["lineage", self.project.source_file, "--workdir", self.workdir, *args])


@pytest.fixture(scope="module")
def chain(text_run, tmp_path_factory, session_project_factory):
    workdir = tmp_path_factory.mktemp("lineage")
    project = fresh_workdir(text_run.project, workdir)
    export = compressed_export(text_run, tmp_path_factory)
    state = read_state(text_run.result.checkpoint)

    def register(result):
        run = log_run(project, result, export, state=state, source=COMMIT)
        return versions.register_version(project, run)

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        direct = register(text_run.result)

        # A sweep's promotion, as tuning.driver.finish records it: the promoted run is named
        # <sweep>-<trial>, its parent is the sweep's run, which names the best trial.
        swept = register(dataclasses.replace(text_run.result, run_name=f"{SWEEP}-{TRIAL}"))
        trial = SimpleNamespace(
            trial_id=TRIAL,
            state="done",
            error=None,
            values={"training.learning_rate": 0.01, "model.units": 12},
            history=[{"epoch": 1, "val_accuracy": 0.9, "timestamp": 1.0}],
            score=lambda metric: 0.9,
        )
        goals = [("val_accuracy", "max")]
        parent = tracking.parent_run(project, str(workdir / "sweeps" / SWEEP), SWEEP)
        tracking.log_trials(project, parent, [trial], goals)
        client(project).set_tag(swept.run_id, "mlflow.parentRunId", parent)
        tracking.finish_parent(project, parent, trial, goals, [])

        # A corpus prepared by the real pipeline with a feedback batch merged in.
        batch = tmp_path_factory.mktemp("feedback") / "feedback-20250101T000000-0001.parquet"
        pq.write_table(
            pa.table(
                {
                    "text": ["claim your free prize today", "lunch at noon?", "win cash now!!"],
                    "label": ["spam", "ham", "spam"],
                    "feedback_id": ["a", "b", "c"],
                }
            ),
            batch,
        )
        from shipyard.corpus.prepare import prepare

        fed_project = session_project_factory({**TEXT_PROJECT, "name": "tiny_fed"})
        fed_corpus = prepare(fed_project, extra_sources=[str(batch)]).corpus
        fed = register(dataclasses.replace(text_run.result, corpus=fed_corpus, run_name="fed"))

        # A corpus whose folder is deleted after the version is registered.
        folder = tmp_path_factory.mktemp("gone") / "corpus"
        folder.mkdir()
        shutil.copy(os.path.join(text_run.corpus.path, MANIFEST), folder / MANIFEST)
        gone_corpus = PreparedCorpus(str(folder), text_run.corpus.manifest)
        gone = register(dataclasses.replace(text_run.result, corpus=gone_corpus, run_name="gone"))
        shutil.rmtree(folder)

        # A corpus folder rebuilt after the version was registered: its manifest is another's.
        folder = tmp_path_factory.mktemp("rebuilt") / "corpus"
        folder.mkdir()
        shutil.copy(os.path.join(text_run.corpus.path, MANIFEST), folder / MANIFEST)
        old = PreparedCorpus(str(folder), text_run.corpus.manifest)
        rebuilt = register(dataclasses.replace(text_run.result, corpus=old, run_name="rebuilt"))
        shutil.copy(os.path.join(fed_corpus.path, MANIFEST), folder / MANIFEST)

        yield Chain(
            project, str(workdir), direct, swept, fed, fed_corpus, str(batch), gone, rebuilt, parent
        )


def test_champion_chain_is_read_from_the_registry_and_manifest(chain, text_run, capsys):
    corpus = text_run.corpus
    mlc = client(chain.project)
    run = mlc.get_run(chain.direct.run_id)

    lin = lineage(chain.project)  # default: the champion
    assert (lin.version, lin.uri) == (1, chain.direct.uri)
    assert "champion" in lin.aliases
    assert lin.corpus.read_from == "manifest"
    assert lin.corpus.content_hash == lin.corpus.manifest_content_hash == corpus.content_hash
    assert [(s.path, s.sha256) for s in lin.corpus.sources] == [
        (s["path"], s["sha256"]) for s in corpus.manifest["sources"]
    ]
    assert lin.corpus.extra_sources == []  # recorded: none merged
    assert lin.run.run_id == chain.direct.run_id
    assert lin.run.source_commit == run.data.tags["source_commit"] == COMMIT.commit
    assert lin.run.workers == int(run.data.params["training.workers"])
    assert lin.run.params["model.kind"] == "lstm_classifier"
    assert lin.sweep is None
    assert lin.metrics == run.data.metrics
    assert lin.serving.state == "not served"

    assert chain.cli() == 0
    out = capsys.readouterr().out
    assert out.rstrip() == format_lineage(lin)
    print(out)  # shown with -s: what a person reads
    lines = out.splitlines()
    assert lines[0].startswith(f"models:/{chain.project.registered_model_name}/1")
    assert _row(lines, "aliases").split(", ") == lin.aliases
    assert _row(lines, "content") == corpus.content_hash
    source = corpus.manifest["sources"][0]
    assert source["sha256"] in _row(lines, "sources")
    assert source["path"] in _row(lines, "sources")
    assert _row(lines, "feedback") == "none merged"
    assert _row(lines, "run").split()[0] == chain.direct.run_id
    assert _row(lines, "commit") == COMMIT.commit
    assert _row(lines, "nodes") == "not recorded by the run"
    assert "none (not promoted by a sweep)" in out
    assert _row(lines, "val_accuracy") == f"{run.data.metrics['val_accuracy']:.4f}"
    assert _row(lines, "now") == "not served (no serve.json)"


def test_json_has_the_chain(chain, text_run, capsys):
    assert chain.cli("1", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert {
        "name",
        "version",
        "aliases",
        "corpus",
        "run",
        "sweep",
        "metrics",
        "serving",
    } <= set(data)
    assert data["version"] == 1 and "champion" in data["aliases"]
    assert data["corpus"]["content_hash"] == text_run.corpus.content_hash
    assert data["corpus"]["manifest_content_hash"] == text_run.corpus.content_hash
    assert (
        data["corpus"]["sources"][0]["sha256"] == text_run.corpus.manifest["sources"][0]["sha256"]
    )
    assert data["run"]["run_id"] == chain.direct.run_id
    assert data["run"]["source_commit"] == COMMIT.commit
    assert data["sweep"] is None
    assert data["metrics"]["test_accuracy"] == pytest.approx(
        text_run.result.metrics["test_accuracy"]
    )
    assert data["serving"]["state"] == "not served"


def test_a_sweep_promoted_version_names_its_sweep_and_trial(chain, capsys):
    name = chain.project.registered_model_name
    lin = lineage(chain.project, f"{name}:{chain.swept.version}")
    assert lin.sweep is not None
    assert (lin.sweep.name, lin.sweep.parent_run_id, lin.sweep.trial_id) == (
        SWEEP,
        chain.sweep_parent,
        TRIAL,
    )
    trial_run = client(chain.project).get_run(lin.sweep.trial_run_id)
    assert trial_run.data.tags["shipyard.trial_id"] == TRIAL
    assert lin.sweep.trial_state == "done"
    assert lin.sweep.trial_values == {"model.units": "12", "training.learning_rate": "0.01"}
    assert "champion" not in lin.aliases

    assert chain.cli(f"{name}/{chain.swept.version}") == 0
    lines = capsys.readouterr().out.splitlines()
    assert _row(lines, "sweep").startswith(f"{SWEEP}  run {chain.sweep_parent}")
    assert _row(lines, "trial").startswith(f"{TRIAL}  run {lin.sweep.trial_run_id}")
    assert _row(lines, "aliases") == "-"


def test_merged_feedback_batches_come_from_the_manifest(chain, capsys):
    lin = lineage(chain.project, str(chain.fed.version))
    manifest = chain.fed_corpus.manifest
    assert lin.corpus.content_hash == manifest["content_hash"]
    [batch] = lin.corpus.feedback
    [recorded] = manifest["extra_sources"]
    assert (batch.path, batch.sha256, batch.bytes) == (
        recorded["path"],
        recorded["sha256"],
        recorded["bytes"],
    )
    assert batch.path == chain.feedback_batch
    assert lin.corpus.extra_rows == manifest["counts"]["extra_rows"]

    assert chain.cli(str(chain.fed.version)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert recorded["sha256"] in _row(lines, "feedback")
    assert chain.feedback_batch in _row(lines, "feedback")
    assert _row(lines, "content") == manifest["content_hash"]


def test_a_deleted_manifest_is_reported_missing_not_a_crash(chain, capsys):
    version = str(chain.gone.version)
    lin = lineage(chain.project, version)
    # The file is gone; the copy logged with the run still says what the corpus held.
    assert lin.corpus.read_from == "run copy"
    assert (lin.corpus.manifest_state, lin.corpus.run_copy_state) == ("missing", "ok")
    assert lin.corpus.manifest_content_hash == lin.corpus.content_hash

    # Without that copy either, the corpus is missing and the rest of the chain still prints.
    artifacts = client(chain.project).get_run(chain.gone.run_id).info.artifact_uri
    os.unlink(os.path.join(urlparse(artifacts).path, "corpus", MANIFEST))
    lin = lineage(chain.project, version)
    assert lin.corpus.read_from is None and lin.corpus.sources == []
    assert lin.corpus.run_copy_state.startswith("missing")
    assert lin.corpus.content_hash == chain.gone.tags["corpus_content_hash"]
    assert chain.cli(version) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert _row(lines, "manifest") == f"{chain.gone.tags['corpus_manifest']}: missing"
    assert "the copy logged with the run: missing" in out
    assert _row(lines, "content") == chain.gone.tags["corpus_content_hash"]
    assert _row(lines, "run").split()[0] == chain.gone.run_id


def test_a_rebuilt_corpus_is_not_taken_for_the_versions(chain, text_run, capsys):
    lin = lineage(chain.project, str(chain.rebuilt.version))
    assert lin.corpus.manifest_state.startswith("rebuilt since")
    assert chain.fed_corpus.content_hash[:12] in lin.corpus.manifest_state
    assert lin.corpus.read_from == "run copy"
    assert lin.corpus.manifest_content_hash == text_run.corpus.content_hash
    assert [s.sha256 for s in lin.corpus.sources] == [
        s["sha256"] for s in text_run.corpus.manifest["sources"]
    ]
    assert chain.cli(str(chain.rebuilt.version)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert _row(lines, "content") == text_run.corpus.content_hash
    assert "rebuilt since" in _row(lines, "manifest")


def test_unknown_references_exit_2_with_the_registry_message(chain, capsys):
    name = chain.project.registered_model_name
    for ref, message in [
        (f"{name}:99", "has no version 99"),
        (f"{name}@nobody", "no version with alias 'nobody'"),
        (f"{name}:x", "with a number"),
    ]:
        assert chain.cli(ref) == 2, ref
        assert message in capsys.readouterr().err, ref
        with pytest.raises(UserInputError, match=message):
            lineage(chain.project, ref)


def test_serving_is_read_from_the_marker_and_the_service(chain):
    """The marker a foreground `shipyard serve` writes, and the service's own `/v1/model`
    (answered here by a stand-in HTTP server: lineage asks nothing else of the service)."""
    marker = chain.project.workdir_path / "serve.json"
    name = chain.project.registered_model_name

    class Model(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # the stdlib calls it by this name
            arm = {"name": name, "version": 1, "variant": "full"}
            body = {"champion": arm, "challenger": None, "challenger_percent": 0.0}
            if self.path != "/v1/model":
                self.send_error(404)
                return
            payload = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Model)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/"
    try:
        marker.write_text(json.dumps({"pid": os.getpid(), "app": "tiny_text", "url": url}))
        served = lineage(chain.project).serving
        assert served.state == "served"
        assert [(a.role, a.percent) for a in served.arms] == [("champion", 100.0)]
        assert served.summary == f"app 'tiny_text' at {url} as champion (100% of traffic)"
        other = lineage(chain.project, str(chain.swept.version)).serving
        assert other.state == "not served" and f"models:/{name}/1" in other.summary

        server.shutdown()
        server.server_close()
        assert lineage(chain.project).serving.state == "not reachable"

        done = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            check=True,
            capture_output=True,
            text=True,
        )
        marker.write_text(json.dumps({"pid": int(done.stdout), "app": "tiny_text", "url": url}))
        stale = lineage(chain.project).serving
        assert stale.state == "stale marker" and "has exited" in stale.summary
    finally:
        marker.unlink(missing_ok=True)
        server.server_close()


def _row(lines: list[str], label: str) -> str:
    """The value of the first `  label  value` row."""
    for line in lines:
        if line.startswith(f"  {label} "):
            return line[len(label) + 2 :].strip()
    raise AssertionError(f"no {label!r} row in:\n" + "\n".join(lines))
