"""The HTTP API's bodies, and the checks that turn raw JSON into the columns a model reads.

Pydantic checks shapes and types (FastAPI answers 422 naming the field); `to_columns` checks what
only the served model knows (its columns, the size limits) and raises `BadInput`, which the
ingress answers with 422 and the same kind of message. Nothing here imports TensorFlow or Ray.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Scalar = str | float | int | bool | None
Input = str | dict[str, Scalar]


class BadInput(ValueError):
    """An input the model cannot take; the message names the item and the problem."""


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _unicode_only(cls, data: Any) -> Any:
        # JSON may escape a lone surrogate ("\\ud800"), which Python decodes into a str no
        # encoder accepts: TensorFlow's string tensors and the feedback log would fail on it
        # with a 5xx long after validation. Refuse it here, naming where it is.
        where = _first_surrogate(data, "")
        if where is not None:
            where = where.encode("utf-8", "backslashreplace").decode() or "body"
            raise ValueError(f"{where}: not valid Unicode (a lone surrogate code point)")
        return data


class PredictRequest(Body):
    inputs: list[Input] = Field(
        min_length=1,
        description="raw texts (text models) or rows of feature values (tabular models)",
        examples=[["win a free prize now", "see you at lunch"]],
    )


class ExplainRequest(PredictRequest):
    method: Literal["occlusion"] = Field(
        "occlusion",
        description="occlusion: each token (or feature) is removed in turn and the drop in the"
        " predicted class's probability is its attribution",
    )


class FeedbackRequest(Body):
    input: Input
    prediction: str = Field(description="the label the service answered")
    label: str = Field(description="the correct label")
    version: int | None = Field(None, description="the model version that answered")
    arm: Literal["champion", "challenger"] | None = None
    request_id: str | None = Field(None, description="the X-Request-ID of the prediction")


class ModelRef(BaseModel):
    name: str
    version: int | None
    variant: str
    arm: Literal["champion", "challenger"]


class Prediction(BaseModel):
    label: str
    probabilities: dict[str, float]
    model: ModelRef


class PredictResponse(BaseModel):
    predictions: list[Prediction]
    request_id: str


class Attribution(BaseModel):
    token: str = Field(description="the token (text) or feature name (tabular)")
    start: int | None = Field(None, description="character offset in the text")
    end: int | None = None
    score: float = Field(description="drop in the predicted class's probability without it")


class Explanation(Prediction):
    method: str
    attributions: list[Attribution]


class ExplainResponse(BaseModel):
    explanations: list[Explanation]
    request_id: str


class FeedbackResponse(BaseModel):
    id: str
    stored: Literal[True] = True
    request_id: str


class ModelInfo(BaseModel):
    name: str
    version: int | None
    variant: str
    labels: list[str]
    columns: dict[str, str]
    corpus_content_hash: str
    metrics: dict[str, float]


class ServiceInfo(BaseModel):
    champion: ModelInfo
    challenger: ModelInfo | None
    challenger_percent: float
    canary: dict[str, Any] | None = None


def to_columns(
    inputs: Sequence[Input], columns: Mapping[str, str], *, max_items: int, max_chars: int
) -> dict[str, list[Scalar]]:
    """Validated inputs as the model's raw columns, or `BadInput` naming what is wrong."""
    if len(inputs) > max_items:
        raise BadInput(f"inputs: {len(inputs)} items, at most {max_items} per request")
    names = list(columns)
    if names == ["text"]:
        texts = []
        for i, item in enumerate(inputs):
            if isinstance(item, dict):
                item = item.get("text") if set(item) == {"text"} else item
            if not isinstance(item, str):
                raise BadInput(f"inputs[{i}]: a text model takes strings (got {_kind(item)})")
            if not item.strip():
                raise BadInput(f"inputs[{i}]: empty text")
            if len(item) > max_chars:
                raise BadInput(f"inputs[{i}]: {len(item)} characters, at most {max_chars}")
            texts.append(item)
        return {"text": texts}
    out: dict[str, list[Scalar]] = {name: [] for name in names}
    for i, row in enumerate(inputs):
        if not isinstance(row, dict):
            raise BadInput(
                f"inputs[{i}]: a tabular model takes rows of features {names} (got {_kind(row)})"
            )
        unknown = sorted(set(row) - set(names))
        if unknown:
            raise BadInput(
                f"inputs[{i}]: unknown feature columns {unknown} (the model reads {names})"
            )
        missing = [name for name in names if name not in row]
        if missing:
            raise BadInput(
                f"inputs[{i}]: missing feature columns {missing} (null marks a missing value)"
            )
        for name, dtype in columns.items():
            value = row[name]
            if dtype == "float32" and isinstance(value, str | bool):
                raise BadInput(f"inputs[{i}].{name}: a number or null (got {value!r})")
            if dtype != "float32" and isinstance(value, str) and len(value) > max_chars:
                raise BadInput(f"inputs[{i}].{name}: {len(value)} characters, at most {max_chars}")
            out[name].append(value)
    return out


def _first_surrogate(value: Any, path: str) -> str | None:
    """The dotted path of the first string (or key) that cannot be encoded as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            found = _first_surrogate(key, where) if isinstance(key, str) else None
            found = found if found is not None else _first_surrogate(item, where)
            if found is not None:
                return found
        return None
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _first_surrogate(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string"}.get(
        type(value), type(value).__name__
    )
