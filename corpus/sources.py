"""Reading raw corpora into Ray Data: CSV/TSV, JSON Lines, Parquet and folders of text files.

A source may be a file, a folder, a glob or any pyarrow filesystem URI (s3://, gs://, hdfs://).
Every reader yields the same columns — `text` (or the feature columns), `label`, `source` (the
file a row came from, so later errors can name it) and `split` when the source ships its splits —
and every file's sha256 goes into the manifest, so a corpus version names exactly what it read.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs

from shipyard.errors import UserInputError
from shipyard.project import DataConfig

EXTENSION_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
}


@dataclass(frozen=True)
class SourceFile:
    path: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Source:
    """One resolved input: its files on one filesystem, and what role it plays."""

    field: str  # the config field it came from, for error messages
    filesystem: pafs.FileSystem
    files: tuple[str, ...]
    split: str | None = None


def resolve(location: str, field: str, split: str | None = None) -> Source:
    """Expand a file, folder, glob or URI into its files; fail naming the field when none exist."""
    if "://" in location:
        fs, root = pafs.FileSystem.from_uri(location)
    else:
        fs, root = pafs.LocalFileSystem(), os.path.abspath(location)
    if any(ch in root for ch in "*?["):
        if isinstance(fs, pafs.LocalFileSystem):
            files = sorted(p for p in glob.glob(root, recursive=True) if os.path.isfile(p))
        else:
            parent = root.split("*")[0].rsplit("/", 1)[0]
            infos = fs.get_file_info(pafs.FileSelector(parent, recursive=True))
            files = sorted(i.path for i in infos if i.is_file and fnmatch.fnmatch(i.path, root))
    else:
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.NotFound:
            raise UserInputError(f"{field}: {location}: no such file or folder")
        if info.type == pafs.FileType.Directory:
            infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
            files = sorted(
                i.path for i in infos if i.is_file and not os.path.basename(i.path).startswith(".")
            )
        else:
            files = [root]
    if not files:
        raise UserInputError(f"{field}: {location}: matches no files")
    return Source(field, fs, tuple(files), split)


def fingerprint(source: Source) -> list[SourceFile]:
    out = []
    for path in source.files:
        digest = hashlib.sha256()
        size = 0
        with source.filesystem.open_input_stream(path) as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
        out.append(SourceFile(path, digest.hexdigest(), size))
    return out


def detect_format(source: Source, data: DataConfig) -> str:
    if data.format != "auto":
        return data.format
    formats = {EXTENSION_FORMATS.get(os.path.splitext(p)[1].lower()) for p in source.files}
    if len(formats) == 1 and None not in formats:
        return formats.pop()
    if data.kind == "text" and None in formats and len(source.files) > 1:
        return "text_folder"
    raise UserInputError(
        f"data.format: cannot tell the format of {source.files[0]}"
        " (set data.format to csv, tsv, jsonl, parquet or text_folder)"
    )


def read(source: Source, data: DataConfig):
    """A Ray Dataset of the source's rows with `source` (and `split`) columns added."""
    import ray.data

    fmt = detect_format(source, data)
    files = list(source.files)
    common = {"filesystem": source.filesystem, "include_paths": True, "partitioning": None}
    if fmt in ("csv", "tsv"):
        ds = ray.data.read_csv(
            files,
            file_extensions=None,
            parse_options=csv_parse_options(fmt, data),
            read_options=pacsv.ReadOptions(
                column_names=None if data.header else data.column_names,
                autogenerate_column_names=not data.header and not data.column_names,
            ),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=False),
            **common,
        )
    elif fmt == "jsonl":
        ds = ray.data.read_json(files, lines=True, file_extensions=None, **common)
    elif fmt == "parquet":
        ds = ray.data.read_parquet(files, file_extensions=None, **common)
    else:
        ds = ray.data.read_binary_files(files, file_extensions=None, **common)
        ds = ds.map_batches(_decode_documents, batch_format="pyarrow")
    ds = ds.map_batches(_rename_path, batch_format="pyarrow")
    if source.split:
        ds = ds.map_batches(_add_split, fn_args=(source.split,), batch_format="pyarrow")
    return ds


def csv_parse_options(fmt: str, data: DataConfig) -> pacsv.ParseOptions:
    return pacsv.ParseOptions(
        delimiter=data.delimiter or ("\t" if fmt == "tsv" else ","),
        quote_char='"' if data.quoting else False,
        newlines_in_values=data.quoting,
    )


def _rename_path(batch: pa.Table) -> pa.Table:
    return batch.rename_columns(["source" if n == "path" else n for n in batch.column_names])


def _add_split(batch: pa.Table, split: str) -> pa.Table:
    return batch.append_column("split", pa.array([split] * batch.num_rows, pa.string()))


def _decode_documents(batch: pa.Table) -> pa.Table:
    """One document per file; the label is the name of the folder holding it."""
    texts, labels = [], []
    for path, payload in zip(batch["path"].to_pylist(), batch["bytes"].to_pylist(), strict=True):
        try:
            texts.append(payload.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise UserInputError(
                f"{path}: not UTF-8 text (byte {exc.start}: {payload[exc.start : exc.start + 4]!r})"
            ) from None
        labels.append(os.path.basename(os.path.dirname(path)))
    return pa.table({"text": pa.array(texts, pa.string()), "label": labels, "path": batch["path"]})


def select_columns(schema_names: list[str], wanted: str | int, field: str) -> str:
    """A column named in the config, by name or by position, as the name the reader produced."""
    names = [n for n in schema_names if n not in ("source", "split")]
    if isinstance(wanted, int):
        if not 0 <= wanted < len(names):
            raise UserInputError(
                f"{field}: column position {wanted} is out of range (the source has"
                f" {len(names)} columns: {', '.join(names)})"
            )
        return names[wanted]
    if wanted not in names:
        raise UserInputError(
            f"{field}: no column {wanted!r} in the source (columns: {', '.join(names)})"
        )
    return wanted


def locate_bad_row(source: Source, data: DataConfig, fmt: str) -> str | None:
    """After a parse error: find the first file and line that is malformed or not UTF-8.

    Runs only on the error path, in the driver, streaming each file, so the happy path pays
    nothing for precise error messages.
    """
    import csv
    import io

    for path in source.files:
        with source.filesystem.open_input_stream(path) as f:
            raw = f.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            return f"{path} line {line}: not UTF-8 text (byte {raw[exc.start : exc.start + 1]!r})"
        if fmt not in ("csv", "tsv"):
            continue
        opts = csv_parse_options(fmt, data)
        reader = csv.reader(
            io.StringIO(text, newline=""),
            delimiter=opts.delimiter,
            quoting=csv.QUOTE_MINIMAL if data.quoting else csv.QUOTE_NONE,
        )
        expected = None
        for row in reader:
            if expected is None:
                expected = len(data.column_names) if data.column_names else len(row)
            elif row and len(row) != expected:
                return (
                    f"{path} line {reader.line_num}: expected {expected} columns, got {len(row)}"
                    + ("" if data.quoting else " (quoting is off: is a delimiter inside a value?)")
                )
    return None


def to_string(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    return pc.cast(column, pa.string())
