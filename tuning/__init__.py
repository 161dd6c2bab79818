"""Ray Tune sweeps whose trials are multi-worker Horovod runs: search spaces, schedulers,
progress, results, promotion of the best trial.

Attributes load lazily (importing this package imports no Ray)."""

from __future__ import annotations

from shipyard.lazy_exports import lazy_getattr

_EXPORTS = {
    "SweepResult": "shipyard.tuning.driver",
    "format_sweep": "shipyard.tuning.driver",
    "sweep": "shipyard.tuning.driver",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
