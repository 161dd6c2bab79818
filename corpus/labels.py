"""Class names and ids: from `data.label_map`, or the labels the corpus holds, sorted."""

from __future__ import annotations

from shipyard.errors import UserInputError
from shipyard.project import DataConfig


def check_label_map(data: DataConfig) -> None:
    """Class ids index the model's outputs: they must be 0..n-1."""
    if data.label_map:
        ids = sorted(set(data.label_map.values()))
        if ids != list(range(len(ids))):
            raise UserInputError(
                f"data.label_map: ids must be 0..{len(ids) - 1} without gaps (got {ids})"
            )


def class_labels(data: DataConfig, seen: set[str]) -> tuple[list[str], dict[str, int]]:
    """(class names by id, label value -> id). Label values mapped to one id share its name."""
    if data.label_map:
        ids = sorted(set(data.label_map.values()))
        names = ["|".join(k for k, v in sorted(data.label_map.items()) if v == i) for i in ids]
        return names, dict(data.label_map)
    found = sorted(seen)
    if len(found) < 2:
        raise UserInputError(
            f"data.label_column: found {len(found)} label(s) {found}; need at least 2"
        )
    return found, {lab: i for i, lab in enumerate(found)}
