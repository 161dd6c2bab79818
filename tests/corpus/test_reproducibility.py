"""The same input gives the same corpus, whatever the block layout; one changed row changes the
content hash; splits are a deterministic function of the seed and the text."""

from __future__ import annotations

import shutil

import pytest
from corpus_helpers import read_split

from shipyard.corpus import sources, split
from shipyard.corpus.prepare import prepare

pytestmark = pytest.mark.usefixtures("ray_local")


def project_for(factory, source, name: str, **data):
    config = {"kind": "text", "source": str(source), "quoting": False, "vocab_size": 2000}
    return factory({"name": name, "data": {**config, **data}})


def assignment(corpus) -> dict[str, str]:
    return {
        key: name for name in split.SPLITS for key in read_split(corpus, name)["key"].to_pylist()
    }


@pytest.fixture(scope="module")
def first(small_corpus, session_project_factory):
    return prepare(project_for(session_project_factory, small_corpus, "first", seed=5))


def test_rerun_with_another_block_layout_reproduces_the_hash(
    first, small_corpus, project_factory, monkeypatch
):
    # Read the file in ~20 ranges instead of one: different blocks, different task order.
    monkeypatch.setattr(sources, "MIN_RANGE_BYTES", 16 << 10)
    monkeypatch.setattr(sources, "MAX_RANGE_BYTES", 16 << 10)
    again = prepare(project_for(project_factory, small_corpus, "again", seed=5))
    assert again.manifest["content_hash"] == first.manifest["content_hash"]
    assert again.manifest["vocabulary"] == first.manifest["vocabulary"]
    assert assignment(again.corpus) == assignment(first.corpus)
    counts = first.manifest["counts"]
    assert counts["read"] == 3_000 and counts["exact_duplicates"] > 50


def test_changing_one_row_changes_the_hash(first, small_corpus, tmp_path, project_factory):
    changed = tmp_path / "changed.tsv"
    shutil.copy(small_corpus, changed)
    lines = changed.read_text(encoding="utf-8").split("\n")
    lines[1234] = lines[1234] + " edited"
    changed.write_text("\n".join(lines), encoding="utf-8")
    other = prepare(project_for(project_factory, changed, "changed", seed=5))
    assert other.manifest["content_hash"] != first.manifest["content_hash"]
    assert other.manifest["counts"]["kept"] == first.manifest["counts"]["kept"]


def test_another_seed_draws_other_splits_of_the_same_sizes(first, small_corpus, project_factory):
    other = prepare(project_for(project_factory, small_corpus, "seed6", seed=6))
    assert other.manifest["splits"] == first.manifest["splits"]
    assert other.manifest["content_hash"] != first.manifest["content_hash"]
    a, b = assignment(first.corpus), assignment(other.corpus)
    assert a.keys() == b.keys()
    moved = sum(a[k] != b[k] for k in a)
    assert 0.2 * len(a) < moved < 0.5 * len(a)  # 1 - (0.8^2 + 0.1^2 + 0.1^2) = 0.34 expected


def test_near_duplicates_are_removed_before_the_split_and_counted(
    first, small_corpus, project_factory
):
    near = prepare(project_for(project_factory, small_corpus, "near", seed=5, dedup="near"))
    counts, exact_only = near.manifest["counts"], first.manifest["counts"]
    # The synthetic corpus plants near copies (one word appended to a recent text).
    assert counts["near_duplicates"] > 20
    assert counts["exact_duplicates"] == exact_only["exact_duplicates"]
    assert counts["kept"] == exact_only["kept"] - counts["near_duplicates"]
    assert sum(s["rows"] for s in near.manifest["splits"].values()) == counts["kept"]
    kept = assignment(near.corpus)
    assert len(kept) == counts["kept"] and set(kept) < set(assignment(first.corpus))
