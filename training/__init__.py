"""Data-parallel training: Horovod on Ray Train, checkpoints, evaluation, export, registry.

Attributes load lazily: importing a light module of this package (the exported-model loader a
serving replica uses) must not import Ray Train or select its V1 API as a side effect.
"""

from __future__ import annotations

from shipyard.lazy_exports import lazy_getattr

_EXPORTS = {
    "TrainResult": "shipyard.training.trainer",
    "build_trainer": "shipyard.training.trainer",
    "format_result": "shipyard.training.trainer",
    "train": "shipyard.training.trainer",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
