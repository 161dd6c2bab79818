"""Cleaning, keys, draws and the per-partition dedup, as plain functions (no Ray)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from shipyard.corpus import clean, split
from shipyard.corpus.vocab import exact_sum


def cleaned(*texts: str | None) -> list[str]:
    return clean.clean_text(pa.array(list(texts), pa.string())).to_pylist()


def test_nfkc_folds_compatibility_forms():
    # Full-width Latin, a ligature, a circled digit, a no-break space and an ideographic space.
    assert cleaned("ｆｕｌｌ\u3000ｗｉｄｔｈ", "ﬁne①", "a\u00a0b") == ["full width", "fine1", "a b"]


def test_next_line_u0085_and_c1_controls_become_spaces():
    # U+0085 (NEL) is a line break, and the SMS/imdb files carry other C1 leftovers of cp1252.
    assert cleaned("one\u0085two", "dash\u0096here", "bell\x07x\x7f") == [
        "one two",
        "dash here",
        "bell x",
    ]


def test_whitespace_runs_collapse_and_ends_are_trimmed():
    assert cleaned("  a \t\n b\r\n\u2028c  ", "x\u200b\u200dy\ufeff") == ["a b c", "xy"]


def test_format_characters_vanish_and_nulls_become_empty():
    assert cleaned("soft\u00adhyphen", None, "\t \n") == ["softhyphen", "", ""]


def test_plain_ascii_is_untouched():
    text = "Hello, World! 123 -- (ok)"
    assert cleaned(text) == [text]


def options(**kw) -> clean.CleanOptions:
    base = {"kind": "text", "text_column": "text", "label_column": "label", "max_chars": 10}
    return clean.CleanOptions(**{**base, **kw})


def test_unusable_rows_get_a_status_and_a_shared_key():
    batch = pa.table(
        {
            "text": ["ok text", " \t", "x" * 11, "no label", "OK TEXT"],
            "label": ["a", "a", "b", "  ", "a"],
        }
    )
    out = clean.clean_batch(batch, options()).to_pydict()
    assert out["status"] == ["ok", "empty", "too_long", "no_label", "ok"]
    assert out["key"][1:4] == ["~empty", "~too_long", "~no_label"]
    # The tokenizer lowercases, so case variants are one document for dedup and split.
    assert out["key"][0] == out["key"][4]
    assert out["u"][0] == out["u"][4]
    assert out["text"][2] == ""  # dropped rows do not carry their payload through the shuffle
    # ...but the exact content differs, so the content digest tells them apart.
    assert out["rowhash"][0] != out["rowhash"][4]


def test_case_matters_for_keys_when_the_tokenizer_keeps_case():
    batch = pa.table({"text": ["Spam", "spam"], "label": ["a", "a"]})
    keys = clean.clean_batch(batch, options(lowercase=False))["key"].to_pylist()
    assert keys[0] != keys[1]


def test_label_outside_label_map_names_the_file():
    batch = pa.table({"text": ["a", "b"], "label": ["ham", "eggs"], "source": ["f.tsv"] * 2})
    with pytest.raises(clean.BadValue, match=r"f\.tsv: label 'eggs' is not in data.label_map"):
        clean.clean_batch(batch, options(label_map=(("ham", 0), ("spam", 1))))


def test_bad_value_survives_pickling_between_processes():
    import pickle

    err = pickle.loads(pickle.dumps(clean.BadValue("f.csv", "age", "x", "column 'age' ...")))
    assert (err.path, err.column, err.value) == ("f.csv", "age", "x")
    assert str(err) == "f.csv: column 'age' ..."


def test_keys_are_32_hex_chars_and_stable():
    a = np.array([0, 2**64 - 1], dtype=np.uint64)
    b = np.array([1, 255], dtype=np.uint64)
    assert clean.hex_keys(a, b).to_pylist() == [
        "0000000000000000" + "0000000000000001",
        "ffffffffffffffff" + "00000000000000ff",
    ]
    texts = pa.array(["a", "b"])
    first, again = clean.hash64(texts, "shipyard.dedup.a"), clean.hash64(texts, "shipyard.dedup.a")
    assert (first == again).all() and first[0] != first[1]


def test_draws_are_uniform_and_depend_on_the_seed():
    h = clean.hash64(pa.array([str(i) for i in range(20_000)]), "shipyard.dedup.a")
    u = clean.draws(h, seed=1)
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.01
    assert np.histogram(u, bins=10, range=(0, 1))[0].min() > 1_800
    assert (clean.draws(h, seed=1) == u).all() and not (clean.draws(h, seed=2) == u).any()


def test_dedup_keeps_one_row_per_key_chosen_by_content():
    block = pa.table(
        {
            "key": ["k1", "k2", "k1", "k1", "k2"],
            "text": ["b", "x", "a", "a", "x"],
            "label": ["spam", "ham", "ham", "spam", "ham"],
            "copies": [1, 1, 1, 1, 1],
        }
    )
    out = clean.dedup_block(block, has_split=False).to_pydict()
    assert out["key"] == ["k1", "k2"]
    assert (out["label"][0], out["text"][0]) == ("ham", "a")  # smallest label, then text
    assert out["copies"] == [3, 2]
    # The same rows in another order give the same survivors.
    shuffled = clean.dedup_block(block.take([4, 3, 2, 1, 0]), has_split=False).to_pydict()
    assert shuffled == out


def test_dedup_prefers_the_evaluation_split_then_feedback_rows():
    block = pa.table(
        {
            "key": ["k", "k", "k", "j", "j"],
            "label": ["a", "a", "b", "a", "b"],
            "copies": [1, 1, 1, 1, 1],
            "split": ["train", "test", "train", "train", "train"],
            "extra": [0, 0, 1, 0, 1],
        }
    )
    out = clean.dedup_block(block, has_split=True).to_pydict()
    assert dict(zip(out["key"], out["split"], strict=True)) == {"j": "train", "k": "test"}
    # j: the feedback row's label (b) wins over the source's (a).
    assert dict(zip(out["key"], out["label"], strict=True))["j"] == "b"


def test_split_counts_are_exact_per_label():
    hist = {"a": np.bincount([5] * 101, minlength=split.BINS), "b": np.ones(split.BINS, int)}
    counts = split.split_counts(hist, (0.8, 0.1))
    assert counts["train"] == {"a": 81, "b": 3277}
    assert counts["validation"] == {"a": 10, "b": 409}
    assert counts["test"] == {"a": 10, "b": 410}


def test_exact_sums_do_not_depend_on_order():
    rng = np.random.default_rng(0)
    x = rng.normal(1e3, 1e6, 10_000)
    assert exact_sum(x) == exact_sum(x[::-1]) == exact_sum(rng.permutation(x))
    assert exact_sum(np.array([0.1, 0.2])) == exact_sum(np.array([0.2, 0.1]))
