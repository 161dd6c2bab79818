"""A corpus split as raw model input, streamed from its Parquet shards in the driver.

No Ray needed: evaluation and the TFLite accuracy check read one split once, sequentially, at
Parquet speed; the model, not the read, is the cost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from shipyard.errors import UserInputError

if TYPE_CHECKING:
    from shipyard.corpus.manifest import PreparedCorpus


def split_batches(
    corpus: PreparedCorpus, split: str, columns: Sequence[str], batch_size: int = 2048
) -> Iterator[dict[str, np.ndarray]]:
    """Raw columns and labels of a split, batch by batch."""
    if not corpus.rows(split):
        raise UserInputError(f"{corpus.path}: the {split!r} split is empty or missing")
    return parquet_batches(corpus.split_path(split), columns, batch_size)


def parquet_batches(
    path: str, columns: Sequence[str], batch_size: int = 2048
) -> Iterator[dict[str, np.ndarray]]:
    """Raw columns and labels of any Parquet folder of split rows (a split, or a kept copy of
    one), batch by batch."""
    import pyarrow.dataset as pads

    dataset = pads.dataset(path, format="parquet")
    wanted = [*columns, "label"]
    for batch in dataset.to_batches(columns=wanted, batch_size=batch_size):
        if batch.num_rows:
            yield {c: batch.column(c).to_numpy(zero_copy_only=False) for c in wanted}


def predict_batches(
    predict: Callable[[dict[str, np.ndarray]], np.ndarray],
    batches: Iterable[dict[str, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """(probs, labels) for every batch through `predict(columns_dict) -> probs`."""
    probs, labels = [], []
    for batch in batches:
        labels.append(batch.pop("label"))
        probs.append(predict(batch))
    if not labels:
        raise UserInputError("no rows to predict")
    return np.concatenate(probs), np.concatenate(labels)


def predict_split(
    predict: Callable[[dict[str, np.ndarray]], np.ndarray],
    corpus: PreparedCorpus,
    split: str,
    columns: Sequence[str],
    batch_size: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """(probs, labels) for a whole split through `predict(columns_dict) -> probs`."""
    return predict_batches(predict, split_batches(corpus, split, columns, batch_size))


def scoring_split(corpus: PreparedCorpus) -> str | None:
    """The split a finished model is scored on: test, else validation (None: neither)."""
    return next((s for s in ("test", "validation") if corpus.rows(s)), None)
