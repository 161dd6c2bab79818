"""A prepared corpus on disk: Parquet shards per split and the `manifest.json` that describes them.

The manifest is the contract between the corpus and everything downstream: training reads the
vocabulary, tokenizer settings, labels and tabular statistics from it (so the exported model
encodes exactly like the shards), and a model version records its `content_hash`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property

import pyarrow.dataset as pads
import pyarrow.fs as pafs

from shipyard.corpus.tokenizer_settings import TokenizerSettings
from shipyard.errors import UserInputError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
# Splits up to this size are read by the driver when loaded (`PreparedCorpus.loaded_dataset`).
READ_IN_DRIVER_BYTES = 256 << 20


@dataclass(frozen=True)
class PreparedCorpus:
    path: str
    manifest: dict

    @classmethod
    def load(cls, path: str) -> PreparedCorpus:
        fs, root = _fs(path)
        file = f"{root.rstrip('/')}/{MANIFEST}"
        if fs.get_file_info(file).type == pafs.FileType.NotFound:
            raise UserInputError(f"{path}: no prepared corpus here (run `shipyard data prepare`)")
        with fs.open_input_stream(file) as f:
            manifest = json.loads(f.read())
        if manifest.get("format_version") != FORMAT_VERSION:
            raise UserInputError(f"{file}: manifest format {manifest.get('format_version')}")
        return cls(path, manifest)

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def labels(self) -> list[str]:
        return self.manifest["labels"]

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def content_hash(self) -> str:
        return self.manifest["content_hash"]

    @cached_property
    def tokenizer(self) -> TokenizerSettings:
        return TokenizerSettings(**self.manifest["tokenizer"])

    @property
    def vocabulary(self) -> list[str]:
        return self.manifest["vocabulary"]

    @property
    def features(self) -> dict:
        return self.manifest["features"]

    def rows(self, split: str) -> int:
        return self.manifest["splits"].get(split, {}).get("rows", 0)

    def split_path(self, split: str) -> str:
        return f"{self.path.rstrip('/')}/{split}"

    def dataset(self, split: str):
        """The split's shards as a streaming Ray Dataset."""
        import ray.data

        if not self.rows(split):
            raise UserInputError(f"{self.path}: the {split!r} split is empty")
        return ray.data.read_parquet(self.split_path(split), partitioning=None)

    def loaded_dataset(self, split: str):
        """The split's shards read into the object store now, for datasets iterated many times
        (every epoch, every trial).

        A split of at most `READ_IN_DRIVER_BYTES` is read here with pyarrow: a Ray Data read
        would schedule list and read tasks (~2 s each on a small cluster) to fetch a few MB.
        Larger splits are read by the cluster and materialized (spilling to disk if need be)."""
        import ray.data

        if self.split_bytes(split) > READ_IN_DRIVER_BYTES:
            return self.dataset(split).materialize()
        fs, root = _fs(self.split_path(split))
        table = pads.dataset(root, filesystem=fs, format="parquet").to_table()
        return ray.data.from_arrow(table)

    def split_bytes(self, split: str) -> int:
        """Bytes of the split's Parquet files on disk (0 for a split the corpus lacks)."""
        return self._split_bytes.get(split, 0)

    @cached_property
    def _split_bytes(self) -> dict[str, int]:
        """Listed once: a prepared corpus is written whole and never changes in place."""
        sizes = {}
        for split in self.manifest["splits"]:
            fs, root = _fs(self.split_path(split))
            if fs.get_file_info(root).type != pafs.FileType.Directory:
                continue
            files = fs.get_file_info(pafs.FileSelector(root, recursive=True))
            sizes[split] = sum(f.size for f in files if f.type == pafs.FileType.File)
        return sizes


def _fs(path: str) -> tuple[pafs.FileSystem, str]:
    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def write_manifest(path: str, manifest: dict) -> None:
    with open(os.path.join(path, MANIFEST), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False, sort_keys=False)
        f.write("\n")
