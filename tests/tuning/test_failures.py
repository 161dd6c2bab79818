"""A failing trial is marked failed and the sweep goes on; a sweep whose every trial fails exits 1.

The failure is real: a learning rate of 3e38 (near float32's largest) overflows the LSTM's weights
within the first epoch and its training loss turns NaN; the training loop itself raises
"train_loss is nan at epoch 1" on every rank, before that epoch is evaluated or reported. A trial
whose worker process dies, with no restarts left (`training.max_failures: 0`), fails the same way.
The diverging trials are those of the grid sweep shared with test_sweep.py (conftest.py).
"""

from __future__ import annotations

import csv
import glob
import os
import signal
import threading
import time

import psutil
import pytest
from conftest import DIVERGING_RATE, GRID_EPOCHS

from shipyard import cli

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
def test_a_diverging_trial_fails_and_the_sweep_goes_on(grid_sweep, project_factory, capsys):
    """The shared grid (tests/tuning/conftest.py): at each of two `model.units`, one trial at a
    sensible learning rate and one at 3e38."""
    result, summary = grid_sweep.result, grid_sweep.summary
    good = [t for t in result.trials if t.values["training.learning_rate"] == 0.01]
    bad = [t for t in result.trials if t.values["training.learning_rate"] == DIVERGING_RATE]
    assert len(good) == 2 and len(bad) == 2, summary
    for t in good:
        assert t.state == "done" and t.epochs == GRID_EPOCHS, summary
    for t in bad:
        assert t.state == "failed", summary
        # It failed in its first epoch, raised by the loop itself (not later, in the metrics,
        # with "Input contains NaN"); its error is the original message's first line, not Ray's
        # traceback header.
        assert t.epochs == 0, t.history
        assert "train_loss is nan at epoch 1" in t.error and "\n" not in t.error, t.error
        assert not t.error.startswith(("ray::", "Failure", "Traceback")), t.error
        row = next(line for line in summary.splitlines() if t.trial_id in line)
        assert f"failed: {t.error[:60]}" in row, summary
    # The best is a trial that trained; the failed ones rank last.
    assert result.best in good and {t.trial_id for t in result.trials[-2:]} == {
        t.trial_id for t in bad
    }, summary
    assert "2 done, 0 stopped early, 2 failed" in summary

    # Every trial failing: the sweep fails, `shipyard sweep` exits 1 naming the trials' errors.
    capsys.readouterr()
    doomed = project_factory({**TINY, "name": "doomed", "tuning": tuning([3e38, 2e38])})
    assert cli.main(["sweep", doomed.source_file]) == 1
    err = capsys.readouterr().err
    assert "all 2 trials failed" in err and err.count("train_loss is nan at epoch 1") == 2, err


def _train_workers(trial_folder: str) -> list[psutil.Process]:
    """This session's Horovod worker processes (children of our own raylet, never anyone else's)
    of one trial: Ray Train runs each worker in that trial's working directory, named like the
    trial's folder."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(proc.cmdline()) and trial_folder in proc.cwd():
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.mark.slow
def test_a_trial_whose_worker_dies_beyond_max_failures_fails_and_the_sweep_goes_on(
    ray_local, project_factory, capsys
):
    """Two trials at once: the 40-epoch one (so it is surely still running) has its worker killed
    (SIGKILL) once it wrote its first checkpoint; with `training.max_failures: 0` nothing
    restarts it. The 2-epoch one runs on and finishes; the sweep exits 0."""
    project = project_factory(
        {
            **TINY,
            "name": "killed",
            "training": {**TINY["training"], "max_failures": 0},
            "tuning": {
                "search": "grid",
                "scheduler": "fifo",
                "promote": False,
                "max_concurrent_trials": 2,
                "search_space": {"training.epochs": {"grid": [40, 2]}},
            },
        }
    )
    killed: dict = {}

    def kill_after_first_checkpoint():
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            found = glob.glob(os.path.join(project.runs_dir, "*", "*epochs=40_*", "checkpoint_*"))
            if found:
                workers = _train_workers(os.path.basename(os.path.dirname(found[0])))
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
