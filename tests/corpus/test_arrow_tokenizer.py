"""The Arrow tokenizer that builds the shards gives exactly the ids of the exported model's
TextVectorization: proven code point by code point over all of Unicode, then on real text."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from corpus_helpers import code_point_ranges

from shipyard.corpus import arrow_tokenizer, clean, synth, tokenizer
from shipyard.corpus.tokenizer_settings import TokenizerSettings

MODES = [(mode, lower) for mode in ("word", "cjk", "char") for lower in (True, False)]
# Each code point alone, after a cased letter (ICU's Final_Sigma looks back), and between
# letters and before a space (so a code point that turns into a separator or vanishes shows).
TEMPLATES = ("{}", "A{}", "a{}b ")
SEP = "\x1f"  # tokens never hold a control character: standardize made them spaces


def _scalar_values() -> np.ndarray:
    return np.concatenate([np.arange(0, 0xD800), np.arange(0xE000, 0x110000)])


def _joined_tf(texts: list[str], settings: TokenizerSettings) -> list[bytes]:
    # The standardize step after cleaning: what the Arrow tokenizer mirrors (it reads cleaned
    # text; that the two cleanings agree is test_nfkc.py's business).
    standardize, split = tokenizer._parts(settings, cleaned=True)
    x = standardize(tf.constant(texts))
    parts = tf.strings.unicode_split(x, "UTF-8") if split == "character" else tf.strings.split(x)
    return tf.strings.reduce_join(parts, axis=1, separator=SEP).numpy().tolist()


def _joined_arrow(texts: list[str], settings: TokenizerSettings) -> list[bytes]:
    flat, parents = arrow_tokenizer.tokens(pa.array(texts, pa.string()), settings)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(parents, minlength=len(texts)))])
    lists = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), flat)
    return [s.encode() for s in pc.binary_join(lists, SEP).to_pylist()]


def divergent_code_points() -> list[int]:
    """Every code point on which the two tokenizers disagree, in any mode or template."""
    cps = _scalar_values()
    bad: set[int] = set()
    for template in TEMPLATES:
        texts = [template.format(chr(c)) for c in cps]
        for mode, lower in MODES:
            settings = TokenizerSettings(mode=mode, lowercase=lower)
            ours, theirs = _joined_arrow(texts, settings), _joined_tf(texts, settings)
            bad.update(int(c) for c, a, b in zip(cps, ours, theirs, strict=True) if a != b)
    return sorted(bad)


@pytest.mark.slow
def test_the_two_tokenizers_disagree_only_on_the_listed_code_points():
    found = code_point_ranges(divergent_code_points())
    assert found == arrow_tokenizer.DIVERGENT, (
        "TensorFlow and Arrow tokenize these code points differently; set "
        f"arrow_tokenizer.DIVERGENT = {found!r}"
    )


def _both(texts: list[str], settings: TokenizerSettings, vocabulary: list[str]):
    layer = tokenizer.build_vectorizer(vocabulary, settings)
    expected = tokenizer.encode(texts, layer)
    got = arrow_tokenizer.encode(pa.array(texts), pa.array(vocabulary, pa.string()), settings)
    return expected, got


@pytest.mark.parametrize(("mode", "lower"), MODES)
def test_rows_with_divergent_code_points_still_encode_like_tensorflow(mode, lower):
    texts = ["ΟΔΟΣ προς ΟΔΟΣ", "İstanbul büyük", "plain ascii, text!", "", "混合 text 中文"]
    settings = TokenizerSettings(mode=mode, lowercase=lower, sequence_length=8, vocab_size=40)
    values, counts = tokenizer.count_tokens(texts, settings)
    vocabulary = [v.decode() for v in values[np.argsort(-counts, kind="stable")]][:20]
    expected, got = _both(texts, settings, vocabulary)
    assert np.array_equal(got, expected)
    ours = arrow_tokenizer.count_tokens(pa.array(texts), settings).to_pydict()
    assert dict(zip(ours["token"], ours["count"], strict=True)) == dict(
        zip(values.tolist(), counts.tolist(), strict=True)
    )


def _vocabulary(texts: list[str], settings: TokenizerSettings, size: int) -> list[str]:
    counted = arrow_tokenizer.count_tokens(pa.array(texts), settings)
    order = pc.sort_indices(counted, sort_keys=[("count", "descending"), ("token", "ascending")])
    return [t.decode() for t in counted.take(order[:size])["token"].to_pylist()]


@pytest.mark.parametrize("mode", ["word", "cjk", "char"])
def test_synthetic_corpus_encodes_identically(tmp_path, mode):
    path = tmp_path / "synth.parquet"
    texts = []
    for language in ("en", "zh"):
        synth.write(synth.SynthSpec(rows=1500, seed=5, language=language), path)
        texts += clean.clean_text(pq.read_table(path)["text"]).to_pylist()
    settings = TokenizerSettings(mode=mode, sequence_length=32, vocab_size=2000)
    vocabulary = _vocabulary(texts, settings, 1998)
    expected, got = _both(texts, settings, vocabulary)
    assert (expected[expected > 0] > 1).mean() > 0.5  # mostly known tokens: it has teeth
    assert np.array_equal(got, expected)


def test_real_corpora_encode_identically(shared_data):
    """SMS Spam (English, cp1252 leftovers) and SIB-200 Chinese and English."""
    lines = (
        (shared_data / "sms_spam_collection" / "SMSSpamCollection").read_text("utf-8").splitlines()
    )
    sms = [line.split("\t", 1)[1] for line in lines if "\t" in line]
    sib = []
    for lang in ("zho_Hans", "eng_Latn"):
        for line in (shared_data / "sib200_topic_en_zh" / lang / "train.tsv").open(
            encoding="utf-8"
        ):
            sib.append(line.rstrip("\n").split("\t")[-1])
    for texts, mode in ((sms, "word"), (sib, "cjk"), (sib, "char")):
        texts = clean.clean_text(pa.array(texts)).to_pylist()
        settings = TokenizerSettings(mode=mode, sequence_length=48, vocab_size=5000)
        vocabulary = _vocabulary(texts, settings, 4998)
        expected, got = _both(texts, settings, vocabulary)
        assert np.array_equal(got, expected), mode


def test_building_shards_does_not_import_tensorflow():
    code = (
        "import sys, pyarrow as pa\n"
        "from shipyard.corpus import arrow_tokenizer, encode, vocab\n"
        "from shipyard.corpus.tokenizer_settings import TokenizerSettings\n"
        "s = TokenizerSettings(mode='cjk')\n"
        "arrow_tokenizer.count_tokens(pa.array(['Hello, 世界 again']), s)\n"
        "arrow_tokenizer.encode(pa.array(['hello world']), pa.array(['world']), s)\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
