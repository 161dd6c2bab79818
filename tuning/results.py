"""A finished sweep's trials, ranked: the table, the CSV, the plots and the Pareto front.

Each trial's score on an objective is its best value over the epochs it ran for per-epoch metrics
(the sweep keeps each trial's checkpoint by the primary metric, so that epoch is the one that
would be exported), and its last reported value for metrics reported once (`latency_ms`,
`model_bytes`).
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from typing import Any

from shipyard.errors import first_line
from shipyard.tuning.space import trial_values

# Reported once per trial, in its final report: the kept model's weight bytes and the median
# latency of one single-row prediction (shipyard.training.loop, rank 0, after the last epoch).
SERVING_METRICS = ("latency_ms", "model_bytes")

OPERATORS = {
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
}


@dataclass
class TrialSummary:
    trial_id: str
    values: dict[str, Any]  # the searched keys (dotted) and this trial's value of each
    state: str  # done, stopped (by the scheduler), failed
    epochs: int
    seconds: float
    scores: dict[str, float]  # objective -> score
    history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    error: str | None = None
    path: str | None = None
    meets_constraints: bool = True
    pareto: bool = False
    result: Any = None  # Ray's Result, for promotion

    def score(self, metric: str) -> float:
        return self.scores.get(metric, math.nan)


def summarize(grid, keys: list[str], goals: list[tuple[str, str]], epochs: int):
    """Every trial of a ResultGrid (unranked: `judge` ranks them)."""
    return [_summary(result, keys, goals, epochs) for result in grid]


def judge(trials: list[TrialSummary], goals, constraints=()) -> list[TrialSummary]:
    """Mark which trials meet the constraints and which are on the Pareto front; rank them best
    first (failed last)."""
    for t in trials:
        t.meets_constraints = t.state != "failed" and all(
            math.isfinite(t.score(m)) and OPERATORS[op](t.score(m), bound)
            for m, op, bound in constraints
        )
    mark_pareto(trials, goals)
    return rank(trials, goals[0])


def _summary(result, keys, goals, epochs) -> TrialSummary:
    frame = result.metrics_dataframe
    history = frame.to_dict("records") if frame is not None else []
    metrics = dict(result.metrics or {})
    trial_id = metrics.get("trial_id") or _trial_id_from_path(result.path)
    planned = trial_values(result.config or {}, ["training.epochs"])["training.epochs"] or epochs
    ran = int(metrics.get("epoch") or (history[-1].get("epoch", 0) if history else 0))
    error = first_line(result.error) if result.error is not None else None
    for row in history:  # a NaN loss ends the trial (progress.DivergedStopper): it failed
        error = error or diverged(row)
    if error is not None:
        state = "failed"
    elif ran < planned and not metrics.get("stopped_early"):
        state = "stopped"
    else:
        state = "done"
    scores = {}
    for metric, mode in goals:
        seen = [r.get(metric) for r in history if _finite(r.get(metric))]
        if seen and metric not in SERVING_METRICS:
            scores[metric] = max(seen) if mode == "max" else min(seen)
        elif _finite(metrics.get(metric)):
            scores[metric] = float(metrics[metric])
        else:
            scores[metric] = math.nan
    return TrialSummary(
        trial_id=trial_id,
        values=trial_values(result.config or {}, keys),
        state=state,
        epochs=ran,
        seconds=float(metrics.get("time_total_s") or 0.0),
        scores=scores,
        history=history,
        metrics=metrics,
        error=error,
        path=result.path,
        result=result,
    )


def diverged(row: dict) -> str | None:
    """The error line for a report whose train_loss is NaN or infinite, else None. A report
    that trained nothing (a finished run restored only to report again, as PBT does with a
    trial it paused at its last epoch: epoch == resumed_from_epoch) has no loss at all."""
    loss = row.get("train_loss")
    trained = (row.get("epoch") or 0) > (row.get("resumed_from_epoch") or 0)
    if trained and isinstance(loss, int | float) and not math.isfinite(loss):
        return f"training diverged: train_loss is {loss} at epoch {row.get('epoch', '?')}"
    return None


def _trial_id_from_path(path: str | None) -> str:
    # Tune names trial folders <trainable>_<trial id>_<index>_<params>_<date>.
    parts = os.path.basename(os.path.normpath(path or "")).split("_")
    return "_".join(parts[1:3]) if len(parts) >= 3 else (path or "?")


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def rank(trials: list[TrialSummary], goal: tuple[str, str]) -> list[TrialSummary]:
    metric, mode = goal

    def key(t: TrialSummary):
        s = t.score(metric)
        usable = t.state != "failed" and math.isfinite(s)
        return (not usable, -s if (usable and mode == "max") else (s if usable else 0.0))

    return sorted(trials, key=key)


def mark_pareto(trials: list[TrialSummary], goals: list[tuple[str, str]]) -> None:
    """Mark the trials no other trial beats on every objective (with several objectives)."""
    if len(goals) < 2:
        return
    scored = [
        t
        for t in trials
        if t.state != "failed" and all(math.isfinite(t.score(m)) for m, _ in goals)
    ]

    def oriented(t):
        return [t.score(m) if mode == "max" else -t.score(m) for m, mode in goals]

    for t in scored:
        mine = oriented(t)
        t.pareto = not any(
            all(o >= m for o, m in zip(oriented(u), mine, strict=True)) and oriented(u) != mine
            for u in scored
            if u is not t
        )


def best_trial(
    trials: list[TrialSummary], goal: tuple[str, str], constrained: bool
) -> TrialSummary | None:
    """The best primary score among trials that ran and (when there are constraints) meet them."""
    for t in rank(trials, goal):
        if t.state == "failed" or not math.isfinite(t.score(goal[0])):
            continue
        if constrained and not t.meets_constraints:
            continue
        return t
    return None


# -- output ---------------------------------------------------------------------------------------
def table(trials: list[TrialSummary], goals, keys: list[str], limit: int = 50) -> str:
    cols = [m for m, _ in goals]
    head = ["#", "trial", *keys, *cols, "epochs", "time", "state"]
    rows = []
    for i, t in enumerate(trials[:limit], 1):
        state = t.state + (" *" if t.pareto else "")
        if t.error:
            state += f": {t.error[:60]}"
        rows.append(
            [
                str(i),
                t.trial_id,
                *(_fmt(t.values.get(k)) for k in keys),
                *(_fmt(t.score(m)) for m in cols),
                str(t.epochs),
                f"{t.seconds:.0f}s",
                state,
            ]
        )
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if len(trials) > limit:
        lines.append(f"... {len(trials) - limit} more in the CSV")
    return "\n".join(lines)


def write_csv(trials: list[TrialSummary], goals, keys: list[str], path: str) -> str:
    cols = [m for m, _ in goals]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "rank",
                "trial_id",
                *keys,
                *cols,
                "epochs",
                "seconds",
                "state",
                "pareto",
                "meets_constraints",
                "error",
            ]
        )
        for i, t in enumerate(trials, 1):
            w.writerow(
                [
                    i,
                    t.trial_id,
                    *(t.values.get(k) for k in keys),
                    *(t.score(m) for m in cols),
                    t.epochs,
                    round(t.seconds, 2),
                    t.state,
                    t.pareto,
                    t.meets_constraints,
                    t.error or "",
                ]
            )
    return path


def write_plots(trials: list[TrialSummary], goals, keys: list[str], folder: str) -> list[str]:
    """curves.png (the primary metric per epoch, one line per trial; stopped trials end early,
    marked x), params.png (each searched key vs the primary score) and, with several
    objectives, pareto.png. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = goals[0][0]
    written = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for t in trials:
        points = [(r.get("epoch"), r.get(metric)) for r in t.history if _finite(r.get(metric))]
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        style = {"done": "-", "stopped": "--", "failed": ":"}[t.state]
        (line,) = ax.plot(xs, ys, style, marker=".", alpha=0.8, label=t.trial_id)
        if t.state == "stopped":
            ax.plot(xs[-1], ys[-1], "x", color=line.get_color(), markersize=9)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per epoch (dashed + x: stopped by the scheduler)")
    if len(trials) <= 12:
        ax.legend(fontsize=7)
    written.append(_save(fig, os.path.join(folder, "curves.png")))

    if keys:
        fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.5), squeeze=False)
        usable = [t for t in trials if t.state != "failed" and math.isfinite(t.score(metric))]
        for ax, key in zip(axes[0], keys, strict=True):
            raw = [t.values.get(key) for t in usable]
            numeric = all(_finite(v) for v in raw)
            if numeric:
                xs = raw
            else:
                labels = sorted({str(v) for v in raw})
                xs = [labels.index(str(v)) for v in raw]
                ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=7)
            ax.scatter(xs, [t.score(metric) for t in usable])
            if numeric and key.endswith("learning_rate"):
                ax.set_xscale("log")
            ax.set_xlabel(key)
            ax.set_ylabel(metric)
        written.append(_save(fig, os.path.join(folder, "params.png")))

    if len(goals) >= 2:
        (mx, _), (my, _) = goals[0], goals[1]
        fig, ax = plt.subplots(figsize=(6, 4.5))
        usable = [t for t in trials if math.isfinite(t.score(mx)) and math.isfinite(t.score(my))]
        ax.scatter([t.score(mx) for t in usable], [t.score(my) for t in usable], label="trials")
        front = sorted((t for t in usable if t.pareto), key=lambda t: t.score(mx))
        ax.plot(
            [t.score(mx) for t in front], [t.score(my) for t in front], "r-o", label="Pareto front"
        )
        ax.set_xlabel(mx)
        ax.set_ylabel(my)
        ax.legend()
        written.append(_save(fig, os.path.join(folder, "pareto.png")))
    return written


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _fmt(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)
