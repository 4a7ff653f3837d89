"""StepGame paraphrase templates: the inventory recovered from the released data, and sentence keys.

StepGame (Shi, Zhang, Lipani, "StepGame: A New Benchmark for Robust Multi-Hop Spatial Reasoning in Texts",
AAAI 2022) phrases every grid step "X is REL of Y" with one of ~26 crowd-sourced paraphrases per relation.
Every story sentence is such a template with two entity letters filled in, so replacing the letters by
placeholders (in order of first appearance) gives a *key* that identifies the template's surface form:

    "T and K are parallel, and T is to the right of K."  ->  "{A} and {B} are parallel, and {A} is to the right of {B}."

`templates.json` (next to this file) holds the inventory recovered that way from the released files; its
`note` field says how. A template is stored as text with `{X}` (the subject) and `{Y}`, under the relation
REL that it was *generated* for ("X is REL of Y"). Two sets are exposed:

* ``original``: reproduces the benchmark, including the ten templates whose wording contradicts their
  relation (methods-reference §6.4), each flagged with a ``defect`` record;
* ``corrected``: the same inventory with those ten fixed (the fix and the reason are in the record).

A *reading table* maps a key to the relation(s) of entity {A} to entity {B}: ``original`` gives the relation
the generator intended (a key can have several: one surface form is produced by three templates of different
relations), ``corrected`` gives what the words literally say (one relation per key), which is what a solver
should use on the released data.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import ConfigError, DataError

RELATIONS = ("left", "right", "above", "below", "lower-left", "upper-right", "lower-right", "upper-left")
LABELS = RELATIONS + ("overlap",)
OFFSET = {
    "left": (-1, 0), "right": (1, 0), "above": (0, 1), "below": (0, -1),
    "lower-left": (-1, -1), "upper-right": (1, 1), "lower-right": (1, -1), "upper-left": (-1, 1),
}
INVERSE = {
    "left": "right", "right": "left", "above": "below", "below": "above", "lower-left": "upper-right",
    "upper-right": "lower-left", "lower-right": "upper-left", "upper-left": "lower-right", "overlap": "overlap",
}
TEMPLATE_SETS = ("original", "corrected")
INVENTORY_PATH = Path(__file__).with_name("templates.json")

_LETTER = re.compile(r"\b[A-Z]\b")
_PLACEHOLDER = re.compile(r"\{([XY])\}")


def label_of(dx: int, dy: int) -> str:
    """The StepGame label of an offset (sign pattern of dx, dy; 0, 0 is overlap)."""
    if dy > 0:
        return "upper-left" if dx < 0 else ("upper-right" if dx > 0 else "above")
    if dy == 0:
        return "left" if dx < 0 else ("right" if dx > 0 else "overlap")
    return "lower-left" if dx < 0 else ("lower-right" if dx > 0 else "below")


def sentence_key(sentence: str) -> tuple[str, list[str]]:
    """Abstract the entity letters of a story sentence: (key with {A}/{B}, letters in first-appearance order)."""
    order: list[str] = []

    def sub(match: re.Match) -> str:
        letter = match.group(0)
        if letter not in order:
            order.append(letter)
        i = order.index(letter)
        return "{" + ("AB"[i] if i < 2 else "?") + "}"

    return _LETTER.sub(sub, sentence), order


@dataclass(frozen=True)
class Template:
    """One paraphrase: ``text`` states "{X} is ``relation`` of {Y}" (as generated; see ``defect``)."""

    id: str
    relation: str
    text: str
    count: int = 0                 # occurrences of its surface form in the released files (shared by duplicates)
    defect: dict | None = None     # {"kind", "reason", "reads_as", "fix"} for the ten known-defective ones

    def render(self, x: str, y: str) -> str:
        return self.text.replace("{X}", x).replace("{Y}", y)

    @property
    def key(self) -> str:
        """The surface key: placeholders renamed {A}/{B} in order of first appearance."""
        first = _PLACEHOLDER.search(self.text).group(1)
        table = {"X": "A", "Y": "B"} if first == "X" else {"X": "B", "Y": "A"}
        return _PLACEHOLDER.sub(lambda m: "{" + table[m.group(1)] + "}", self.text)

    def key_relation(self, relation: str | None = None) -> str | None:
        """Relation of {A} to {B} in :attr:`key` when the text states ``relation`` (default: its own) for X."""
        relation = self.relation if relation is None else relation
        if relation is None:
            return None
        return relation if _PLACEHOLDER.search(self.text).group(1) == "X" else INVERSE[relation]


@dataclass(frozen=True)
class Inventory:
    note: str
    original: dict[str, tuple[Template, ...]]
    corrected: dict[str, tuple[Template, ...]]

    def templates(self, template_set: str = "original") -> dict[str, tuple[Template, ...]]:
        if template_set not in TEMPLATE_SETS:

            raise ConfigError(f"template set {template_set!r}: expected one of {', '.join(TEMPLATE_SETS)}")
        return self.original if template_set == "original" else self.corrected

    def defective(self) -> list[Template]:
        return [t for rel in RELATIONS for t in self.original[rel] if t.defect]


@lru_cache(maxsize=None)
def load_inventory(path: str | None = None) -> Inventory:
    """Load ``templates.json`` (or another inventory file in the same layout)."""
    raw = json.loads(Path(path or INVENTORY_PATH).read_text(encoding="utf-8"))
    original: dict[str, list[Template]] = {rel: [] for rel in RELATIONS}
    corrected: dict[str, list[Template]] = {rel: [] for rel in RELATIONS}
    for row in raw["templates"]:
        tpl = Template(row["id"], row["relation"], row["text"], row.get("count", 0), row.get("defect"))
        original[tpl.relation].append(tpl)
        if tpl.defect is None:
            corrected[tpl.relation].append(tpl)
        elif tpl.defect.get("fix"):
            corrected[tpl.relation].append(Template(tpl.id + "-fixed", tpl.relation, tpl.defect["fix"], 0, None))
    return Inventory(
        raw["note"],
        {rel: tuple(v) for rel, v in original.items()},
        {rel: tuple(v) for rel, v in corrected.items()},
    )


@lru_cache(maxsize=None)
def reading_table(template_set: str = "corrected") -> dict[str, tuple[str | None, ...]]:
    """key -> relations of {A} to {B} (``None`` when the form names only one entity).

    ``original``: the relations the generator meant (ambiguous keys list several, most frequent first).
    ``corrected``: the literal reading; it covers the corrected templates and the released defective forms.
    """
    inv = load_inventory()
    votes: dict[str, Counter] = {}
    for tpl in (t for rel in RELATIONS for t in inv.templates(template_set)[rel]):
        votes.setdefault(tpl.key, Counter())[tpl.key_relation()] += 1
    if template_set == "corrected":
        for tpl in inv.defective():
            reads = tpl.key_relation(tpl.defect.get("reads_as"))
            votes.setdefault(tpl.key, Counter())[reads] += 1
        clash = {k: v for k, v in votes.items() if len(v) > 1}
        if clash:
            raise AssertionError(f"corrected reading is ambiguous for {sorted(clash)}")
    return {k: tuple(r for r, _ in v.most_common()) for k, v in votes.items()}


@lru_cache(maxsize=None)
def defective_keys() -> dict[str, tuple[Template, ...]]:
    """Surface key -> the defective original templates that produce it."""
    out: dict[str, list[Template]] = {}
    for tpl in load_inventory().defective():
        out.setdefault(tpl.key, []).append(tpl)
    return {k: tuple(v) for k, v in out.items()}


_QUESTION = re.compile(r"What is the relation of the agent ([A-Z]) to the agent ([A-Z])\?")


def parse_question(question: str) -> tuple[str, str]:
    """"What is the relation of the agent X to the agent Y?" -> (X, Y): the label is X relative to Y."""
    match = _QUESTION.fullmatch(question.strip())
    if not match:
        raise DataError(f"question {question!r}: expected 'What is the relation of the agent X to the agent Y?'")
    return match.group(1), match.group(2)


def recover_from_data(examples_by_file: dict[str, list[dict]]) -> dict[str, dict]:
    """Recover surface forms from released examples: key -> {"count", "relations": Counter}.

    ``count`` counts every sentence of every file; ``relations`` counts, over one-hop *clean* files (the only
    ones where the single sentence relates exactly the two queried entities), the relation of {A} to {B}
    implied by the file's label. For a one-letter form the relation is that of its entity to the missing one.
    """

    found: dict[str, dict] = {}
    for name, examples in examples_by_file.items():
        one_hop = "clean" in str(name) and Path(str(name)).name.startswith("qa1_")
        for ex in examples:
            for sentence in ex["story"]:
                key, _ = sentence_key(sentence)
                found.setdefault(key, {"count": 0, "relations": Counter()})["count"] += 1
            if one_hop and len(ex["story"]) == 1:
                key, letters = sentence_key(ex["story"][0])
                target, reference = parse_question(ex["question"])
                first_is_target = letters[0] == target
                found[key]["relations"][ex["label"] if first_is_target else INVERSE[ex["label"]]] += 1
    return found
