"""Publish a folder whole or not at all: write it beside its destination, then rename it in.

Corpora and exports are folders that later steps trust (a manifest says the shards are complete,
a signature says the model is servable). Writing them in place would leave a half-written folder
that looks finished after a crash; a rename on the same filesystem is atomic.
"""

from __future__ import annotations

import os
import shutil
import uuid


def staging_path(out: str, tag: str = "partial") -> str:
    """A fresh sibling of `out` to write into (same filesystem, so the final rename is atomic)."""
    return f"{os.path.abspath(out).rstrip('/')}.{tag}-{uuid.uuid4().hex[:8]}"


def swap_into_place(tmp: str, out: str) -> None:
    """Replace `out` with the finished folder `tmp`; an earlier `out` is removed afterwards."""
    out = os.path.abspath(out).rstrip("/")
    old = None
    if os.path.exists(out):
        old = staging_path(out, "old")
        os.rename(out, old)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    os.rename(tmp, out)
    if old:
        shutil.rmtree(old, ignore_errors=True)
