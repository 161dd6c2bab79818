"""What `shipyard data prepare` prints: what runs where, the summary and where the corpus is; Ray
Data's internal lines only with SHIPYARD_VERBOSE=1 (`shipyard --verbose`)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shipyard.corpus.summary import format_plan


def test_the_plan_line_reads_like_a_sentence():
    assert format_plan("demo", 1, 2, 1, 278_500, 6_000) == (
        "preparing corpus demo on 1 node, 2 CPUs: 1 source file, 278.5 kB, 6,000 rows"
    )
    assert format_plan("sms", 3, 1, 12, 2_500_000_000) == (
        "preparing corpus sms on 3 nodes, 1 CPU: 12 source files, 2.5 GB"
    )


def _prepare(project_file, verbose: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("SHIPYARD_VERBOSE", "RAY_ADDRESS")}
    if verbose:
        env["SHIPYARD_VERBOSE"] = "1"
    command = [sys.executable, "-m", "shipyard.cli", "data", "prepare", str(project_file)]
    return subprocess.run(
        [*command, "--force"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def _without_teardown_race(stderr: str) -> str:
    """Ray's GCS sometimes logs, while the embedded cluster shuts down after the work is done,
    that an already-exiting actor's KillActor RPC found its socket closed (seen once in CI, at
    exit, after the corpus was written). That engine race is the only line let through."""
    race = ("gcs_actor_scheduler.cc", "Failed to kill actor", "Socket closed")
    return "\n".join(line for line in stderr.splitlines() if not all(part in line for part in race))


@pytest.mark.slow
def test_prepare_prints_what_a_person_needs(project_factory):
    project = project_factory(
        {
            "name": "printed",
            "data": {"kind": "text", "synthetic": {"kind": "text", "rows": 800, "seed": 2}},
        }
    )
    done = _prepare(project.source_file, verbose=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("preparing corpus printed on 1 node, ")
    assert lines[0].endswith(", 800 rows"), lines[0]
    assert lines[1].startswith("corpus printed  content ")
    assert lines[-1] == f"corpus written to {os.path.abspath(project.corpus_dir)}"
    assert "INFO" not in done.stdout + done.stderr and "WARNING" not in done.stderr, done.stderr
    assert not _without_teardown_race(done.stderr).strip(), done.stderr

    # Verbose: Ray Data speaks again (here, without a terminal, its notice about the bars).
    loud = _prepare(project.source_file, verbose=True)
    assert loud.returncode == 0, loud.stderr
    assert "Progress bars disabled" in loud.stderr
