"""The sweep's live progress: one line whenever the counts or the best trial change.

A Ray Tune `Callback`, so it runs in the driver. It recomputes the line from Tune's whole trial
list at every step (not from counted events), so a resumed sweep shows the trials that finished
before the restart as well.
"""

from __future__ import annotations

import math
import sys
import time

from ray.tune import Callback, Stopper
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler

from shipyard.tuning.results import diverged
from shipyard.tuning.space import trial_values


class SweepProgress(Callback):
    def __init__(self, name: str, metric: str, mode: str, keys: list[str], epochs: int, out=None):
        self.name, self.metric, self.mode = name, metric, mode
        self.keys, self.epochs = list(keys), epochs
        self.out = out
        self._last = ""
        self._started = time.monotonic()

    def __getstate__(self):  # Tune pickles the run config (tuner.pkl): keep no stream
        state = dict(self.__dict__)
        state["out"], state["_last"] = None, ""
        return state

    def on_step_end(self, iteration, trials, **info):
        self._show(trials)

    def on_experiment_end(self, trials, **info):
        self._show(trials)

    def line(self, trials) -> str:
        counts = dict.fromkeys(("pending", "running", "done", "stopped", "failed"), 0)
        best = None
        for trial in trials:
            counts[trial_state(trial, self.epochs)] += 1
            value = best_reported(trial, self.metric, self.mode)
            if value is not None:
                better = best is None or (
                    value > best[0] if self.mode == "max" else value < best[0]
                )
                if better:
                    best = (value, trial)
        parts = [f"{v} {k}" for k, v in counts.items() if v or k != "pending"]
        text = f"sweep {self.name}: " + " · ".join(parts)
        if best is not None:
            values = trial_values(best[1].config, self.keys)
            shown = " ".join(f"{k}={_short(v)}" for k, v in values.items())
            text += f" · best {self.metric} {best[0]:.4f} ({best[1].trial_id}: {shown})"
        return text

    def _show(self, trials) -> None:
        text = self.line(trials)
        if text != self._last:
            self._last = text
            elapsed = time.monotonic() - self._started
            print(f"[{elapsed:6.0f}s] {text}", file=self.out or sys.stdout, flush=True)


class DivergedStopper(Stopper):
    """Ends a trial whose training loss is no longer finite (a learning rate too high, say):
    nothing it trains after that is worth its CPUs. The sweep's summary lists it as failed
    (`shipyard.tuning.results`)."""

    def __call__(self, trial_id, result) -> bool:
        return diverged(result) is not None

    def stop_all(self) -> bool:
        return False


class LastEpochPBT(PopulationBasedTraining):
    """PBT that leaves a trial's last report alone: a perturbation there would pause the trial
    (or make it exploit another's checkpoint) when it has nothing left to train, only for Tune
    to start its workers again and have it report its last epoch once more."""

    def __init__(self, *, epochs: int, **kwargs):
        super().__init__(**kwargs)
        self.epochs = epochs

    def on_trial_result(self, tune_controller, trial, result):
        if (result.get("epoch") or 0) >= self.epochs or result.get("stopped_early"):
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


def best_reported(trial, metric: str, mode: str) -> float | None:
    """The trial's best `metric` over all its reports, as the summary ranks trials (a trial's
    last epoch may be worse than its best, and the best so far never gets worse)."""
    value = ((trial.metric_analysis or {}).get(metric) or {}).get(mode)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def trial_state(trial, epochs: int) -> str:
    """pending, running, done, stopped (by the scheduler, before its last epoch) or failed."""
    status = trial.status
    if status == "ERROR" or diverged(trial.last_result or {}):
        return "failed"
    if status in ("RUNNING", "PAUSED"):
        return "running"
    if status == "TERMINATED":
        result = trial.last_result or {}
        planned = trial_values(trial.config, ["training.epochs"])["training.epochs"] or epochs
        if result.get("epoch", 0) < planned and not result.get("stopped_early"):
            return "stopped"
        return "done"
    return "pending"


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
