"""Read back the pipeline's own intermediate Parquet: one read task per file, only the columns a
pass needs, no file listing on the cluster.

`ray.data.read_parquet` plans every read with a remote file-listing task and may pack many files
into one read task: on the deduplicated corpus that cost ~2 s per pass (most of it waiting, 67 ms
of CPU) and ran 16 files as a single task. The driver wrote these files and knows them, so it
lists them itself and hands each to its own task.
"""

from __future__ import annotations

import os

import pyarrow.parquet as pq
from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata


def files_in(folder: str) -> list[str]:
    """The Parquet files under `folder` (recursively), in a stable order."""
    found = []
    for root, _, names in os.walk(folder):
        found += [os.path.join(root, n) for n in names if n.endswith(".parquet")]
    return sorted(found)


def read(files: list[str], columns: list[str] | None = None):
    """A Ray Dataset over `files`, one block per file."""
    import ray.data

    return ray.data.read_datasource(_Parts(files, columns), override_num_blocks=len(files))


class _Parts(Datasource):
    def __init__(self, files: list[str], columns: list[str] | None):
        super().__init__()
        self.files, self.columns = files, columns
        self.sizes = [os.path.getsize(f) for f in files]

    def estimate_inmemory_data_size(self) -> int:
        return 2 * sum(self.sizes)  # compressed on disk

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None):
        tasks = []
        for path, size in zip(self.files, self.sizes, strict=True):
            meta = BlockMetadata(
                num_rows=None, size_bytes=2 * size, exec_stats=None, input_files=[path]
            )
            tasks.append(
                ReadTask(
                    lambda p=path, c=self.columns: [pq.read_table(p, columns=c)],
                    meta,
                    per_task_row_limit=per_task_row_limit,
                )
            )
        return tasks

    def get_name(self) -> str:
        return "ParquetParts"
