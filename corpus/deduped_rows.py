"""The deduplicated rows, read back from Parquet one pass at a time with only the columns it needs.

Unusable rows (the one row per drop reason that dedup kept, with its count) stay in the Parquet
for the profile; every other pass reads only the usable ones.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from shipyard.corpus import clean, parquet_parts


class DedupedRows:
    """The deduplicated rows: Parquet read back with only the columns a pass needs (the text is
    most of the bytes and most passes never look at it), or, after near-duplicate removal, the
    usable rows as an in-memory dataset."""

    def __init__(self, source):
        self.source = source
        if isinstance(source, str):
            import pyarrow.parquet as pq

            self.files = parquet_parts.files_in(source)
            self.names = set(pq.read_schema(self.files[0]).names) if self.files else set()

    def read(self, *columns: str):
        """Every row, unusable ones included, with `columns` (those present; all when none)."""
        if not isinstance(self.source, str):
            return self.source
        wanted = [c for c in columns if c in self.names] if columns else None
        return parquet_parts.read(self.files, wanted)

    def usable(self, *columns: str):
        """The rows that pass cleaning, with `columns` (all when none)."""
        if not isinstance(self.source, str):
            return self.source  # filtered before it was kept in memory
        wanted = ("status", *columns) if columns else ()
        return self.read(*wanted).map_batches(only_ok, batch_format="pyarrow")


def only_ok(batch: pa.Table) -> pa.Table:
    """The usable rows. Dedup sorts by key and the `~status` keys sort last, so they are
    usually a prefix: a zero-copy slice instead of copying every column of the corpus."""
    ok = pc.equal(batch["status"], clean.OK)
    usable = pc.sum(ok).as_py() or 0
    if usable == batch.num_rows or (usable and pc.all(ok.slice(0, usable)).as_py()):
        return batch.slice(0, usable).drop_columns(["status"])
    return batch.filter(ok).drop_columns(["status"])


def drop_keys(batch: pa.Table, keys: set[str]) -> pa.Table:
    mask = pc.invert(pc.is_in(batch["key"], value_set=pa.array(sorted(keys), pa.string())))
    return batch.filter(mask)
