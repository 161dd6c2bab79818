"""Errors raised inside Ray tasks, turned into one line naming the file, the row and the value.

A bad value surfaces in the driver wrapped in Ray's task errors (a traceback per hop); the person
running `prepare` needs the file, the line number and what is wrong with it, so the driver looks
the value up in the source again (`sources.locate_value`, `locate_bad_row`).
"""

from __future__ import annotations

import pyarrow as pa
import ray

from shipyard.corpus import clean, sources
from shipyard.corpus.project_inputs import is_extra, reading
from shipyard.errors import ShipyardError, UserInputError, first_line, root_cause
from shipyard.project import DataConfig


def input_error(
    exc: Exception, inputs: list[sources.Source], layouts: list[sources.Layout], data: DataConfig
) -> Exception:
    """The error to raise instead of `exc`: a UserInputError naming file and row when the input
    is at fault, else a ShipyardError with the original error's first line."""
    chain = [exc]
    while True:
        nxt = chain[-1].__cause__ or getattr(chain[-1], "cause", None)
        if nxt is None or nxt in chain:
            break
        chain.append(nxt)
    if _ours(exc):
        return exc  # raised by the driver itself: already one clear line
    for e in reversed(chain):  # the innermost: the original, not Ray's wrapper with a traceback
        if isinstance(e, clean.BadValue):
            return _bad_value(e, inputs, layouts, data)
        if _ours(e):
            return UserInputError(str(e))
    for e in chain:
        if isinstance(e, pa.ArrowInvalid | UnicodeDecodeError) or "ArrowInvalid" in str(e):
            for src, layout in zip(inputs, layouts, strict=True):
                where = sources.locate_bad_row(src, reading(src, data), layout.fmt)
                if where:
                    return UserInputError(where)
            return UserInputError(f"{inputs[0].field}: cannot parse the input: {first_line(e)}")
    if isinstance(exc, ShipyardError):
        return exc
    inner = root_cause(exc)  # the original error, not Ray's wrappers around it
    return ShipyardError(f"corpus preparation failed: {type(inner).__name__}: {first_line(inner)}")


def _ours(e: BaseException) -> bool:
    return isinstance(e, UserInputError) and not isinstance(e, ray.exceptions.RayError)


def _bad_value(
    e: clean.BadValue, inputs: list[sources.Source], layouts: list[sources.Layout], data: DataConfig
) -> UserInputError:
    for src, layout in zip(inputs, layouts, strict=True):
        if e.path in src.files:
            column = e.column
            if column == "label" and not is_extra(src):
                column = sources.select_columns(
                    list(layout.names), data.label_column, "data.label_column"
                )
            where = sources.locate_value(src, reading(src, data), layout, column, e.value)
            if where:
                return UserInputError(f"{where}: {e.problem}")
    return UserInputError(str(e.args[0]) if e.args else str(e))
