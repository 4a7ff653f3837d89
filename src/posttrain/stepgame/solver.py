"""Exact symbolic solver for StepGame stories (Shi, Zhang, Lipani, AAAI 2022).

Each sentence is matched to a template by its key (entity letters abstracted, see ``templates``), which gives a
fact "a is REL of b", i.e. pos(a) - pos(b) = OFFSET[REL]. The facts form an undirected graph of offsets; a
breadth-first search from the reference entity places every reachable entity, and the answer is the sign
pattern of pos(target) - pos(reference). Noise sentences simply add (possibly disconnected) edges.

``evaluate`` compares the solver with a file's labels. With the ``corrected`` (literal) reading, a wrong
answer must come from a defective template; ``explain`` proves it by re-reading the story's defective
sentences as the generator meant them (every combination, including each candidate for the entity that a
self-referencing sentence lost) and finding one that reproduces the label.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass

from .templates import OFFSET, defective_keys, label_of, parse_question, reading_table, sentence_key

MAX_COMBINATIONS = 4096


@dataclass(frozen=True)
class Fact:
    """``subject`` is ``relation`` of ``object`` (``object`` is None when the sentence lost it)."""

    subject: str
    relation: str | None
    object: str | None
    key: str


def parse_sentence(sentence: str, template_set: str = "corrected") -> list[Fact]:
    """All readings of one sentence ([] when no template matches; several only for ambiguous original forms)."""
    key, letters = sentence_key(sentence)
    readings = reading_table(template_set).get(key)
    if not readings or not 1 <= len(letters) <= 2:
        return []
    other = letters[1] if len(letters) == 2 else None
    return [Fact(letters[0], rel, other, key) for rel in readings]


def parse_story(story: list[str], template_set: str = "corrected") -> list[list[Fact]]:
    return [parse_sentence(s, template_set) for s in story]


def _place(facts: list[Fact], start: str) -> dict[str, tuple[int, int]]:
    graph: dict[str, list[tuple[str, int, int]]] = {}
    for f in facts:
        if f.relation is None or f.object is None:
            continue
        dx, dy = OFFSET[f.relation]
        graph.setdefault(f.subject, []).append((f.object, -dx, -dy))
        graph.setdefault(f.object, []).append((f.subject, dx, dy))
    pos = {start: (0, 0)}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        x, y = pos[node]
        for nxt, dx, dy in graph.get(node, ()):
            if nxt not in pos:
                pos[nxt] = (x + dx, y + dy)
                queue.append(nxt)
    return pos


def answer(facts: list[Fact], target: str, reference: str) -> str | None:
    """Label of ``target`` relative to ``reference`` from the facts, or None when they are not connected."""
    pos = _place(facts, reference)
    if target not in pos:
        return None
    return label_of(pos[target][0], pos[target][1])


def solve(story: list[str], question: str, template_set: str = "corrected") -> str | None:
    """The label the story implies (first reading of each sentence); None if the story does not connect them."""
    target, reference = parse_question(question)
    facts = [r[0] for r in parse_story(story, template_set) if r]
    return answer(facts, target, reference)


@dataclass
class Explanation:
    explained: bool
    templates: list[str]     # ids of the defective templates whose intended reading reproduces the label
    sentences: list[str]     # the sentences re-read (all defective-form sentences when not explained)


def explain(story: list[str], question: str, label: str) -> Explanation:
    """Show that a contradiction comes from defective templates: re-read them as generated, find the label."""
    target, reference = parse_question(question)
    bad = defective_keys()
    letters = sorted({c for s in story for c in sentence_key(s)[1]} | {target, reference})
    fixed, options, flagged = [], [], []
    for sentence in story:
        readings = parse_sentence(sentence, "corrected")
        key, found = sentence_key(sentence)
        if key not in bad:
            fixed.extend(readings[:1])
            continue
        flagged.append(sentence)
        alts: list[tuple[Fact | None, str | None, str]] = [(readings[0] if readings else None, None, sentence)]
        for tpl in bad[key]:
            rel = tpl.key_relation()
            if len(found) == 2:
                alts.append((Fact(found[0], rel, found[1], key), tpl.id, sentence))
            else:  # self-reference: the other entity is unknown, try each letter in play
                alts += [(Fact(found[0], rel, o, key), tpl.id, sentence) for o in letters if o != found[0]]
        options.append(alts)
    if not options:
        return Explanation(False, [], [])
    best: tuple | None = None
    for count, combo in enumerate(itertools.product(*options)):
        if count >= MAX_COMBINATIONS:
            break
        facts = fixed + [f for f, _, _ in combo if f is not None]
        if answer(facts, target, reference) == label:
            switched = [(i, s) for _, i, s in combo if i]
            if best is None or len(switched) < len(best):
                best = switched
            if len(best) <= 1:
                break
    if best is None:
        return Explanation(False, [], flagged)
    return Explanation(True, sorted({i for i, _ in best}), [s for _, s in best] or flagged)


def evaluate(examples: list[dict], template_set: str = "corrected") -> dict:
    """Accuracy of the solver against the examples' labels and the list of contradicting examples.

    Each contradiction has ``id``, ``label``, ``predicted``, ``explained`` (by defective templates),
    ``templates`` (their ids) and ``sentences`` (the defective ones in the story).
    """
    correct, errors, unparsed = 0, [], 0
    for i, ex in enumerate(examples):
        unparsed += sum(not r for r in parse_story(ex["story"], template_set))
        predicted = solve(ex["story"], ex["question"], template_set)
        if predicted == ex["label"]:
            correct += 1
            continue
        why = explain(ex["story"], ex["question"], ex["label"])
        errors.append({
            "id": str(ex.get("id", i)), "label": ex["label"], "predicted": predicted, "explained": why.explained,
            "templates": why.templates, "sentences": why.sentences, "question": ex["question"],
        })
    n = len(examples)
    return {
        "n": n, "correct": correct, "accuracy": correct / n if n else 0.0, "template_set": template_set,
        "contradictions": len(errors), "explained": sum(e["explained"] for e in errors),
        "unexplained": sum(not e["explained"] for e in errors), "unparsed_sentences": unparsed, "errors": errors,
    }
