"""Fixtures for the corpus tests (shared ones live in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    """A 3,000-row synthetic TSV (label, text) with real duplicates, written once."""
    from shipyard.corpus import synth

    path = tmp_path_factory.mktemp("synth") / "small.tsv"
    synth.write(synth.SynthSpec(rows=3_000, classes=3, seed=3, duplicate_rate=0.1), path)
    return path
