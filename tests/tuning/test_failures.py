"""A failing trial is marked failed and the sweep goes on; a sweep whose every trial fails exits 1.

The failure is real: a learning rate of 3e38 (near float32's largest) overflows the LSTM's weights
within the first epoch and its training loss turns NaN; the training loop itself raises
"train_loss is nan at epoch 1" on every rank, before that epoch is evaluated or reported.
"""

from __future__ import annotations

import io

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
