"""Classification metrics from predicted probabilities: the same code for per-epoch validation,
final train/validation/test evaluation and `shipyard evaluate`.

Computed from all ranks' predictions gathered together, never by averaging per-rank scores
(averaging F1 or AUC across shards is not the F1 or AUC of the whole split).
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def classification_metrics(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """Loss, accuracy, precision, recall, F1 (+ ROC-AUC for binary, macro-F1 and the confusion
    matrix for multi-class). `probs` is (n,) or (n, 1) for binary, (n, k) otherwise."""
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    eps = 1e-7
    if num_classes == 2:
        p1 = np.clip(np.asarray(probs, dtype=np.float64).reshape(-1), eps, 1 - eps)
        predicted = (p1 >= 0.5).astype(np.int64)
        loss = float(-np.mean(labels * np.log(p1) + (1 - labels) * np.log(1 - p1)))
        out = {
            "loss": loss,
            "accuracy": float(np.mean(predicted == labels)),
            "precision": float(skm.precision_score(labels, predicted, zero_division=0)),
            "recall": float(skm.recall_score(labels, predicted, zero_division=0)),
            "f1": float(skm.f1_score(labels, predicted, zero_division=0)),
        }
        out["roc_auc"] = (
            float(skm.roc_auc_score(labels, p1)) if len(np.unique(labels)) == 2 else float("nan")
        )
    else:
        p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1.0)
        predicted = p.argmax(axis=1)
        loss = float(-np.mean(np.log(p[np.arange(len(labels)), labels])))
        out = {
            "loss": loss,
            "accuracy": float(np.mean(predicted == labels)),
            "precision": float(
                skm.precision_score(labels, predicted, average="macro", zero_division=0)
            ),
            "recall": float(skm.recall_score(labels, predicted, average="macro", zero_division=0)),
            "f1": float(skm.f1_score(labels, predicted, average="weighted", zero_division=0)),
            "macro_f1": float(skm.f1_score(labels, predicted, average="macro", zero_division=0)),
        }
    out["confusion_matrix"] = skm.confusion_matrix(
        labels, predicted, labels=list(range(num_classes))
    ).tolist()
    out["count"] = len(labels)
    return out


def scalars(metrics: dict, prefix: str) -> dict[str, float]:
    """The numeric metrics with a split prefix, as Ray Train and MLflow want them."""
    return {
        f"{prefix}_{k}": v
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
