"""SMS spam end to end: TSV with quoting off, dedup before the split, stratified exact splits, the
manifest, and the one-tokenizer contract between the vocabulary counter and the shard encoder."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from corpus_helpers import ids_of, read_split

from shipyard.corpus import split
from shipyard.corpus.prepare import format_summary, prepare

pytestmark = pytest.mark.usefixtures("ray_local")
SMS_SHA256 = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"  # SOURCE.md


@pytest.fixture(scope="module")
def sms(shared_data, session_project_factory):
    # Columns by position (the file has no header): label first, text second.
    project = session_project_factory(
        {
            "name": "sms",
            "data": {
                "kind": "text",
                "source": str(shared_data / "sms_spam_collection" / "SMSSpamCollection"),
                "format": "tsv",
                "header": False,
                "quoting": False,
                "label_column": 0,
                "text_column": 1,
                "vocab_size": 5000,
                "sequence_length": 40,
                "seed": 11,
            },
        }
    )
    return project, prepare(project)


def test_reads_every_record_and_removes_the_known_duplicates(sms):
    _, result = sms
    counts = result.manifest["counts"]
    assert counts["read"] == 5_574  # default CSV quoting would merge records into 5,572
    assert counts["exact_duplicates"] >= 403  # 403 byte-identical, more after normalization
    assert counts["kept"] == 5_574 - counts["exact_duplicates"] - sum(counts["dropped"].values())
    assert result.manifest["labels"] == ["ham", "spam"]  # discovered, recorded in order


def test_no_text_lands_in_two_splits(sms):
    _, result = sms
    keys, texts = {}, {}
    for name in split.SPLITS:
        table = read_split(result.corpus, name)
        keys[name] = set(table["key"].to_pylist())
        texts[name] = {t.lower() for t in table["text"].to_pylist()}
        assert len(keys[name]) == table.num_rows
    for a, b in [("train", "validation"), ("train", "test"), ("validation", "test")]:
        assert not keys[a] & keys[b]
        assert not texts[a] & texts[b]


def test_splits_are_stratified_and_exact(sms):
    _, result = sms
    manifest = result.manifest
    totals = {
        lab: sum(s["labels"][lab] for s in manifest["splits"].values()) for lab in ("ham", "spam")
    }
    for name, fraction in (("train", 0.8), ("validation", 0.1), ("test", 0.1)):
        shard = read_split(result.corpus, name)
        assert shard.num_rows == manifest["splits"][name]["rows"]
        labels = np.asarray(shard["label"])
        for index, lab in enumerate(manifest["labels"]):
            in_shard = int((labels == index).sum())
            assert in_shard == manifest["splits"][name]["labels"][lab]
            assert abs(in_shard - totals[lab] * fraction) <= 1


def test_manifest_records_what_was_read_and_how(sms):
    _, result = sms
    manifest = result.manifest
    (source,) = manifest["sources"]
    assert source["sha256"] == SMS_SHA256 and source["path"].endswith("SMSSpamCollection")
    assert manifest["seed"] == 11
    assert manifest["tokenizer"] == {
        "mode": "word",
        "lowercase": True,
        "sequence_length": 40,
        "vocab_size": 5000,
    }
    assert len(manifest["vocabulary"]) == 5000 - 2
    assert manifest["vocabulary"][:3] == ["i", "you", "to"]
    assert manifest["schema"]["ids"] == "int32[40]"
    assert len(manifest["content_hash"]) == 64
    summary = format_summary(manifest)
    assert "5,574" in summary and "exact duplicates" in summary and "spam" in summary


def test_shard_ids_equal_the_tokenizer_on_sampled_rows(sms):
    """`tokenize` (which built the vocabulary) and the vectorizer (which wrote the shards, and
    goes into the exported model) must agree token for token."""
    from shipyard.corpus.tokenizer import build_vectorizer, encode, tokenize

    _, result = sms
    corpus = result.corpus
    settings = corpus.tokenizer
    index = {token: i + 2 for i, token in enumerate(corpus.vocabulary)}  # 0 pad, 1 OOV
    shard = read_split(corpus, "test")
    rows = np.random.default_rng(0).choice(shard.num_rows, size=60, replace=False)
    texts = shard["text"].take(rows).to_pylist()
    ids = ids_of(shard.take(rows))
    for text, row in zip(texts, ids, strict=True):
        tokens = [t.decode() for t in tokenize([text], settings)][: settings.sequence_length]
        expected = [index.get(t, 1) for t in tokens]
        expected += [0] * (settings.sequence_length - len(expected))
        assert row.tolist() == expected, text
    # And a vectorizer rebuilt from the manifest alone (what export does) gives the same ids.
    rebuilt = encode(np.asarray(texts, dtype=object), build_vectorizer(corpus.vocabulary, settings))
    assert (rebuilt == ids).all()


def test_an_unchanged_corpus_is_reused(sms):
    project, result = sms
    again = prepare(project)
    assert again.reused and again.manifest["content_hash"] == result.manifest["content_hash"]


def test_source_file_hash_is_the_real_one(sms, shared_data):
    digest = hashlib.sha256(
        (shared_data / "sms_spam_collection" / "SMSSpamCollection").read_bytes()
    ).hexdigest()
    assert digest == SMS_SHA256
