"""A training checkpoint: the weights, and the configuration that gives them meaning.

A checkpoint folder holds the TensorFlow checkpoint of the model and its optimizer (`ckpt.*`) and
`state.json`: the epoch, the metrics reported with it, the effective model and training sections
the weights were trained with, and the corpus (content hash and path) they were trained on.
Export, evaluation and resume rebuild the model from this record, never from whatever the
project file says now: a sweep trial that searched `model.units` exports with its own units.

Only TensorFlow's file API is used (gfile), so local paths and gs:// URIs both work, and nothing
here imports Ray.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from shipyard.errors import UserInputError

STATE = "state.json"
WEIGHTS = "ckpt"
STATE_VERSION = 2  # 1: epoch and metrics only (before the config travelled with the weights)


@dataclass
class CheckpointState:
    epoch: int
    model: dict[str, Any]  # ModelConfig as JSON
    training: dict[str, Any]  # TrainingConfig as JSON
    corpus_content_hash: str
    corpus_path: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    version: int = STATE_VERSION

    def model_config(self):
        from shipyard.project import ModelConfig

        return ModelConfig(**self.model)

    def training_config(self):
        from shipyard.project import TrainingConfig

        return TrainingConfig(**self.training)

    def check_corpus(self, content_hash: str, where: str) -> None:
        """Refuse weights trained on another corpus: their ids, labels or columns mean other
        things there, and the result would be a model that silently predicts nonsense."""
        if self.corpus_content_hash != content_hash:
            raise UserInputError(
                f"{where}: this checkpoint was trained on corpus {self.corpus_content_hash[:12]}"
                f" ({self.corpus_path or 'unknown path'}), not on {content_hash[:12]};"
                " prepare the corpus it was trained on, or train anew"
            )


def write_state(checkpoint_dir: str, state: CheckpointState) -> None:
    import tensorflow as tf

    with tf.io.gfile.GFile(os.path.join(checkpoint_dir, STATE), "w") as f:
        json.dump(asdict(state), f, indent=1, default=str)


def read_state(checkpoint_dir: str) -> CheckpointState:
    """The record beside the weights; a clear error for a folder that is not a checkpoint or
    was written before the config travelled with it."""
    import tensorflow as tf

    path = os.path.join(checkpoint_dir, STATE)
    if not tf.io.gfile.exists(path):
        raise UserInputError(f"{checkpoint_dir}: not a shipyard checkpoint (no {STATE})")
    with tf.io.gfile.GFile(path) as f:
        data = json.load(f)
    if data.get("version") != STATE_VERSION or "model" not in data:
        raise UserInputError(
            f"{checkpoint_dir}: checkpoint format {data.get('version', 1)} records no model"
            f" config (this shipyard reads format {STATE_VERSION}); train anew"
        )
    known = set(CheckpointState.__dataclass_fields__)
    return CheckpointState(**{k: v for k, v in data.items() if k in known})


def read_epoch(checkpoint_dir: str) -> int:
    """The epoch a checkpoint was written after (any format: only `epoch` is read)."""
    import tensorflow as tf

    with tf.io.gfile.GFile(os.path.join(checkpoint_dir, STATE)) as f:
        return int(json.load(f)["epoch"])
