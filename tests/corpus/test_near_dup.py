"""MinHash + LSH near-duplicate removal on a real local Ray cluster, with planted near-copies."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import ray

from shipyard.corpus.near_dup import lsh_bands, near_duplicate_keys

LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))
# Common CJK Unified Ideographs, as the synthetic corpus uses.
HANZI = np.array([chr(0x4E00 + i) for i in range(3000)])


def key(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def jaccard(a: str, b: str, k: int = 5) -> float:
    sa = {a[i : i + k] for i in range(len(a) - k + 1)}
    sb = {b[i : i + k] for i in range(len(b) - k + 1)}
    return len(sa & sb) / len(sa | sb)


def dataset(texts: list[str]) -> ray.data.Dataset:
    assert len(set(texts)) == len(texts), "exact duplicates are removed before this step"
    return ray.data.from_items([{"key": key(t), "text": t} for t in texts], override_num_blocks=4)


def planted_corpus(originals: int = 2000, copies: int = 100, seed: int = 0):
    """Distinct random ~15-word sentences, plus near-copies: half with one word changed, half with
    one word appended. Returns (texts, [(original, copy), ...])."""
    rng = np.random.default_rng(seed)
    vocab = sorted({"".join(rng.choice(LETTERS, size=rng.integers(2, 9))) for _ in range(4000)})
    sentences: dict[str, None] = {}
    while len(sentences) < originals:
        sentences[" ".join(rng.choice(vocab, size=int(rng.integers(13, 18))))] = None
    texts = list(sentences)
    pairs = []
    for n, source in enumerate(rng.choice(originals, size=copies, replace=False)):
        words = texts[source].split(" ")
        if n % 2:
            words[int(rng.integers(len(words)))] = str(rng.choice(vocab))
        else:
            words.append(str(rng.choice(vocab)))
        pairs.append((texts[source], " ".join(words)))
    return texts + [copy for _, copy in pairs], pairs


@pytest.fixture(scope="module")
def planted(ray_local):
    texts, pairs = planted_corpus()
    ds = dataset(texts)
    # 0.6, not the default 0.8: one changed word in a ~15-word sentence leaves a 5-gram Jaccard of
    # only ~0.74-0.87, and the 8x8 banding that 0.8 picks catches a J=0.8 pair just ~77% of the
    # time. 0.6 picks 16x4, which finds them all; the default is checked on appended words below.
    return texts, pairs, ds, near_duplicate_keys(ds, threshold=0.6)


def test_finds_planted_near_copies_and_keeps_the_smaller_key(planted):
    texts, pairs, _, dropped = planted
    later = {max(key(a), key(b)) for a, b in pairs}
    recall = len(dropped & later) / len(later)
    assert recall >= 0.9
    assert not dropped & {min(key(a), key(b)) for a, b in pairs}
    false_drops = dropped - later
    assert len(false_drops) < 0.01 * (len(texts) - len(pairs))


def test_default_threshold_finds_appended_word_copies(planted):
    _, pairs, ds, _ = planted
    appended = pairs[::2]  # one word appended: Jaccard ~0.88-0.96
    dropped = near_duplicate_keys(ds)
    later = {max(key(a), key(b)) for a, b in appended}
    assert len(dropped & later) >= 0.9 * len(later)
    assert dropped <= {max(key(a), key(b)) for a, b in pairs}


def test_same_result_whatever_the_block_layout(planted):
    _, _, ds, dropped = planted
    reshuffled = ds.random_shuffle(seed=7).repartition(7)
    assert near_duplicate_keys(reshuffled, threshold=0.6) == dropped


def test_banding_puts_the_s_curve_near_the_threshold():
    assert lsh_bands(0.8, 64) == (8, 8)  # (1/8)^(1/8) = 0.77
    assert lsh_bands(0.6, 64) == (16, 4)  # (1/16)^(1/4) = 0.5
    assert lsh_bands(0.95, 64) == (2, 32)  # (1/2)^(1/32) = 0.98


def test_threshold_decides_a_pair_at_jaccard_0_7(ray_local):
    base = "the quick brown fox jumps over the lazy dog near the quiet river bank at dawn"
    variant = "the quick brown fox jumps over a lazy dog near the calm river bank at dawn"
    assert 0.65 <= jaccard(base, variant) <= 0.75
    rng = np.random.default_rng(1)
    filler = ["".join(rng.choice(LETTERS, size=60)) for _ in range(50)]
    ds = dataset([base, variant, *filler])
    later = max(key(base), key(variant))
    assert near_duplicate_keys(ds, threshold=0.95) == set()
    assert near_duplicate_keys(ds, threshold=0.6) == {later}


def test_chinese_without_spaces(ray_local):
    rng = np.random.default_rng(2)
    originals = ["".join(rng.choice(HANZI, size=int(rng.integers(70, 90)))) for _ in range(300)]
    pairs = []
    for n, source in enumerate(rng.choice(len(originals), size=20, replace=False)):
        chars = list(originals[source])
        if n % 2:
            chars[int(rng.integers(len(chars)))] = str(rng.choice(HANZI))
        else:
            chars += list(rng.choice(HANZI, size=2))
        pairs.append((originals[source], "".join(chars)))
    dropped = near_duplicate_keys(dataset(originals + [copy for _, copy in pairs]))
    later = {max(key(a), key(b)) for a, b in pairs}
    assert len(dropped & later) >= 0.9 * len(later)
    assert dropped <= later
