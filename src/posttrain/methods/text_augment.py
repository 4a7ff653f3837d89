"""Offline weak and strong text views for consistency-based self-training (FixMatch on text).

USB (Wang et al., "USB: A Unified Semi-supervised Learning Benchmark", NeurIPS 2022), which the self-training baselines
of Shi et al. ("Rethinking Semi-supervised Learning with Language Models", ACL Findings 2023) and of PCP (Shi &
Lipani, NeurIPS 2023) run, takes the weak view of an unlabelled text to be the text itself and the strong view to be
one of two back-translations (German and Russian round trips, the ``aug_0``/``aug_1`` fields of its datasets).
Back-translation needs two translation models and is not available offline, so this module substitutes a seeded,
rule-based augmentation from EDA (Wei & Zou, "EDA: Easy Data Augmentation Techniques for Boosting Performance on
Text Classification Tasks", EMNLP 2019). With the text's whitespace-separated words w_1..w_L:

- weak view ``identity`` (USB's weak view): the text unchanged; ``word_dropout``: each word dropped with
  probability ``weak_dropout`` (at least one word kept);
- strong view, applied in this order:
  1. random deletion (EDA RD): each word dropped with probability ``strong_deletion`` (if all go, one random word
     stays);
  2. random swap (EDA RS): n_rs = max(1, floor(strong_swap * L)) times, two random positions swap their words;
  3. random insertion (EDA RI): n_ri = max(1, floor(strong_insertion * L)) times, a copy of a random word of the
     sentence is inserted at a random position.
  A rate of 0 turns its operation off. EDA's fourth operation, synonym replacement, and its synonym-based RI need
  WordNet, which is not available offline: RI inserts a word of the sentence itself instead of a synonym, and
  there is no synonym replacement. Unlike back-translation, these views do not paraphrase: they perturb word order
  and presence, which for sentiment mostly keeps the label (EDA's premise) but is a weaker, noisier substitute.

Every view is a pure function of (seed, example key, epoch, view name): ``rng = Random(sha256(...))``, so a run and
its resumption draw the same views, a text gets new views each pass over the unlabelled data, and the views do not
depend on the global RNG. Pair tasks augment ``text_a`` and ``text_b`` independently (different keys).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Literal

from ..config import help_field as _f
from ..config.fields import check_bounds

TEXT_FIELDS = ("text_a", "text_b")




@dataclass
class AugmentConfig:
    weak: Literal["identity", "word_dropout"] = _f(
        "identity", "Weak view: identity (the text itself, as USB) or word_dropout (each word dropped with "
        "probability weak_dropout).")
    weak_dropout: float = _f(0.1, "weak=word_dropout: probability of dropping each word.", bounds="[0, 1)")
    strong_deletion: float = _f(0.1, "Strong view, EDA random deletion: probability of dropping each word (0 = off).",
                                bounds="[0, 1)")
    strong_swap: float = _f(0.1, "Strong view, EDA random swap: max(1, floor(rate * words)) swaps of two random "
                            "words (0 = off).", bounds="[0, 1)")
    strong_insertion: float = _f(0.1, "Strong view, EDA random insertion without WordNet: max(1, floor(rate * "
                                 "words)) copies of random in-sentence words inserted at random positions (0 = off).",
        bounds="[0, 1)")

    def __post_init__(self):
        check_bounds(self, "augment.")


def view_rng(seed: int, key, epoch: int, view: str) -> random.Random:
    """A generator determined by (seed, key, epoch, view) only (sha256, not Python's salted ``hash``)."""
    digest = hashlib.sha256(f"{seed}|{key}|{epoch}|{view}".encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def random_deletion(words: list[str], p: float, rng: random.Random) -> list[str]:
    if p <= 0 or len(words) <= 1:
        return list(words)
    kept = [w for w in words if rng.random() >= p]
    return kept or [words[rng.randrange(len(words))]]


def random_swap(words: list[str], rate: float, rng: random.Random) -> list[str]:
    words = list(words)
    if rate <= 0 or len(words) < 2:
        return words
    for _ in range(max(1, int(rate * len(words)))):
        i, j = rng.randrange(len(words)), rng.randrange(len(words))
        words[i], words[j] = words[j], words[i]
    return words


def random_insertion(words: list[str], rate: float, rng: random.Random) -> list[str]:
    words = list(words)
    if rate <= 0 or not words:
        return words
    for _ in range(max(1, int(rate * len(words)))):
        words.insert(rng.randrange(len(words) + 1), words[rng.randrange(len(words))])
    return words


def weak_view(text: str, cfg: AugmentConfig, *, seed: int, key, epoch: int) -> str:
    if cfg.weak == "identity" or not text:
        return text
    words = text.split()
    rng = view_rng(seed, key, epoch, "weak")
    return " ".join(random_deletion(words, cfg.weak_dropout, rng)) if words else text


def strong_view(text: str, cfg: AugmentConfig, *, seed: int, key, epoch: int) -> str:
    words = text.split() if text else []
    if not words:
        return text
    rng = view_rng(seed, key, epoch, "strong")
    words = random_deletion(words, cfg.strong_deletion, rng)
    words = random_swap(words, cfg.strong_swap, rng)
    words = random_insertion(words, cfg.strong_insertion, rng)
    return " ".join(words)


VIEWS = {"weak": weak_view, "strong": strong_view}


def augment_example(example: dict, cfg: AugmentConfig, view: str, *, seed: int, epoch: int, key=None) -> dict:
    """A copy of ``example`` whose text fields are replaced by their ``view`` ("weak" or "strong"); ``key``
    (default: the example's ``idx``) names the example in the seed of its views."""
    make = VIEWS[view]
    key = example.get("idx") if key is None else key
    out = dict(example)
    for name in TEXT_FIELDS:
        if out.get(name):
            out[name] = make(out[name], cfg, seed=seed, key=f"{key}:{name}", epoch=epoch)
    return out
