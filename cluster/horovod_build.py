"""Horovod's build flags, read from the one list the Makefile reads too (`horovod_build*.env`).

`make install` (GPU=1 adds the GPU file), the node setup commands of `shipyard cluster spec` and
the fix `shipyard doctor` prints all build Horovod with these flags, so they cannot drift apart.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

FLAGS_FILE = Path(__file__).with_name("horovod_build.env")
GPU_FLAGS_FILE = Path(__file__).with_name("horovod_build_gpu.env")
# What the Makefile's grep takes as a flag line: the whole line, no spaces, no trailing comment.
_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)=(\S+)$")


def read_flags(path: Path) -> dict[str, str]:
    """NAME=VALUE lines of one file, in order; blank lines and `#` comment lines skipped."""
    flags: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip() or raw.startswith("#"):
            continue
        match = _LINE.match(raw)
        if not match:
            raise ValueError(f"{path}:{number}: expected NAME=VALUE (got {raw!r})")
        flags[match.group(1)] = match.group(2)
    return flags


def flags(gpu: bool = False) -> dict[str, str]:
    """The flags for a CPU build, plus the GPU ones (NCCL) with `gpu`."""
    found = read_flags(FLAGS_FILE)
    if gpu:
        found.update(gpu_flags())
    return found


def gpu_flags() -> dict[str, str]:
    """Only what a GPU build adds."""
    return read_flags(GPU_FLAGS_FILE)


def env_prefix(gpu: bool = False) -> str:
    """`NAME=VALUE ...` to put before `pip install` in a shell command."""
    return as_env(flags(gpu))


def as_env(pairs: dict[str, str]) -> str:
    return " ".join(f"{name}={shlex.quote(value)}" for name, value in pairs.items())
