"""Ray Tune sweeps whose trials are multi-worker Horovod runs: search spaces, schedulers,
progress, results, promotion of the best trial.

Attributes load lazily (importing this package imports no Ray)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SweepResult": "shipyard.tuning.driver",
    "format_sweep": "shipyard.tuning.driver",
    "sweep": "shipyard.tuning.driver",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
