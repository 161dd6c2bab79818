"""Reading raw corpora into Ray Data: CSV/TSV, JSON Lines, Parquet and folders of text files.

A source may be a file, a folder, a glob or any pyarrow filesystem URI (s3://, gs://, hdfs://).
Every reader yields the source's columns plus `source` (the file a row came from, so later errors
can name it) and `split` when the source ships its splits; every file's sha256 goes into the
manifest, so a corpus version names exactly what it read.

CSV/TSV and JSON Lines are read by line ranges, not whole files: one big file is read by many
tasks at once (on every node), which Ray's own readers cannot do. A range owns the lines that
start inside it. Quoted CSV may hold newlines inside values, so it is split by file only. All
CSV columns are read as strings; the cleaning step casts numeric columns and names the file and
value when one does not parse, instead of per-range type inference disagreeing between ranges.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata

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
SAMPLE_BYTES = 1 << 20  # what the driver parses to learn column names and types
MIN_RANGE_BYTES = 4 << 20
MAX_RANGE_BYTES = 8 << 20  # a read task parses and cleans this much: its memory is ~30x that
RESERVED = ("source", "split")  # columns the readers add


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


@dataclass(frozen=True)
class Layout:
    """What the driver learned from a sample of the first file: format, column names, types."""

    fmt: str
    names: tuple[str, ...]
    types: tuple[pa.DataType, ...]

    def type_of(self, name: str) -> pa.DataType | None:
        return dict(zip(self.names, self.types, strict=True)).get(name)


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
        try:
            with source.filesystem.open_input_stream(path) as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
                    size += len(chunk)
        except OSError as exc:
            raise UserInputError(f"{path}: cannot read ({exc})") from None
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


def csv_parse_options(fmt: str, data: DataConfig) -> pacsv.ParseOptions:
    return pacsv.ParseOptions(
        delimiter=data.delimiter or ("\t" if fmt == "tsv" else ","),
        quote_char='"' if data.quoting else False,
        newlines_in_values=data.quoting,
    )


# -- the driver's look at the first file ---------------------------------------------------------
def inspect(source: Source, data: DataConfig, fmt: str | None = None) -> Layout:
    """Column names and types from a sample of the first file (cheap, in the driver)."""
    fmt = fmt or detect_format(source, data)
    path = source.files[0]
    if fmt == "text_folder":
        return Layout(fmt, ("text", "label"), (pa.string(), pa.string()))
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            schema = pq.read_schema(path, filesystem=source.filesystem)
            return Layout(fmt, tuple(schema.names), tuple(schema.types))
        with source.filesystem.open_input_file(path) as f:
            schema = _sample_schema(f, fmt, data)
        names = tuple(schema.names)
    except (pa.ArrowInvalid, UnicodeDecodeError, OSError) as exc:
        where = locate_bad_row(Source(source.field, source.filesystem, (path,)), data, fmt)
        raise UserInputError(where or f"{path}: cannot read as {fmt}: {exc}") from None
    if data.column_names and fmt in ("csv", "tsv"):
        if len(data.column_names) != len(names):
            raise UserInputError(
                f"data.column_names: {len(data.column_names)} names for {len(names)} columns"
                f" in {path}"
            )
        names = tuple(data.column_names)
    clash = [n for n in names if n in RESERVED]
    if clash:
        raise UserInputError(f"{path}: column name {clash[0]!r} is reserved (rename it)")
    return Layout(fmt, names, tuple(schema.types))


def _sample_schema(f, fmt: str, data: DataConfig) -> pa.Schema:
    """Names and inferred types from the first block of a file (a streaming reader, so a
    quoted value holding a newline is never cut in half)."""
    if fmt == "jsonl":
        import pyarrow.json as pajson

        sample = f.read(SAMPLE_BYTES)
        if len(sample) == SAMPLE_BYTES:
            sample = sample[: sample.rfind(b"\n") + 1] or sample + _read_to_newline(f)
        return pajson.read_json(
            pa.py_buffer(sample), read_options=pajson.ReadOptions(use_threads=False)
        ).schema
    read = pacsv.ReadOptions(
        use_threads=False,
        block_size=SAMPLE_BYTES,
        autogenerate_column_names=not data.header and not data.column_names,
    )
    if data.column_names and not data.header:
        read.column_names = list(data.column_names)
    reader = pacsv.open_csv(
        f,
        read_options=read,
        parse_options=csv_parse_options(fmt, data),
        convert_options=pacsv.ConvertOptions(strings_can_be_null=False),
    )
    return reader.schema


def _parse_lines(raw: bytes, fmt: str, data: DataConfig, names: list[str], first: bool):
    """Parse a run of whole lines; `first`: the run starts the file (it may hold the header)."""
    if not raw.strip():
        return pa.table({n: pa.array([], pa.string()) for n in names})
    if fmt == "jsonl":
        import pyarrow.json as pajson

        block = max(1 << 20, len(raw) + 1)  # one block: a line may never straddle two
        table = pajson.read_json(
            pa.py_buffer(raw), read_options=pajson.ReadOptions(use_threads=False, block_size=block)
        )
        return table.select([n for n in table.column_names if n not in RESERVED])
    skip = 1 if data.header and first else 0
    if skip and not raw.split(b"\n", 1)[-1].strip():  # a file holding only its header
        return pa.table({n: pa.array([], pa.string()) for n in names})
    return pacsv.read_csv(
        pa.py_buffer(raw),
        read_options=pacsv.ReadOptions(use_threads=False, column_names=names, skip_rows=skip),
        parse_options=csv_parse_options(fmt, data),
        convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names}, strings_can_be_null=False
        ),
    )


def _read_to_newline(f) -> bytes:
    """Bytes up to and including the next newline (or to the end of the file)."""
    parts = []
    while chunk := f.read(1 << 16):
        cut = chunk.find(b"\n")
        if cut >= 0:
            parts.append(chunk[: cut + 1])
            break
        parts.append(chunk)
    return b"".join(parts)


# -- distributed reading -------------------------------------------------------------------------
def read(source: Source, data: DataConfig, layout: Layout, cpus: int = 2):
    """A Ray Dataset of the source's rows with `source` (and `split`) columns added."""
    import ray.data

    files = list(source.files)
    if layout.fmt in ("csv", "tsv", "jsonl"):
        ranges = _LineRanges(source, data, layout, cpus)
        # One block per range: Ray would otherwise split them towards its default parallelism.
        ds = ray.data.read_datasource(ranges, override_num_blocks=len(ranges.ranges))
    else:
        common = {"filesystem": source.filesystem, "include_paths": True, "partitioning": None}
        if layout.fmt == "parquet":
            ds = ray.data.read_parquet(files, file_extensions=None, **common)
        else:
            ds = ray.data.read_binary_files(files, file_extensions=None, **common)
            ds = ds.map_batches(_decode_documents, batch_format="pyarrow")
        ds = ds.map_batches(_rename_path, batch_format="pyarrow")
    if source.split:
        ds = ds.map_batches(_add_split, fn_args=(source.split,), batch_format="pyarrow")
    return ds


