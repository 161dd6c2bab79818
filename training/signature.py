"""The export's signature: what an exported model takes, returns and was made from.

One typed record (`ExportSignature`), written by the export writer and read by the loader through
`write_signature` / `read_signature` only, kept as `signature.json` beside `saved_model/`. It is
plain JSON so that a process without shipyard can read it too, and this module needs nothing but
the standard library (no TensorFlow, no Ray).

Format 2 adds `op_libraries` (Python modules whose TensorFlow ops the graph uses, imported before
`tf.saved_model.load`) and names the raw input `columns`; format 1 files still load.
"""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from shipyard.errors import UserInputError

SAVED_MODEL = "saved_model"
SIGNATURE_FILE = "signature.json"
SERVING_KEY = "serving_default"
VECTORIZE_KEY = "vectorize"  # ids models: text -> the ids the model reads
OUTPUT = "probs"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


@dataclass
class OutputSpec:
    name: str  # the serving signature's output key
    shape: list[int | None]  # [None, 1] for binary, [None, k] otherwise
    meaning: str  # "P(labels[1])" or "P(labels[i])"


@dataclass
class CorpusRef:
    kind: str  # "text" or "tabular"
    content_hash: str
    path: str
    manifest: str


@dataclass
class CheckpointRef:
    path: str
    epoch: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Variant:
    """One servable form of the model: the full SavedModel or a TFLite conversion."""

    file: str | None = None  # relative to the export folder
    bytes: int | None = None
    accuracy: float | None = None  # measured on `accuracy_split`
    accuracy_split: str | None = None  # "test", or "validation" when the corpus has no test
    max_abs_diff_vs_full: float | None = None
    seconds: float | None = None
    error: str | None = None  # why the conversion failed (then nothing else is set)


@dataclass
class ExportSignature:
    name: str  # the registered model name
    model_kind: str
    inputs: str  # what the Keras model reads: "ids", "text" or "features"
    columns: dict[str, str]  # the raw input the export takes: column -> "string" | "float32"
    labels: list[str]
    output: OutputSpec
    corpus: CorpusRef
    model_config: dict[str, Any]  # the ModelConfig the weights were trained with
    checkpoint: CheckpointRef
    tokenizer: dict[str, Any] | None = None  # TokenizerSettings of text corpora
    op_libraries: list[str] = field(default_factory=list)  # imported before loading the graph
    signatures: list[str] = field(default_factory=lambda: [SERVING_KEY])
    serving_signature: str = SERVING_KEY
    variants: dict[str, Variant] = field(default_factory=dict)
    tensorflow: str = ""
    created_at: str = ""
    format_version: int = FORMAT_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def width(self) -> int:
        """Columns of the output: 1 for binary models, k otherwise."""
        return int(self.output.shape[1])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = SIGNATURE_FILE) -> ExportSignature:
        version = data.get("format_version")
        if version not in READABLE_VERSIONS:
            raise UserInputError(
                f"{where}: signature format {version!r}; this shipyard reads formats"
                f" {', '.join(map(str, READABLE_VERSIONS))}"
            )
        data = _from_format_1(data) if version == 1 else dict(data)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserInputError(f"{where}: unknown signature fields {', '.join(unknown)}")
        required = [
            f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
        ]
        missing = [name for name in required if name not in data]
        if missing:
            raise UserInputError(f"{where}: the signature lacks {', '.join(map(repr, missing))}")
        try:
            return cls(
                **{
                    **data,
                    "output": OutputSpec(**data["output"]),
                    "corpus": CorpusRef(**data["corpus"]),
                    "checkpoint": CheckpointRef(**data["checkpoint"]),
                    "variants": {k: Variant(**v) for k, v in data.get("variants", {}).items()},
                    "format_version": FORMAT_VERSION,
                }
            )
        except (TypeError, AttributeError) as exc:
            raise UserInputError(f"{where}: not a shipyard signature ({exc})") from None


def write_signature(folder: str, signature: ExportSignature) -> None:
    with open(os.path.join(folder, SIGNATURE_FILE), "w", encoding="utf-8") as f:
        json.dump(signature.to_dict(), f, indent=1, ensure_ascii=False, default=str)
        f.write("\n")


def read_signature(folder: str) -> ExportSignature:
    path = os.path.join(folder, SIGNATURE_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise UserInputError(f"{folder}: not a shipyard export (no {SIGNATURE_FILE})") from None
    except ValueError as exc:
        raise UserInputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: not a shipyard signature (a JSON object is expected)")
    return ExportSignature.from_dict(data, path)


def export_root(path: str) -> str:
    """The export folder for `path`: the folder itself or its `saved_model/` inside."""
    path = os.path.abspath(path)
    if os.path.isfile(os.path.join(path, SIGNATURE_FILE)):
        return path
    parent = os.path.dirname(path)
    if os.path.basename(path) == SAVED_MODEL and os.path.isfile(
        os.path.join(parent, SIGNATURE_FILE)
    ):
        return parent
    raise UserInputError(f"{path}: not a shipyard export (no {SIGNATURE_FILE})")


def _from_format_1(data: dict[str, Any]) -> dict[str, Any]:
    """Format 1 (before op libraries): `serving_input` for the columns, a redundant
    `num_classes` and `features`, and each variant's accuracy under `<split>_accuracy`."""
    data = dict(data)
    data["columns"] = data.pop("serving_input", {})
    data.pop("num_classes", None)
    data.pop("features", None)
    variants = {}
    for name, info in (data.get("variants") or {}).items():
        info = dict(info)
        for split in ("test", "validation"):
            if f"{split}_accuracy" in info:
                info["accuracy"] = info.pop(f"{split}_accuracy")
                info["accuracy_split"] = split
        variants[name] = info
    data["variants"] = variants
    return data
