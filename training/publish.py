"""Publish a finished training run: export its checkpoint beside the run, log the run to MLflow
and register the export as a new model version.

Driver only (the sqlite store takes one writer). What is recorded comes from the checkpoint's own
`state.json` (the model and training config the weights were trained with), not from the project
file, which may have changed since or, for a sweep trial, never held the trial's values (so
`training.export.compress` is the run's too). The project decides only where things go: the
runs folder, the registry and the registered name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shipyard.errors import ShipyardError
from shipyard.project import Project

if TYPE_CHECKING:
    from shipyard.training.export_writer import ExportResult
    from shipyard.training.model_versions import RegisteredVersion
    from shipyard.training.trainer import TrainResult

EXPORT_DIR = "export"  # beside the run's trial folders: <runs>/<run name>/export


@dataclass
class Published:
    version: RegisteredVersion
    export: ExportResult

    def describe(self) -> list[str]:
        """Lines for a run summary: the export, its variants, the registered version."""
        e = self.export
        lines = [f"{'export':<12} {e.path} ({_size(e.bytes, e.accuracy, e.accuracy_split)})"]
        for name, v in e.variants.items():
            shown = v.error or _size(v.bytes or 0, v.accuracy, v.accuracy_split)
            lines.append(f"{name:<12} {shown}")
        v = self.version
        aliases = f", {', '.join(v.aliases)}" if v.aliases else ""
        lines.append(f"{'registered':<12} {v.name} version {v.version} ({v.uri}{aliases})")
        return lines


def publish(project: Project, result: TrainResult) -> Published:
    """Export `result.checkpoint` to `<runs>/<run name>/export`, log the run and register the
    export (the model's first version becomes `champion`)."""
    from shipyard.source_commit import source_commit
    from shipyard.training.checkpoint import read_state
    from shipyard.training.export_writer import export_model
    from shipyard.training.model_versions import register_version
    from shipyard.training.run_logging import log_run

    if not result.checkpoint:
        raise ShipyardError(f"run {result.run_name} reported no checkpoint: nothing to publish")
    state = read_state(result.checkpoint)
    export = export_model(
        result.checkpoint,
        result.corpus,
        os.path.join(project.runs_dir, result.run_name, EXPORT_DIR),
        name=project.registered_model_name,
        compress=bool(state.training.get("export", {}).get("compress", False)),
    )
    run = log_run(project, result, export, state=state, source=source_commit(project.path(".")))
    kind = state.model.get("kind", "model")
    version = register_version(project, run, description=f"{kind} trained by run {result.run_name}")
    return Published(version=version, export=export)


def _size(size: int, accuracy: float | None, split: str | None) -> str:
    shown = f"{size / 1e6:.2f} MB"
    if accuracy is not None:
        shown += f", {split} accuracy {accuracy:.4f}"
    return shown