class _LineRanges(Datasource):
    """Read tasks over byte ranges of CSV/TSV/JSONL files; each task parses whole lines."""

    def __init__(self, source: Source, data: DataConfig, layout: Layout, cpus: int):
        super().__init__()
        self.source, self.data, self.layout = source, data, layout
        sizes = [source.filesystem.get_file_info(p).size for p in source.files]
        self.total = sum(sizes)
        splittable = layout.fmt == "jsonl" or not data.quoting
        # About four ranges per CPU so both the work and the tail balance over the cluster.
        step = min(MAX_RANGE_BYTES, max(MIN_RANGE_BYTES, self.total // max(1, 4 * cpus)))
        self.ranges: list[tuple[str, int, int]] = []
        for path, size in zip(source.files, sizes, strict=True):
            cuts = list(range(0, size - step // 2, step)) if splittable and size > step else [0]
            self.ranges += [(path, lo, hi) for lo, hi in zip(cuts, [*cuts[1:], size], strict=True)]

    def estimate_inmemory_data_size(self) -> int:
        return int(self.total * 1.2)

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None):
        fs, data, layout = self.source.filesystem, self.data, self.layout
        tasks = []
        for path, lo, hi in self.ranges:
            meta = BlockMetadata(
                num_rows=None, size_bytes=int((hi - lo) * 1.2), exec_stats=None, input_files=[path]
            )
            tasks.append(
                ReadTask(
                    lambda p=path, a=lo, b=hi: _read_range(fs, p, a, b, data, layout),
                    meta,
                    per_task_row_limit=per_task_row_limit,
                )
            )
        return tasks

    def get_name(self) -> str:  # Ray shows it as Read<name>: ReadTSV, ReadJSONL, ...
        return self.layout.fmt.upper()


def _read_range(
    fs: pafs.FileSystem, path: str, start: int, end: int, data: DataConfig, layout: Layout
) -> list[pa.Table]:
    """The lines that start in [start, end) of `path`, parsed, with a `source` column.

    No rows, no block: empty blocks only cost scheduling downstream (and trip shuffles).
    """
    with fs.open_input_file(path) as f:
        begin = 0
        if start > 0:
            f.seek(start - 1)  # a line starts at `start` exactly when the byte before is "\n"
            begin = start - 1 + len(_read_to_newline(f))
        raw = b""
        if begin < end:
            f.seek(begin)
            raw = f.read(end - begin)
            if raw and not raw.endswith(b"\n"):
                raw += _read_to_newline(f)
    names = list(layout.names)
    first = begin == 0
    if first and data.header and layout.fmt in ("csv", "tsv"):
        _check_header(raw, path, data, layout)
    table = _parse_lines(raw, layout.fmt, data, names, first)
    if not table.num_rows:
        return []
    source = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(table.num_rows, dtype=np.int32)), pa.array([path])
    )
    return [table.append_column("source", source)]


def _check_header(raw: bytes, path: str, data: DataConfig, layout: Layout) -> None:
    """Every file of a glob must have the first file's header, or its columns would shift."""
    if data.column_names:
        return
    line = raw.split(b"\n", 1)[0]
    header = pacsv.read_csv(
        pa.py_buffer(line + b"\n"),
        read_options=pacsv.ReadOptions(use_threads=False),
        parse_options=csv_parse_options(layout.fmt, data),
    ).column_names
    if tuple(header) != layout.names:
        raise UserInputError(
            f"{path}: header {header} differs from the first file's {list(layout.names)}"
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
            line = payload[: exc.start].count(b"\n") + 1
            raise UserInputError(
                f"{path} line {line}: not UTF-8 text (byte {payload[exc.start : exc.start + 1]!r})"
            ) from None
        labels.append(os.path.basename(os.path.dirname(path)))
    return pa.table({"text": pa.array(texts, pa.string()), "label": labels, "path": batch["path"]})


def select_columns(schema_names: list[str], wanted: str | int, field: str) -> str:
    """A column named in the config, by name or by position, as the name the reader produced."""
    names = [n for n in schema_names if n not in RESERVED]
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


# -- precise errors, on the error path only ------------------------------------------------------
def locate_bad_row(source: Source, data: DataConfig, fmt: str) -> str | None:
    """After a parse error: find the first file and line that is malformed or not UTF-8.

    Runs only on the error path, in the driver, streaming each file, so the happy path pays
    nothing for precise error messages.
    """
    import csv
    import io
    import json

    for path in source.files:
        with source.filesystem.open_input_stream(path) as f:
            raw = f.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            return f"{path} line {line}: not UTF-8 text (byte {raw[exc.start : exc.start + 1]!r})"
        if fmt == "jsonl":
            for number, line in enumerate(text.split("\n"), 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    return f"{path} line {number}: not valid JSON ({exc.msg})"
                if not isinstance(row, dict):
                    return f"{path} line {number}: expected a JSON object per line"
            continue
        if fmt not in ("csv", "tsv"):
            continue
        opts = csv_parse_options(fmt, data)
        reader = csv.reader(
            io.StringIO(text, newline=""),
            delimiter=opts.delimiter,
            quoting=csv.QUOTE_MINIMAL if data.quoting else csv.QUOTE_NONE,
        )
        expected = len(data.column_names) if data.column_names and not data.header else None
        for row in reader:
            if not row:
                continue
            if expected is None:
                expected = len(row)
            elif len(row) != expected:
                return (
                    f"{path} line {reader.line_num}: expected {expected} columns, got {len(row)}"
                    + ("" if data.quoting else " (quoting is off: is a delimiter inside a value?)")
                )
    return None


def locate_value(
    source: Source, data: DataConfig, layout: Layout, column: str, value: str
) -> str | None:
    """`path line N` (or `path row N`) of the first row whose `column` holds `value`."""
    import csv
    import io
    import json

    index = layout.names.index(column) if column in layout.names else None
    for path in source.files:
        if layout.fmt == "text_folder":
            if column == "label" and os.path.basename(os.path.dirname(path)) == value:
                return path
            continue
        if layout.fmt == "parquet":
            import pyarrow.parquet as pq

            values = pq.read_table(path, columns=[column], filesystem=source.filesystem)[column]
            for number, v in enumerate(values.to_pylist(), 1):
                if v is not None and str(v).strip() == value:
                    return f"{path} row {number}"
            continue
        with source.filesystem.open_input_stream(path) as f:
            text = f.read().decode("utf-8", errors="replace")
        if layout.fmt == "jsonl":
            for number, line in enumerate(text.split("\n"), 1):
                if line.strip():
                    v = json.loads(line).get(column)
                    if v is not None and str(v).strip() == value:
                        return f"{path} line {number}"
            continue
        opts = csv_parse_options(layout.fmt, data)
        reader = csv.reader(
            io.StringIO(text, newline=""),
            delimiter=opts.delimiter,
            quoting=csv.QUOTE_MINIMAL if data.quoting else csv.QUOTE_NONE,
        )
        for row in reader:
            if index is not None and index < len(row) and row[index].strip() == value:
                if data.header and reader.line_num == 1:
                    continue
                return f"{path} line {reader.line_num}"
    return None
