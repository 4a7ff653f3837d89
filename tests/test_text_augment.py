"""Weak/strong text views (methods/text_augment.py): determinism in (seed, key, epoch), the EDA operations' word
properties (RD gives a subsequence, RS a permutation, RI adds in-sentence words), rates, and config validation."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from posttrain.errors import ConfigError
from posttrain.methods.text_augment import (
    AugmentConfig, augment_example, random_deletion, random_insertion, random_swap, strong_view, view_rng, weak_view,
)

TEXT = "the movie is a charming and often moving journey through a very strange small town ."
WORDS = TEXT.split()
OFF = dict(strong_deletion=0.0, strong_swap=0.0, strong_insertion=0.0)


def _is_subsequence(small, big) -> bool:
    it = iter(big)
    return all(any(w == x for x in it) for w in small)


def test_views_are_a_function_of_seed_key_epoch_only():
    cfg = AugmentConfig(weak="word_dropout", weak_dropout=0.3, strong_deletion=0.2, strong_swap=0.2,
                        strong_insertion=0.2)
    random.seed(1)
    a = strong_view(TEXT, cfg, seed=7, key="3:text_a", epoch=0)
    state = random.getstate()
    random.seed(999)  # the global RNG does not matter ...
    assert strong_view(TEXT, cfg, seed=7, key="3:text_a", epoch=0) == a
    random.setstate(state)
    strong_view(TEXT, cfg, seed=7, key="3:text_a", epoch=0)
    assert random.getstate() == state  # ... and is not consumed
    others = {strong_view(TEXT, cfg, seed=s, key=k, epoch=e) for s, k, e in
              [(8, "3:text_a", 0), (7, "4:text_a", 0), (7, "3:text_a", 1), (7, "3:text_b", 0)]}
    assert a not in others and len(others) >= 3  # each of seed, key and epoch changes the view
    assert weak_view(TEXT, cfg, seed=7, key="3", epoch=0) == weak_view(TEXT, cfg, seed=7, key="3", epoch=0)
    assert weak_view(TEXT, cfg, seed=7, key="3", epoch=0) != strong_view(TEXT, cfg, seed=7, key="3", epoch=0)
    assert view_rng(1, "k", 0, "weak").random() == view_rng(1, "k", 0, "weak").random()


def test_identity_weak_view_and_all_rates_off():
    cfg = AugmentConfig(**OFF)
    text = "  keeps   its exact  spacing "
    assert weak_view(text, cfg, seed=0, key=0, epoch=0) == text  # identity: untouched, whitespace included
    assert strong_view(TEXT, cfg, seed=0, key=0, epoch=0) == TEXT
    assert strong_view("", cfg, seed=0, key=0, epoch=0) == ""


def test_each_eda_operation_keeps_its_word_property():
    for s in range(50):
        rng = random.Random(s)
        deleted = random_deletion(WORDS, 0.3, rng)
        assert 1 <= len(deleted) <= len(WORDS) and _is_subsequence(deleted, WORDS)
        swapped = random_swap(WORDS, 0.2, rng)
        assert Counter(swapped) == Counter(WORDS)
        inserted = random_insertion(WORDS, 0.2, rng)
        assert len(inserted) == len(WORDS) + int(0.2 * len(WORDS))  # floor(rate * L) copies
        assert _is_subsequence(WORDS, inserted) and set(inserted) <= set(WORDS)  # only in-sentence words
    assert random_deletion(["one"], 0.99, random.Random(0)) == ["one"]  # never empty
    assert len(random_deletion(WORDS, 0.99, random.Random(0))) >= 1
    assert len(random_insertion(["a", "b"], 0.1, random.Random(0))) == 3  # at least one operation when rate > 0
    assert Counter(random_swap(["a"], 0.5, random.Random(0))) == Counter(["a"])


def test_strong_view_combines_the_operations_at_their_rates():
    many = [f"w{i}" for i in range(2000)]
    text = " ".join(many)
    only_delete = AugmentConfig(**{**OFF, "strong_deletion": 0.3})
    kept = strong_view(text, only_delete, seed=1, key=0, epoch=0).split()
    assert abs(1 - len(kept) / len(many) - 0.3) < 0.04 and _is_subsequence(kept, many)
    only_swap = AugmentConfig(**{**OFF, "strong_swap": 0.1})
    out = strong_view(text, only_swap, seed=1, key=0, epoch=0).split()
    moved = sum(a != b for a, b in zip(out, many))
    assert sorted(out) == sorted(many) and 0 < moved <= 2 * 200  # 200 swaps move at most 400 words
    both = AugmentConfig(strong_deletion=0.1, strong_swap=0.1, strong_insertion=0.1)
    words = strong_view(TEXT, both, seed=3, key=0, epoch=0).split()
    assert set(words) <= set(WORDS) and words != WORDS
    weak = AugmentConfig(weak="word_dropout", weak_dropout=0.2)
    dropped = weak_view(text, weak, seed=1, key=0, epoch=0).split()
    assert abs(1 - len(dropped) / len(many) - 0.2) < 0.04 and _is_subsequence(dropped, many)


def test_augment_example_views_both_texts_and_keeps_the_rest():
    cfg = AugmentConfig(strong_deletion=0.2, strong_swap=0.2, strong_insertion=0.2)
    example = {"text_a": TEXT, "text_b": "a second sentence with several words in it .", "label": "1", "idx": 5}
    out = augment_example(example, cfg, "strong", seed=0, epoch=0)
    assert example["text_a"] == TEXT  # not mutated
    assert out["label"] == "1" and out["idx"] == 5
    assert out["text_a"] != TEXT and out["text_b"] != example["text_b"]
    assert out == augment_example(example, cfg, "strong", seed=0, epoch=0, key=5)  # key defaults to idx
    assert out != augment_example(example, cfg, "strong", seed=0, epoch=0, key=6)
    single = augment_example({"text_a": TEXT, "text_b": None, "idx": 0}, cfg, "weak", seed=0, epoch=0)
    assert single == {"text_a": TEXT, "text_b": None, "idx": 0}  # identity weak view


@pytest.mark.parametrize("key,value", [("strong_deletion", 1.0), ("strong_swap", -0.1), ("weak_dropout", 2)])
def test_rates_are_validated(key, value):
    with pytest.raises(ConfigError, match=f"augment.{key}: must be in"):
        AugmentConfig(**{key: value})
