"""Raw text at serving time encodes like the cleaned text the shards were written from: the
exported model's vectorizer on RAW text gives the ids the Arrow tokenizer wrote for the same row
after `clean_text`, NFKC included, also in a process that has TensorFlow and its op libraries but
no shipyard."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import tensorflow as tf

from shipyard.corpus import arrow_tokenizer
from shipyard.corpus.clean import clean_text
from shipyard.corpus.tokenizer import OP_LIBRARIES, TokenizerSettings, build_vectorizer, encode

MODES = ["word", "cjk", "char"]
RAW = [
    "That\x92s the offer\x85call now",  # cp1252 leftovers (C1 controls), as in SMS Spam
    "free\u00a0entry\u200b in 2 a wkly comp",  # NBSP and a zero-width space
    "tab\tand\nnewline  and   runs of spaces",
    "soft\u00adhyphen and \ufeffBOM",
]
# What NFKC changes: full-width letters and digits, combining accents, ligatures, superscripts,
# circled digits, compatibility CJK and half-width katakana, plus whitespace at the ends.
NFKC_RAW = [
    "ＦＲＥＥ ｅｎｔｒｙ　ｗｉｎ １０００ ｃａｓｈ",
    "FREE entry win 1000 cash",
    "cafe\u0301 cre\u0300me bru\u0302le\u0301e",
    "café crème brûlée",
    "\ufb01nd the \ufb02ow of \ufb00 o\ufb03ce",
    "find the flow of ff office",
    "x\u00b2 and m\u00b3 and 10\u2076",
    "\u2460 first \u2461 second \u2473 twentieth",
    "\u337f\u3231 \u2f47\u672c\u8a9e \u3300",  # ㍿㈱ ⽇本語 ㌀ -> 株式会社(株) 日本語 アパート
    "\uff76\uff9e\uff80\uff76\uff85 \uff7b\uff70\uff8b\uff9e\uff7d",  # ｶﾞﾀｶﾅ ｻｰﾋﾞｽ
    "\u1100\u1161\u11a8 \u1112\u1161\u11ab\u1100\u1173\u11af",  # conjoining jamo -> 각 한글
    "e\u00ad\u0301t\u00e9 \u00a0 ",  # a soft hyphen between a letter and its accent; NBSP
    "\u3000\u3000\uff21\uff22\uff23\u3000",  # ideographic spaces around full-width ABC
    "日本語のテキスト と English mixed",
]


def _vocabulary(cleaned: list[str], settings: TokenizerSettings) -> list[str]:
    counted = arrow_tokenizer.count_tokens(pa.array(cleaned, pa.string()), settings)
    order = pc.sort_indices(counted, sort_keys=[("count", "descending"), ("token", "ascending")])
    top = counted.take(order[: settings.vocab_size - 2])["token"].to_pylist()
    return [t.decode() for t in top]


def _shard_ids(raw: list[str], vocabulary: list[str], settings: TokenizerSettings) -> np.ndarray:
    """What `prepare` writes for these rows: clean_text, then the Arrow tokenizer."""
    cleaned = clean_text(pa.array(raw, pa.string()))
    return arrow_tokenizer.encode(cleaned, pa.array(vocabulary, pa.string()), settings)


@pytest.mark.parametrize("mode", MODES)
def test_raw_and_cleaned_text_encode_the_same(mode):
    cleaned = clean_text(pa.array(RAW)).to_pylist()
    vocab = sorted({t for text in cleaned for t in text.lower().split()} | set("abcdefghijklmno"))
    settings = TokenizerSettings(mode=mode, sequence_length=12, vocab_size=len(vocab) + 2)
    vectorizer = build_vectorizer(vocab, settings)
    assert np.array_equal(encode(RAW, vectorizer), encode(cleaned, vectorizer))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("lowercase", [True, False])
def test_the_model_encodes_raw_nfkc_text_as_the_shards(mode, lowercase):
    settings = TokenizerSettings(mode=mode, lowercase=lowercase, sequence_length=24, vocab_size=400)
    cleaned = clean_text(pa.array(NFKC_RAW)).to_pylist()
    vocabulary = _vocabulary(cleaned, settings)
    shard = _shard_ids(NFKC_RAW, vocabulary, settings)
    model = encode(NFKC_RAW, build_vectorizer(vocabulary, settings))
    assert np.array_equal(model, shard)
    assert (shard > 1).sum() > 0.9 * (shard > 0).sum()  # the tokens are known: it has teeth
    # NFKC is what makes them equal: full-width, decomposed and ligature rows encode like
    # their plain spellings, and the Arrow tokenizer on the raw text alone would not.
    assert np.array_equal(shard[0], shard[1]) and np.array_equal(shard[2], shard[3])
    assert np.array_equal(shard[4], shard[5])
    raw_arrow = arrow_tokenizer.encode(
        pa.array(NFKC_RAW), pa.array(vocabulary, pa.string()), settings
    )
    assert not np.array_equal(raw_arrow, shard)


def _fullwidth(text: str) -> str:
    """ASCII -> its full-width form (U+FF01..FF5E), spaces -> the ideographic space."""
    return "".join(
        "\u3000" if c == " " else chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text
    )


def _compatibility(text: str) -> str:
    """Ligatures, superscript digits and circled digits where the text allows them."""
    for plain, compat in (("fi", "\ufb01"), ("fl", "\ufb02"), ("ff", "\ufb00")):
        text = text.replace(plain, compat)
    text = text.replace("2", "\u00b2").replace("3", "\u00b3")
    return text.replace("1", "\u2460").replace("5", "\u2464")


@pytest.mark.parametrize("mode", MODES)
def test_real_sms_rows_in_compatibility_forms_encode_as_the_shards(shared_data, mode):
    path = shared_data / "sms_spam_collection" / "SMSSpamCollection"
    original = [ln.split("\t", 1)[1] for ln in path.read_text("utf-8").split("\n") if "\t" in ln]
    raw = [
        _fullwidth(t) if i % 3 == 0 else _compatibility(t) if i % 3 == 1 else t
        for i, t in enumerate(original)
    ]
    assert sum(a != b for a, b in zip(raw, original, strict=True)) > len(raw) * 0.4
    settings = TokenizerSettings(mode=mode, sequence_length=48, vocab_size=5000)
    vocabulary = _vocabulary(clean_text(pa.array(raw)).to_pylist(), settings)
    shard = _shard_ids(raw, vocabulary, settings)
    model = encode(np.asarray(raw, dtype=object), build_vectorizer(vocabulary, settings))
    differ = np.flatnonzero((model != shard).any(axis=1))
    assert not len(differ), f"{len(differ)} rows differ, e.g. {raw[differ[0]]!r}"
    # A full-width row encodes like the original message (whose text is ASCII).
    plain = _shard_ids(original, vocabulary, settings)
    ascii_rows = [i for i in range(0, len(raw), 3) if original[i].isascii()]
    assert len(ascii_rows) > 1000
    assert np.array_equal(shard[ascii_rows], plain[ascii_rows])


# Runs with `python -I` from an empty folder: no shipyard on sys.path (and any import of it
# fails), only TensorFlow and the op libraries the tokenizer names.
_LOAD = textwrap.dedent(
    """
    import importlib, json, sys
    sys.modules["shipyard"] = None  # importing shipyard now raises ImportError
    import tensorflow as tf
    for name in filter(None, sys.argv[2].split(",")):
        importlib.import_module(name)
    model = tf.saved_model.load(sys.argv[1])
    texts = json.loads(sys.stdin.read())
    ids = model.signatures["vectorize"](text=tf.constant(texts))["ids"]
    print(json.dumps(ids.numpy().tolist()))
    """
)


def _load_elsewhere(path, texts: list[str], op_libraries: tuple[str, ...], cwd):
    return subprocess.run(
        [sys.executable, "-I", "-c", _LOAD, str(path), ",".join(op_libraries)],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_a_saved_model_encodes_raw_text_without_shipyard(tmp_path):
    settings = TokenizerSettings(mode="cjk", sequence_length=24, vocab_size=400)
    vocabulary = _vocabulary(clean_text(pa.array(NFKC_RAW)).to_pylist(), settings)
    vectorizer = build_vectorizer(vocabulary, settings)

    class Vectorize(tf.Module):
        def __init__(self):
            super().__init__()
            self.vectorizer = vectorizer

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def __call__(self, text):
            return {"ids": tf.cast(self.vectorizer(text), tf.int32)}

    module = Vectorize()
    path = tmp_path / "saved_model"
    tf.saved_model.save(module, str(path), signatures={"vectorize": module.__call__})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    done = _load_elsewhere(path, NFKC_RAW, OP_LIBRARIES, elsewhere)
    assert done.returncode == 0, done.stderr[-3000:]
    ids = np.asarray(json.loads(done.stdout.strip().splitlines()[-1]), dtype=np.int32)
    assert np.array_equal(ids, _shard_ids(NFKC_RAW, vocabulary, settings))

    # The op libraries are what the model needs beyond TensorFlow: without them it cannot load.
    bare = _load_elsewhere(path, NFKC_RAW, (), elsewhere)
    assert bare.returncode != 0 and "NormalizeUTF8" in bare.stderr
