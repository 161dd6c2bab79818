"""Attributions by occlusion: how much the predicted class's probability drops without each part.

Written here rather than taken from an explainer library (Alibi moved to a licence we cannot ship).
Occlusion needs nothing but the served signature: one extra input per token (or feature), so an
explanation is one batch through the same compiled function as a prediction, and it explains the
very model that answers, preprocessing included. Tokens follow the corpus's tokenizer mode: words
(runs of word characters) in `word` mode, single characters in `char`/`cjk` mode.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

WORD = re.compile(r"\w+", re.UNICODE)
CHAR = re.compile(r"\S", re.UNICODE)
MAX_PARTS = 256  # tokens or features explained per input; the rest score 0 (said in the reply)


@dataclass
class Part:
    token: str
    start: int | None
    end: int | None
    score: float = 0.0


def text_parts(text: str, mode: str = "word") -> list[Part]:
    pattern = WORD if mode == "word" else CHAR
    return [Part(m.group(), m.start(), m.end()) for m in pattern.finditer(text)]


def occlude_text(
    probabilities: Callable[[Mapping[str, list]], np.ndarray], text: str, mode: str = "word"
) -> tuple[np.ndarray, list[Part]]:
    """The text's probabilities and each token's attribution to the predicted class."""
    parts = text_parts(text, mode)[:MAX_PARTS]
    variants = [text] + [text[: p.start] + " " + text[p.end :] for p in parts]
    probs = probabilities({"text": variants})
    base, occluded = probs[0], probs[1:]
    top = int(np.argmax(base))
    for part, row in zip(parts, occluded, strict=True):
        part.score = float(base[top] - row[top])
    return base, parts


def occlude_row(
    probabilities: Callable[[Mapping[str, list]], np.ndarray], row: Mapping[str, object]
) -> tuple[np.ndarray, list[Part]]:
    """A row's probabilities and each feature's attribution: the feature set missing (the model
    fills it as in training: the mean for numbers, the unknown category for strings)."""
    names = list(row)[:MAX_PARTS]
    variants = [dict(row)] + [{**row, name: None} for name in names]
    probs = probabilities({k: [v[k] for v in variants] for k in row})
    base, occluded = probs[0], probs[1:]
    top = int(np.argmax(base))
    scores = base[top] - occluded[:, top]
    parts = [Part(name, None, None, float(s)) for name, s in zip(names, scores, strict=True)]
    return base, parts
