"""A sweep whose driver is SIGKILLed resumes with --resume and re-runs no finished trial."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

RUN = (
    "import sys\n"
    "from shipyard.project import load_project\n"
    "from shipyard.tuning import format_sweep, sweep\n"
    "r = sweep(load_project(sys.argv[1]), resume=sys.argv[2] if len(sys.argv) > 2 else None)\n"
    "print(format_sweep(r))\n"
    "print('TRIALS', ' '.join(sorted(t.trial_id + ':' + t.state for t in r.trials)))\n"
)


def _finished(sweep_dir: str) -> dict[str, int]:
    """trial folder -> reported epochs, for trials that Tune's own experiment state records as
    TERMINATED. (A trial whose last report is on disk but whose end Tune had not yet saved when
    the driver died is rightly run again on restore: it does not count as finished.)"""
    terminated = set()
    for state in glob.glob(os.path.join(sweep_dir, "experiment_state-*.json")):
        try:
            with open(state, encoding="utf-8") as f:
                trials = json.load(f)["trial_data"]
        except (OSError, ValueError, KeyError):
            continue  # being rewritten right now: read it on the next poll
        for trial_json, _ in trials:
            trial = json.loads(trial_json)
            if trial.get("status") == "TERMINATED":
                terminated.add(trial["relative_logdir"])
    out = {}
    for folder in terminated:
        result = os.path.join(sweep_dir, folder, "result.json")
        if os.path.isfile(result):
            with open(result, encoding="utf-8") as f:
                out[folder] = sum(1 for line in f if line.strip())
    return out


@pytest.mark.slow
def test_sigkilled_driver_resumes_without_rerunning_finished_trials(tmp_path):
    doc = {
        "name": "resume",
        "workdir": str(tmp_path / "wd"),
        "cluster": {"num_cpus": 2},
        "data": {"synthetic": {"rows": 1200, "seed": 3}, "vocab_size": 800, "sequence_length": 16},
        "model": {"kind": "lstm_classifier", "embedding_dim": 8, "units": 8},
        "training": {"workers": 1, "epochs": 3, "batch_size": 32},
        "tuning": {
            "num_samples": 4,
            # Two at once (2 CPUs): the first two finish together, the driver is killed while
            # the last two run, and the resumed driver runs those two again, together (one at a
            # time, each driver would wait for two trial starts in a row).
            "max_concurrent_trials": 2,
            "search": "random",
            "scheduler": "fifo",
            "promote": False,
            "search_space": {"training.learning_rate": {"loguniform": [1e-3, 3e-2]}},
        },
    }
    project = tmp_path / "resume.yaml"
    project.write_text(yaml.safe_dump(doc), encoding="utf-8")
    runs = tmp_path / "wd" / "runs"
    first = subprocess.Popen(
        [sys.executable, "-c", RUN, str(project)], start_new_session=True, cwd=tmp_path
    )
    deadline = time.monotonic() + 600
    sweep_dir, done = None, {}
    while time.monotonic() < deadline and first.poll() is None:
        found = glob.glob(str(runs / "resume-sweep-*"))
        if found:
            sweep_dir = found[0]
            done = _finished(sweep_dir)
            if len(done) >= 2:
                break
        time.sleep(0.5)
    assert first.poll() is None, "the sweep ended before it could be killed"
    assert len(done) >= 2, "two trials did not finish in time"
    os.killpg(first.pid, signal.SIGKILL)  # the driver and the Ray it started, at once
    first.wait()
    done = _finished(sweep_dir)

    second = subprocess.run(
        [sys.executable, "-c", RUN, str(project), os.path.basename(sweep_dir)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    # Only the TRIALS line: the workers' Keras logs reach the driver's stdout asynchronously,
    # some of them after it.
    trials = next(x for x in second.stdout.splitlines() if x.startswith("TRIALS ")).split()[1:]
    assert len(trials) == 4 and all(t.endswith(":done") for t in trials), trials
    assert "(resumed)" in second.stdout
    # The sweep's progress is its display: the re-run trials' rank 0 prints no Keras line per
    # epoch (only with --verbose). Those lines are early in a trial, long before the driver ends.
    assert "Epoch 1/" not in second.stdout + second.stderr, second.stdout[-3000:]
    after = _finished(sweep_dir)
    assert len(after) == 4
    # The trials that had finished were not run again: their result files did not grow.
    for folder, reports in done.items():
        assert after[folder] == reports, (folder, reports, after[folder])
