"""SIB-200 Chinese with the splits it ships, the `cjk` tokenizer, and feedback rows merged in."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from corpus_helpers import read_split

from shipyard.corpus import split
from shipyard.corpus.prepare import prepare
from shipyard.corpus.tokenizer import tokenize
from shipyard.corpus.tokenizer_settings import TokenizerSettings
from shipyard.project import load_project

pytestmark = pytest.mark.usefixtures("ray_local")
REPO = __import__("pathlib").Path(__file__).resolve().parents[2]
HAN = re.compile(r"^[\u4e00-\u9fff]$")


@pytest.fixture(scope="module")
def sib(shared_data, tmp_path_factory):
    # The example project itself, so its relative paths and settings are what gets tested.
    workdir = tmp_path_factory.mktemp("sib")
    project = load_project(REPO / "examples" / "sib200_zh.yaml", [("workdir", str(workdir))])
    return project, prepare(project)


def test_the_shipped_splits_are_kept(sib, shared_data):
    _, result = sib
    manifest = result.manifest
    rows = {name: entry["rows"] for name, entry in manifest["splits"].items()}
    removed = manifest["counts"]["exact_duplicates"]
    assert sum(rows.values()) == 701 + 99 + 204 - removed
    assert rows["train"] <= 701 and rows["validation"] <= 99 and rows["test"] <= 204
    labels = (shared_data / "sib200_topic_en_zh" / "zho_Hans" / "labels.txt").read_text()
    assert manifest["labels"] == sorted(labels.split())
    assert len(manifest["labels"]) == 7
    keys = [set(read_split(result.corpus, name)["key"].to_pylist()) for name in split.SPLITS]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])


def test_cjk_vocabulary_is_single_han_characters(sib):
    _, result = sib
    vocabulary = result.manifest["vocabulary"]
    assert result.manifest["tokenizer"]["mode"] == "cjk"
    han = [t for t in vocabulary if re.search(r"[\u4e00-\u9fff]", t)]
    assert len(han) > 1_000 and all(HAN.match(t) for t in han)
    assert {"的", "在", "是"} <= set(vocabulary[:20])


def test_cjk_tokenizer_keeps_latin_words_whole():
    settings = TokenizerSettings(mode="cjk")
    tokens = [t.decode() for t in tokenize(["我用Python写了3个程序。"], settings)]
    assert tokens == ["我", "用", "python", "写", "了", "3", "个", "程", "序"]
    chars = [t.decode() for t in tokenize(["天气 好!"], TokenizerSettings(mode="char"))]
    assert chars == ["天", "气", "好"]


def test_shards_encode_chinese_with_few_unknowns(sib):
    _, result = sib
    shard = read_split(result.corpus, "train")
    column = shard["ids"].combine_chunks()
    storage = column.storage if isinstance(column, pa.ExtensionArray) else column
    ids = np.stack([np.asarray(v) for v in storage.to_pylist()])
    assert ids.shape == (shard.num_rows, 96)
    tokens = ids[ids > 0]
    assert (tokens == 1).mean() < 0.01  # train text, train vocabulary: next to no OOV


def test_feedback_rows_join_train_and_are_counted(sib, tmp_path):
    project, first = sib
    test_split = read_split(first.corpus, "test")
    test_texts = test_split["text"].to_pylist()
    own = first.corpus.labels[test_split["label"][0].as_py()]
    other = next(label for label in first.corpus.labels if label != own)
    feedback = tmp_path / "feedback.parquet"
    rows = [
        {"text": "今天的足球比赛非常精彩。", "label": "sports"},
        {"text": "新的疫苗可以预防流感。", "label": "health"},
        {"text": "新的疫苗可以预防流感。", "label": "health"},  # captured twice
        {"text": test_texts[0], "label": other},  # a test text, relabelled: test keeps it
        {"text": "   ", "label": "travel"},  # empty after cleaning
    ]
    pq.write_table(pa.Table.from_pylist(rows), feedback)
    result = prepare(project, extra_sources=[str(feedback)])
    manifest = result.manifest
    assert manifest["counts"]["extra_rows"] == {"read": 5, "kept": 2, "contradicting": 1}
    (extra,) = manifest["extra_sources"]
    assert extra["path"] == str(feedback) and len(extra["sha256"]) == 64
    assert manifest["splits"]["train"]["rows"] == first.manifest["splits"]["train"]["rows"] + 2
    for name in ("validation", "test"):
        assert manifest["splits"][name] == first.manifest["splits"][name]
    train = set(read_split(result.corpus, "train")["text"].to_pylist())
    assert {"今天的足球比赛非常精彩。", "新的疫苗可以预防流感。"} <= train
    assert manifest["content_hash"] != first.manifest["content_hash"]
