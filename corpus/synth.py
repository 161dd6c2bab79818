"""A seeded, learnable, realistically messy labeled corpus of any size, in constant memory.

Demo, tests and benchmarks run on it, so nothing depends on files a fresh machine lacks. Text rows
draw from a Zipf-distributed vocabulary mixed with label-specific topic words that overlap between
labels, with typos, stray punctuation and whitespace, a little label noise and a known share of
exact and near duplicates (so cleaning and deduplication have real work). Chinese text has no
spaces between words, as in real Chinese. Tabular rows have numeric and categorical columns and a
label that depends on them non-linearly, with interactions.
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa

from shipyard.errors import UserInputError

BINARY_LABELS = ("ham", "spam")
CREDIT_LABELS = ("good", "bad")
TOPIC_LABELS = (
    "sports", "politics", "science", "travel", "health", "music", "business", "food",
    "weather", "film", "games", "fashion", "law", "education", "space", "cars", "art",
    "history", "pets", "finance",
)  # fmt: skip
ENGLISH_SYLLABLES = [c + v for c in "bcdfghjklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai")]
WRITE_FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}


@dataclass(frozen=True)
class SynthSpec:
    kind: Literal["text", "tabular"] = "text"
    rows: int = 20_000
    classes: int = 2
    language: Literal["en", "zh"] = "en"
    duplicate_rate: float = 0.05  # half exact copies, half near copies of a recent row
    label_noise: float = 0.03
    typo_rate: float = 0.02  # per word
    vocab_size: int = 5_000
    topic_mix: float = 0.35  # share of a document's words drawn from its label's topic
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rows < 1:
            raise UserInputError(f"rows: must be >= 1 (got {self.rows})")
        if not 2 <= self.classes <= len(TOPIC_LABELS):
            raise UserInputError(f"classes: must be in 2..{len(TOPIC_LABELS)} (got {self.classes})")

    @property
    def labels(self) -> tuple[str, ...]:
        if self.classes == 2:
            return BINARY_LABELS if self.kind == "text" else CREDIT_LABELS
        return TOPIC_LABELS[: self.classes]


@dataclass
class SynthSummary:
    path: str
    rows: int
    bytes: int
    labels: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0


# -- text ----------------------------------------------------------------------------------------
class _TextModel:
    """Vocabulary, Zipf weights and topic words, all derived from the seed."""

    def __init__(self, spec: SynthSpec):
        self.spec = spec
        rng = np.random.default_rng([spec.seed, 1])
        self.words = np.array(_make_words(rng, spec.vocab_size, spec.language), dtype=object)
        ranks = np.arange(1, spec.vocab_size + 1)
        self.background = _normalized(1.0 / (ranks + 2.7) ** 1.07)
        # Each label favours its own few hundred words; random draws overlap across labels.
        self.topic_size = max(20, spec.vocab_size // 12)
        self.topics = np.stack(
            [
                rng.choice(spec.vocab_size, size=self.topic_size, replace=False, p=self.background)
                for _ in range(spec.classes)
            ]
        )
        self.topic_weights = _normalized(1.0 / np.arange(1, self.topic_size + 1) ** 0.9)
        self.separator = "" if spec.language == "zh" else " "


def _normalized(w: np.ndarray) -> np.ndarray:
    return w / w.sum()


def _make_words(rng: np.random.Generator, n: int, language: str) -> list[str]:
    words: dict[str, None] = {}
    if language == "zh":
        # Common CJK Unified Ideographs; real Chinese words are mostly 1-2 characters.
        pool = [chr(0x4E00 + i) for i in rng.choice(6000, size=2500, replace=False)]
        while len(words) < n:
            size = rng.choice([1, 2, 2, 2, 3])
            words["".join(rng.choice(pool, size=size))] = None
    else:
        while len(words) < n:
            size = rng.choice([1, 2, 2, 3, 3, 4])
            words["".join(rng.choice(ENGLISH_SYLLABLES, size=size))] = None
    return list(words)


def _typo(word: str, r: float) -> str:
    if len(word) < 3:
        return word + word[-1]
    i = int(r * (len(word) - 1))
    if r < 0.5:  # swap two neighbours
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    return word[:i] + word[i + 1 :]  # drop one


def iter_text_batches(spec: SynthSpec, batch_rows: int = 10_000) -> Iterator[pa.RecordBatch]:
    """Yield `text`, `label` batches; memory stays constant whatever `spec.rows` is."""
    model = _TextModel(spec)
    rng = np.random.default_rng([spec.seed, 2])
    recent: collections.deque[tuple[str, int]] = collections.deque(maxlen=2_000)
    labels = np.array(spec.labels, dtype=object)
    punctuation = np.array(["!", ".", "?", "!!", "..."], dtype=object)
    zh = spec.language == "zh"
    done = 0
    while done < spec.rows:
        n = min(batch_rows, spec.rows - done)
        classes = rng.integers(0, spec.classes, size=n)
        lengths = np.clip(rng.lognormal(np.log(14 if zh else 16), 0.55, size=n), 3, 150)
        lengths = lengths.astype(np.int64)
        total = int(lengths.sum())
        owner = np.repeat(classes, lengths)
        topical = rng.random(total) < spec.topic_mix
        tokens = np.where(
            topical,
            model.topics[owner, rng.choice(model.topic_size, size=total, p=model.topic_weights)],
            rng.choice(spec.vocab_size, size=total, p=model.background),
        )
        typos = np.flatnonzero(rng.random(total) < spec.typo_rate)
        typo_r = rng.random(len(typos))
        words = model.words[tokens]
        for j, r in zip(typos, typo_r, strict=True):
            words[j] = _typo(words[j], r)
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        dup = rng.random(n) < spec.duplicate_rate
        near = rng.random(n) < 0.5
        flip = rng.random(n) < spec.label_noise
        styles = rng.random(n)
        texts: list[str] = []
        out_labels = np.empty(n, dtype=np.int64)
        for i in range(n):
            if dup[i] and recent:
                text, label = recent[int(styles[i] * len(recent))]
                if near[i]:  # one word changed: a near duplicate
                    text = text + model.separator + str(model.words[tokens[bounds[i]]])
                texts.append(text)
                out_labels[i] = label
                continue
            text = model.separator.join(words[bounds[i] : bounds[i + 1]])
            style = styles[i]
            if style < 0.25:
                text = text[:1].upper() + text[1:] + punctuation[int(style * 20)]
            elif style < 0.30:
                text = "  " + text.replace(" ", "  ", 1) + " "  # stray whitespace to clean
            elif style < 0.33 and not zh:
                text += f" {int(style * 1e6) % 10_000:04d}"
            elif zh and style < 0.5:
                cut = len(text) // 2
                text = text[:cut] + "，" + text[cut:] + "。"
            label = int(classes[i] if not flip[i] else rng.integers(0, spec.classes))
            recent.append((text, label))
            texts.append(text)
            out_labels[i] = label
        yield pa.record_batch(
            [pa.array(texts, pa.string()), pa.array(labels[out_labels], pa.string())],
            names=["text", "label"],
        )
        done += n


# -- tabular -------------------------------------------------------------------------------------
REGIONS = ["north", "south", "east", "west", "central", "islands"]
EMPLOYMENT = ["employed", "self_employed", "unemployed", "student", "retired"]
PURPOSES = ["car", "house", "education", "business", "holiday", "repairs", "other"]


def iter_tabular_batches(spec: SynthSpec, batch_rows: int = 10_000) -> Iterator[pa.RecordBatch]:
    """Credit-like rows: the label depends non-linearly on numeric and categorical columns."""
    rng = np.random.default_rng([spec.seed, 3])
    effects = np.random.default_rng([spec.seed, 4])
    region_effect = effects.normal(0, 0.6, len(REGIONS))
    interaction = effects.normal(0, 0.9, (len(EMPLOYMENT), len(PURPOSES)))
    labels = np.array(spec.labels, dtype=object)
    done = 0
    while done < spec.rows:
        n = min(batch_rows, spec.rows - done)
        age = rng.integers(18, 76, size=n)
        income = np.round(rng.lognormal(np.log(38_000), 0.5, size=n), 2)
        debt_ratio = np.round(rng.beta(2, 5, size=n), 4)
        tenure = rng.integers(0, 240, size=n)
        accounts = rng.poisson(3, size=n)
        region = rng.integers(0, len(REGIONS), size=n)
        employment = rng.integers(0, len(EMPLOYMENT), size=n)
        purpose = rng.integers(0, len(PURPOSES), size=n)
        logit = (
            1.2 * np.sin((age - 18) / 9.0)
            + 0.9 * np.log(income / 38_000)
            - 9.0 * (debt_ratio - 0.25) ** 2
            + 0.6 * np.tanh((tenure - 60) / 40)
            - 0.25 * np.abs(accounts - 3)
            + region_effect[region]
            + interaction[employment, purpose]
        )
        score = logit + rng.logistic(0, 0.6, size=n)
        if spec.classes == 2:
            cls = (score > np.median(logit)).astype(np.int64)
        else:
            edges = np.quantile(logit, np.linspace(0, 1, spec.classes + 1)[1:-1])
            cls = np.searchsorted(edges, score)
        flip = rng.random(n) < spec.label_noise
        cls = np.where(flip, rng.integers(0, spec.classes, size=n), cls)
        yield pa.record_batch(
            {
                "age": pa.array(age, pa.int64()),
                "income": pa.array(income),
                "debt_ratio": pa.array(debt_ratio),
                "tenure_months": pa.array(tenure, pa.int64()),
                "accounts": pa.array(accounts, pa.int64()),
                "region": pa.array(np.array(REGIONS, dtype=object)[region], pa.string()),
                "employment": pa.array(np.array(EMPLOYMENT, dtype=object)[employment], pa.string()),
                "purpose": pa.array(np.array(PURPOSES, dtype=object)[purpose], pa.string()),
                "label": pa.array(labels[cls], pa.string()),
            }
        )
        done += n


# -- writing -------------------------------------------------------------------------------------
def iter_batches(spec: SynthSpec, batch_rows: int = 10_000) -> Iterator[pa.RecordBatch]:
    return (iter_text_batches if spec.kind == "text" else iter_tabular_batches)(spec, batch_rows)


def write(spec: SynthSpec, out: str | os.PathLike, batch_rows: int = 10_000) -> SynthSummary:
    """Stream the corpus to `out`; the format follows the extension (.tsv .csv .jsonl .parquet).

    Writes to a temporary name and renames at the end, so a crash never leaves a file that looks
    complete.
    """
    path = Path(out)
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UserInputError(
            f"--out {path}: unknown extension {path.suffix!r}"
            f" (use one of {', '.join(WRITE_FORMATS)})"
        )
    if fmt == "tsv" and spec.kind == "tabular":
        fmt = "csv_tab"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    counts: collections.Counter[str] = collections.Counter()
    seen: set[int] = set()
    duplicates = 0
    writer = None
    try:
        with open(tmp, "wb") as sink:
            for i, batch in enumerate(iter_batches(spec, batch_rows)):
                counts.update(batch.column("label").to_pylist())
                if spec.kind == "text" and spec.rows <= 2_000_000:
                    for t in batch.column("text").to_pylist():
                        h = hash(t)
                        duplicates += h in seen
                        seen.add(h)
                writer = _write_batch(fmt, sink, batch, writer, first=i == 0)
            if writer is not None:
                writer.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return SynthSummary(str(path), spec.rows, path.stat().st_size, dict(counts), duplicates)


def _write_batch(fmt: str, sink, batch: pa.RecordBatch, writer, first: bool):
    if fmt == "parquet":
        import pyarrow.parquet as pq

        writer = writer or pq.ParquetWriter(sink, batch.schema, compression="zstd")
        writer.write_batch(batch)
    elif fmt == "tsv":  # label<TAB>text, like SMSSpamCollection but with a header
        lines = [
            f"{lab}\t{txt}\n" for lab, txt in zip(*_columns(batch, "label", "text"), strict=True)
        ]
        sink.write((("label\ttext\n" if first else "") + "".join(lines)).encode())
    elif fmt == "jsonl":
        names = batch.schema.names
        rows = zip(*(batch.column(n).to_pylist() for n in names), strict=True)
        sink.write(
            "".join(
                json.dumps(dict(zip(names, r, strict=True)), ensure_ascii=False) + "\n"
                for r in rows
            ).encode()
        )
    else:
        import pyarrow.csv as pcsv

        options = pcsv.WriteOptions(
            include_header=first, delimiter="\t" if fmt == "csv_tab" else ","
        )
        pcsv.write_csv(pa.Table.from_batches([batch]), sink, options)
    return writer


def _columns(batch: pa.RecordBatch, *names: str) -> list[list]:
    return [batch.column(n).to_pylist() for n in names]
