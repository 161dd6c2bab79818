"""Plots of a training run for its MLflow page: confusion matrices and training curves (PNG).

Uses matplotlib's object API (no pyplot): no global backend, safe in any process.
"""

from __future__ import annotations

import json
import math
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shipyard.training.trainer import TrainResult

# (file suffix, metric prefixes in order of preference): the kept model's final scores first
# ("final_val" is the best epoch's validation; "val" the last epoch's when no final one exists).
CONFUSION_SPLITS = (
    ("test", ("test",)),
    ("val", ("final_val", "val")),
    ("final_train", ("final_train",)),
)


def write_plots(result: TrainResult, folder: str) -> list[str]:
    """Confusion matrices (per split that has one) and training curves; the paths written."""
    written = []
    labels = result.corpus.labels
    for suffix, prefixes in CONFUSION_SPLITS:
        prefix = next((p for p in prefixes if result.metrics.get(f"{p}_confusion_matrix")), None)
        if prefix is None:
            continue
        raw = result.metrics[f"{prefix}_confusion_matrix"]
        matrix = json.loads(raw) if isinstance(raw, str) else raw
        path = os.path.join(folder, f"confusion_matrix_{suffix}.png")
        confusion_figure(matrix, labels, f"confusion matrix ({prefix})").savefig(path, dpi=100)
        written.append(path)
    if result.history:
        path = os.path.join(folder, "training_curves.png")
        curves_figure(result.history).savefig(path, dpi=100)
        written.append(path)
    return written


def confusion_figure(matrix: list[list[int]], labels: list[str], title: str):
    from matplotlib.figure import Figure

    k = len(labels)
    size = max(3.5, 0.45 * k + 2)
    fig = Figure(figsize=(size, size))
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(k), labels, rotation=45 if k > 2 else 0, ha="right" if k > 2 else "center")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    top = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            color = "white" if top and value > top / 2 else "black"
            ax.text(j, i, str(value), ha="center", va="center", color=color, fontsize=8)
    fig.tight_layout()
    return fig


def curves_figure(history: list[dict]):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.5))
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy"), strict=True):
        for split in ("train", "val"):
            values = [row.get(f"{split}_{metric}") for row in history]
            points = [(e, v) for e, v in zip(epochs, values, strict=True) if _number(v)]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=split)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    fig.tight_layout()
    return fig


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
