"""What a project's data section asks `prepare` to read, and how to parse and clean each source.

The main source (a file, a folder, the source's own splits, or the synthetic corpus) is described
by the data section's format options; extra rows (feedback a service captured) are recognized by
extension and use shipyard's own column names.
"""

from __future__ import annotations

import dataclasses

import pyarrow as pa

from shipyard.corpus import clean, sources, synth
from shipyard.errors import UserInputError
from shipyard.project import DataConfig, Project

EXTRA = "data.extra_sources"  # the field (and field prefix) naming extra rows in messages


def is_extra(src: sources.Source) -> bool:
    return src.field.startswith(EXTRA)


def resolve_inputs(project: Project, extra: list[str]) -> list[sources.Source]:
    data = project.data
    if data.synthetic:
        inputs = [sources.resolve(_synthesize(project), "data.synthetic")]
    elif data.source_splits:
        inputs = [
            sources.resolve(project.path(p), f"data.source_splits.{name}", split=name)
            for name, p in data.source_splits.items()
        ]
    else:
        inputs = [sources.resolve(project.path(data.source), "data.source")]
    for i, path in enumerate([*data.extra_sources, *extra]):
        inputs.append(sources.resolve(project.path(path), f"{EXTRA}[{i}]"))
    return inputs


def reading(src: sources.Source, data: DataConfig) -> DataConfig:
    """How to parse a source: the data section's format options describe the main source only;
    extra rows (feedback) are recognized by extension, with a header and default quoting."""
    if not is_extra(src):
        return data
    return data.model_copy(
        update={
            "format": "auto",
            "header": True,
            "quoting": True,
            "delimiter": None,
            "column_names": None,
        }
    )


def _synthesize(project: Project) -> str:
    """Generate the synthetic source once per spec; it is an input, kept beside the corpus."""
    spec = project.data.synthetic
    path = project.workdir_path / "raw" / f"synthetic-{project.fingerprint('data')}.parquet"
    if not path.exists():
        synth.write(synth.SynthSpec(**spec.model_dump()), path)
    return str(path)


def clean_options(data: DataConfig, layout: sources.Layout, has_split: bool) -> clean.CleanOptions:
    """How the main source's rows are cleaned: which columns hold the text or the features and
    the label, and the data section's limits."""
    names = list(layout.names)
    label = sources.select_columns(names, data.label_column, "data.label_column")
    label_map = tuple(sorted(data.label_map.items())) if data.label_map else None
    common = {"label_map": label_map, "seed": data.seed, "draw": not has_split}
    if data.kind == "text":
        text = sources.select_columns(names, data.text_column, "data.text_column")
        return clean.CleanOptions(
            kind="text",
            text_column=text,
            label_column=label,
            lowercase=data.lowercase,
            min_chars=data.min_chars,
            max_chars=data.max_chars,
            **common,
        )
    wanted = data.feature_columns or [n for n in names if n != label]
    features = [sources.select_columns(names, c, "data.feature_columns") for c in wanted]
    categorical = {
        sources.select_columns(names, c, "data.categorical_columns")
        for c in data.categorical_columns
    }
    for name in features:
        if not _is_numeric(layout.type_of(name)):
            categorical.add(name)
    return clean.CleanOptions(
        kind="tabular",
        text_column=None,
        label_column=label,
        numeric=tuple(f for f in features if f not in categorical),
        categorical=tuple(f for f in features if f in categorical),
        **common,
    )


def extra_options(
    opts: clean.CleanOptions, layout: sources.Layout, src: sources.Source, has_split: bool
) -> clean.CleanOptions:
    """Feedback rows use shipyard's own column names (`text` or the features, and `label`); with
    splits from the source they join train, so the source's evaluation splits stay fixed."""
    wanted = ["text"] if opts.kind == "text" else [*opts.numeric, *opts.categorical]
    missing = [c for c in [*wanted, "label"] if c not in layout.names]
    if missing:
        raise UserInputError(
            f"{src.field}: {src.files[0]} has no column {missing[0]!r}"
            f" (extra rows need {', '.join([*wanted, 'label'])}; found {', '.join(layout.names)})"
        )
    return dataclasses.replace(
        opts,
        text_column="text" if opts.kind == "text" else None,
        label_column="label",
        default_split="train" if has_split else None,
    )


def _is_numeric(t) -> bool:
    return t is not None and (pa.types.is_integer(t) or pa.types.is_floating(t))
