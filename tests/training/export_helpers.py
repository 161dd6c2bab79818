"""Helpers for the export, publish, registry and evaluation tests (imported by name, like
tests/corpus/corpus_helpers.py).

`compressed_export` exports the session's LSTM run once per test process, with TFLite variants,
through the real writer; every module that needs an export shares that one.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

from shipyard.project import Project
from shipyard.training.checkpoint import read_state, write_state
from shipyard.training.export_writer import ExportResult, export_model

_EXPORTS: dict[str, ExportResult] = {}


def compressed_export(text_run, tmp_path_factory) -> ExportResult:
    """The session's LSTM run exported with TFLite variants (made once per process)."""
    checkpoint = text_run.result.checkpoint
    if checkpoint not in _EXPORTS:
        out = tmp_path_factory.mktemp("export") / "tiny_text"
        _EXPORTS[checkpoint] = export_model(
            checkpoint,
            text_run.corpus,
            str(out),
            name=text_run.project.registered_model_name,
            compress=True,
        )
    return _EXPORTS[checkpoint]


def copy_checkpoint(checkpoint: str, dest: Path, **state_changes) -> str:
    """A copy of a checkpoint folder with fields of its state.json replaced."""
    shutil.copytree(checkpoint, dest)
    write_state(str(dest), dataclasses.replace(read_state(str(dest)), **state_changes))
    return str(dest)


def fresh_workdir(project: Project, workdir: Path) -> Project:
    """The same project with its outputs (runs, registry) in `workdir`."""
    return project.model_copy(update={"workdir": str(workdir)})


# A commit whose hash follows from its content alone: fixed author, committer, dates and file.
KNOWN_COMMIT = "bd675c2eff16291fbdd0ba81e2ad54b3f62e2357"
_GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00+0000",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00+0000",
}


def known_repo(path: Path) -> Path:
    """A git checkout at `path` whose HEAD is KNOWN_COMMIT, with one tracked file `f.txt`."""
    path.mkdir(parents=True)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(path), **_GIT_ENV}
    for args in (
        ["init", "-q", "--object-format=sha1", "-b", "main", "."],
        ["add", "f.txt"],
        ["commit", "-q", "-m", "known"],
    ):
        if args[0] == "add":
            (path / "f.txt").write_text("v1\n")
        subprocess.run(["git", *args], cwd=path, env=env, check=True, capture_output=True)
    return path
