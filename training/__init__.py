"""Data-parallel training: Horovod on Ray Train, checkpoints, evaluation, export, registry.

Attributes load lazily: importing a light module of this package (the exported-model loader a
serving replica uses) must not import Ray Train or select its V1 API as a side effect.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainResult": "shipyard.training.trainer",
    "build_trainer": "shipyard.training.trainer",
    "format_result": "shipyard.training.trainer",
    "train": "shipyard.training.trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
