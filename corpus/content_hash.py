"""The corpus's content hash: what the shards hold, independent of how the work was spread.

A model version records it, so two corpora with this hash train on the same rows, labels, splits
and encoding.
"""

from __future__ import annotations

import hashlib
import json

from shipyard.project import DataConfig


def content_hash(manifest: dict, digests: dict[str, int], data: DataConfig, drawn: bool) -> str:
    """What the shards hold: every kept row (order-independent digest per split/label), the split
    rule when splits are drawn, the labels, the vocabulary or statistics, and the schema."""
    identity = {
        "digests": {k: str(v) for k, v in sorted(digests.items())},
        "split_rule": (
            {"seed": data.seed, "fractions": data.splits.model_dump()} if drawn else "source"
        ),
        "splits": manifest["splits"],
        "labels": manifest["labels"],
        "tokenizer": manifest.get("tokenizer"),
        "vocabulary": manifest.get("vocabulary"),
        "features": manifest.get("features"),
        "schema": manifest["schema"],
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
