"""Helpers for the corpus tests: reading shards back, checking for leftovers, small inputs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shipyard.corpus.manifest import PreparedCorpus


def read_split(corpus: PreparedCorpus, split: str) -> pa.Table:
    """A split's shards as one table (read with pyarrow, not Ray: the files are the contract)."""
    return pq.read_table(corpus.split_path(split), partitioning=None)


def ids_of(table: pa.Table) -> np.ndarray:
    """The `ids` column as an (n, sequence_length) int32 array."""
    column = table["ids"].combine_chunks()
    storage = column.storage if isinstance(column, pa.ExtensionArray) else column
    return np.stack([np.asarray(v, dtype=np.int32) for v in storage.to_pylist()])


def no_partial_output(corpus_dir: str) -> bool:
    """Nothing that could pass for a corpus: no target folder and no temporary sibling."""
    parent, name = os.path.split(corpus_dir.rstrip("/"))
    if not os.path.isdir(parent):
        return True
    return not [n for n in os.listdir(parent) if n.startswith(name)]


def write_tsv(path: Path, rows: list[tuple[str, str]], header: bool = True) -> Path:
    lines = (["label\ttext"] if header else []) + [f"{lab}\t{text}" for lab, text in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def code_point_ranges(points) -> tuple[tuple[int, int], ...]:
    """Code points as sorted, inclusive (first, last) runs: how the pinned lists spell them."""
    out: list[list[int]] = []
    for p in sorted(points):
        if out and out[-1][1] == p - 1:
            out[-1][1] = p
        else:
            out.append([p, p])
    return tuple((a, b) for a, b in out)
