"""A failing trial is marked failed and the sweep goes on; a sweep whose every trial fails exits 1.

The failure is real: a learning rate of 3e38 (near float32's largest) overflows the LSTM's weights
within the first epoch and its training loss turns NaN; the training loop itself raises
"train_loss is nan at epoch 1" on every rank, before that epoch is evaluated or reported. A trial
whose worker process dies, with no restarts left (`training.max_failures: 0`), fails the same way.
"""

from __future__ import annotations

import csv
import glob
import io
import os
import signal
import threading
import time

import psutil
import pytest

from shipyard import cli
from shipyard.tuning import format_sweep, sweep

TINY = {
    "data": {"synthetic": {"rows": 800, "seed": 3}, "vocab_size": 600, "sequence_length": 16},
    "model": {"kind": "lstm_classifier", "embedding_dim": 8, "units": 8},
    "training": {"workers": 1, "epochs": 2, "batch_size": 32},
}


def tuning(rates: list[float]) -> dict:
    return {
        "search": "grid",
        "scheduler": "fifo",
        "promote": False,
        "search_space": {"training.learning_rate": {"grid": rates}},
    }


@pytest.mark.slow
def test_a_diverging_trial_fails_and_the_sweep_goes_on(ray_local, project_factory, capsys):
    project = project_factory({**TINY, "name": "fails", "tuning": tuning([0.01, 3e38])})
    result = sweep(project, out=io.StringIO())
    summary = format_sweep(result)
    by_rate = {t.values["training.learning_rate"]: t for t in result.trials}
    good, bad = by_rate[0.01], by_rate[3e38]
    assert good.state == "done" and good.epochs == 2, summary
    assert bad.state == "failed", summary
    # It failed in its first epoch, raised by the loop itself (not later, in the metrics, with
    # "Input contains NaN"); its error is the original message's first line, not Ray's traceback
    # header.
    assert bad.epochs == 0, bad.history
    assert "train_loss is nan at epoch 1" in bad.error and "\n" not in bad.error, bad.error
    assert not bad.error.startswith(("ray::", "Failure", "Traceback")), bad.error
    assert result.best is good and result.trials[-1] is bad
    assert "1 done, 0 stopped early, 1 failed" in summary
    row = next(line for line in summary.splitlines() if bad.trial_id in line)
    assert f"failed: {bad.error[:60]}" in row, summary

    # Every trial failing: the sweep fails, `shipyard sweep` exits 1 naming the trials' errors.
    capsys.readouterr()
    doomed = project_factory({**TINY, "name": "doomed", "tuning": tuning([3e38, 2e38])})
    assert cli.main(["sweep", doomed.source_file]) == 1
    err = capsys.readouterr().err
    assert "all 2 trials failed" in err and err.count("train_loss is nan at epoch 1") == 2, err


def _train_workers() -> list[psutil.Process]:
    """This session's Horovod worker processes (children of our own raylet, never anyone else's)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.mark.slow
def test_a_trial_whose_worker_dies_beyond_max_failures_fails_and_the_sweep_goes_on(
    ray_local, project_factory, capsys
):
    """One trial at a time: the first trial (40 epochs, so it is surely still running) has its
    worker killed (SIGKILL) once it wrote its first checkpoint; with `training.max_failures: 0`
    nothing restarts it. The second trial (2 epochs) runs and finishes; the sweep exits 0."""
    project = project_factory(
        {
            **TINY,
            "name": "killed",
            "training": {**TINY["training"], "max_failures": 0},
            "tuning": {
                "search": "grid",
                "scheduler": "fifo",
                "promote": False,
                "max_concurrent_trials": 1,
                "search_space": {"training.epochs": {"grid": [40, 2]}},
            },
        }
    )
    killed: dict = {}

    def kill_after_first_checkpoint():
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            runs = project.runs_dir
            if os.path.isdir(runs) and glob.glob(os.path.join(runs, "*", "*", "checkpoint_*")):
                workers = _train_workers()
                if workers:
                    workers[0].send_signal(signal.SIGKILL)
                    killed["pid"] = workers[0].pid
                    return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_after_first_checkpoint, daemon=True)
    killer.start()
    capsys.readouterr()
    code = cli.main(["sweep", project.source_file])
    killer.join(timeout=5)
    out = capsys.readouterr().out
    assert "pid" in killed, "no worker was killed: the test did not exercise a failure"
    assert code == 0, out  # some trials failed, not all: the sweep itself succeeded
    (csv_path,) = glob.glob(os.path.join(project.runs_dir, "*", "trials.csv"))
    with open(csv_path, encoding="utf-8") as f:
        rows = {int(r["training.epochs"]): r for r in csv.DictReader(f)}
    long, short = rows[40], rows[2]
    assert short["state"] == "done" and short["epochs"] == "2", rows
    assert long["state"] == "failed" and int(long["epochs"]) < 40, rows
    # Its error is one line, the original error's first (not Ray's traceback header), and it
    # says the worker died.
    error = long["error"]
    assert error and "\n" not in error, error
    assert not error.startswith(("ray::", "Failure", "Traceback")), error
    assert "died" in error.lower(), error
    assert "1 done, 0 stopped early, 1 failed" in out, out
    row = next(line for line in out.splitlines() if line.split()[1:2] == [long["trial_id"]])
    assert f"failed: {error[:60]}" in row, out
