"""Which source produced an artifact: the git commit of the checkout, and whether it was dirty.

A submitted Ray job runs in a copy of the working dir without `.git`, so `shipyard submit`
records the submitting checkout's commit in the job's environment (`SOURCE_COMMIT_ENV`) and the
job reads it from there instead of asking git.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, dataclass

SOURCE_COMMIT_ENV = "SHIPYARD_SOURCE_COMMIT"  # JSON of SourceCommit, set by `shipyard submit`
UNKNOWN = "unknown"


@dataclass(frozen=True)
class SourceCommit:
    commit: str = UNKNOWN
    dirty: bool | None = None  # None: not known (no git, or not a checkout)

    def to_env(self) -> dict[str, str]:
        return {SOURCE_COMMIT_ENV: json.dumps(asdict(self))}

    def describe(self) -> str:
        suffix = " (with uncommitted changes)" if self.dirty else ""
        return f"{self.commit}{suffix}"


def source_commit(cwd: str | None = None) -> SourceCommit:
    """The commit recorded by the submitter, else the commit of the checkout at `cwd`."""
    recorded = os.environ.get(SOURCE_COMMIT_ENV)
    if recorded:
        try:
            data = json.loads(recorded)
            return SourceCommit(str(data.get("commit") or UNKNOWN), data.get("dirty"))
        except (ValueError, AttributeError):
            pass
    commit = _git(["rev-parse", "HEAD"], cwd)
    if not commit:
        return SourceCommit()
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    return SourceCommit(commit, dirty=bool(status) if status is not None else None)


def _git(args: list[str], cwd: str | None) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None
