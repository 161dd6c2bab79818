"""The corpus's cleaning (Arrow + Python's NFKC) and the exported model's (TensorFlow + TensorFlow
Text's NFKC) give the same string on every Unicode code point, alone and next to the characters
that NFKC joins or reorders, and on every canonical composition."""

from __future__ import annotations

import unicodedata

import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf
from corpus_helpers import code_point_ranges

from shipyard.corpus import clean, tokenizer

# Each code point alone, after a letter, after a composed letter, before a combining mark, after
# and before Hangul jamo (which compose), and amid whitespace and format characters.
TEMPLATES = ("{}", "a{}", "A\u0301{}", "{}\u0301", "\u1100{}", "{}\u1161", " {}\u00ad\u0301  x\t")


def _scalar_values() -> np.ndarray:
    return np.concatenate([np.arange(0, 0xD800), np.arange(0xE000, 0x110000)])


def _sequences() -> list[str]:
    """The canonical and compatibility decomposition of every code point (as Python knows it):
    every pair canonical composition can join appears in one of them."""
    singles = {chr(c) for c in _scalar_values()}
    forms = {unicodedata.normalize(f, c) for c in singles for f in ("NFD", "NFKD")}
    return sorted(forms - singles)


def _tf_nfkc(texts: list[str]) -> list[str]:
    out = tokenizer.tensorflow_text.normalize_utf8(tf.constant(texts), "NFKC").numpy()
    return [s.decode() for s in out.tolist()]


def _tf_clean(texts: list[str]) -> list[str]:
    return [s.decode() for s in tokenizer.clean(tf.constant(texts)).numpy().tolist()]


@pytest.mark.slow
def test_python_and_tensorflow_text_disagree_on_nfkc_only_where_listed():
    """Where the two NFKC implementations differ (unkept), found anew: the list must match."""
    cps = _scalar_values()
    found: set[int] = set()
    for template in TEMPLATES[:6]:
        texts = [template.format(chr(c)) for c in cps]
        ours = clean.nfkc(pa.array(texts), kept=()).to_pylist()
        found.update(int(c) for c, a, b in zip(cps, ours, _tf_nfkc(texts), strict=True) if a != b)
    seqs = _sequences()
    ours = clean.nfkc(pa.array(seqs), kept=()).to_pylist()
    for seq, a, b in zip(seqs, ours, _tf_nfkc(seqs), strict=True):
        if a != b:  # Python joins what ICU leaves apart: keep the marks it would join
            found.update(ord(ch) for ch in seq[1:])
    ranges = code_point_ranges(found)
    assert ranges == clean.NFKC_KEPT, (
        f"Python's and TensorFlow Text's NFKC differ here; set clean.NFKC_KEPT = {ranges!r}"
    )


@pytest.mark.slow
@pytest.mark.parametrize("template", TEMPLATES)
def test_clean_text_equals_the_models_cleaning_on_every_code_point(template):
    cps = _scalar_values()
    texts = [template.format(chr(c)) for c in cps]
    ours = clean.clean_text(pa.array(texts)).to_pylist()
    theirs = _tf_clean(texts)
    differ = [hex(c) for c, a, b in zip(cps, ours, theirs, strict=True) if a != b]
    assert not differ, f"{len(differ)} code points clean differently: {differ[:20]}"
    assert clean.clean_text(pa.array(ours)).to_pylist() == ours  # cleaning is stable


@pytest.mark.slow
def test_clean_text_equals_the_models_cleaning_on_every_composition():
    seqs = _sequences()
    assert len(seqs) > 10_000
    assert clean.clean_text(pa.array(seqs)).to_pylist() == _tf_clean(seqs)


CASES = [
    "ＦＲＥＥ ｅｎｔｒｙ　１２３",  # full-width letters, digits and the ideographic space
    "cafe\u0301 na\u0131\u0308ve",  # combining accents: composed by NFKC
    "\ufb01nd the \ufb02ow",  # ligatures ﬁ ﬂ
    "x\u00b2 + m\u00b3 \u2074",  # superscripts
    "\u2460\u2461\u2462 \u2474",  # circled and parenthesized digits
    "\u337f \u3231 \u2f47\u672c",  # ㍿ ㈱ and the Kangxi radical ⽇ (-> 日本)
    "\uff76\uff9e\uff80\uff76\uff85",  # half-width katakana with a voicing mark: ガタカナ
    "\u1100\u1161\u11a8",  # conjoining Hangul jamo: 각
    "e\u00ad\u0301 soft hyphen",  # a format character between a letter and its accent
    "  lead\u00a0and\u2003trail \t ",  # NBSP, em space, runs and ends
]


def test_nfkc_cases_clean_identically_and_compose():
    ours = clean.clean_text(pa.array(CASES)).to_pylist()
    assert ours == _tf_clean(CASES)
    assert ours[0] == "FREE entry 123"
    assert ours[1].startswith("café")  # composed: pyarrow 25's utf8_normalize would not
    assert ours[6] == "ガタカナ" and ours[7] == "각" and ours[8] == "é soft hyphen"
    assert ours[9] == "lead and trail"


def test_kept_code_points_stay_as_tensorflow_text_leaves_them():
    texts = ["\U0001fbf1\U0001fbf2 seg", "a\U00011935\U00011930b", "\ua7f2\u0301x"]
    assert clean.nfkc(pa.array(texts)).to_pylist() == _tf_nfkc(texts)
    assert clean.nfkc(pa.array(texts), kept=()).to_pylist() != _tf_nfkc(texts)
