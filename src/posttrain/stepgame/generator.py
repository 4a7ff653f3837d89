"""The StepGame story generator (Shi, Zhang, Lipani, AAAI 2022; methods-reference §6.1).

A k-hop story is a walk on an unbounded grid: k+1 distinct letters, the first at (0, 0), each next one a
step in one of 8 directions from the previous (cells may repeat: "overlap"). Each step "new is REL of prev"
is phrased from either side with p = 1/2 (a template of REL with X=new, or of its inverse with X=prev),
the template drawn uniformly from its list. Two chain letters are queried and the label is the sign pattern
of their offset (9 labels):

    label(ask_2 vs ask_1) = sign pattern of pos(ask_2) - pos(ask_1)
    (dy > 0: upper-left / above / upper-right; dy = 0: left / overlap / right; dy < 0: lower-*, below)

Noise (always drawn, so the clean and the noisy example come from the same story):
  * supporting (k > 3): two chain letters other than the queried ones, Manhattan distance 2..7 (99 tries),
    joined by an axis-aligned path through distance-1 fresh letters (consistent with the truth);
  * disconnected: D = randint(2, (k+1)//3 + 1) fresh letters (2 when that range is empty) in a chain of D-1
    random relations, unconnected to the story;
  * irrelevant: randint(1, (k+1)//3 + 1) fresh letters, each related at random to a chain letter or an
    earlier irrelevant one.
Clean keeps the k chain sentences, noisy keeps all; both are shuffled. The statistics report nodes per type.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from ..errors import ConfigError
from .templates import INVERSE, OFFSET, RELATIONS, label_of, load_inventory

ALPHABET = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
QUESTION = "What is the relation of the agent {} to the agent {}?"
MAX_K = 10  # the letter budget (26) holds for k <= 10: k+1 chain + 6 supporting + 4 disconnected + 4 irrelevant


class _Phraser:
    """Renders "a is REL of b" with a random side and template; holds the per-relation template lists."""

    def __init__(self, rng: random.Random, template_set: str):
        inventory = load_inventory().templates(template_set)
        self.rng = rng
        # pre-split texts so rendering is a join: parts[0] + first + parts[1] + second + ...
        self.lists = {rel: [_compile(t.text) for t in inventory[rel]] for rel in RELATIONS}

    def __call__(self, a: str, rel: str, b: str) -> str:
        rnd = self.rng.random
        if rnd() < 0.5:
            choices, x, y = self.lists[rel], a, b
        else:
            choices, x, y = self.lists[INVERSE[rel]], b, a
        parts, slots = choices[int(rnd() * len(choices))]
        out = [parts[0]]
        for slot, part in zip(slots, parts[1:]):
            out.append(x if slot == "X" else y)
            out.append(part)
        return "".join(out)


def _compile(text: str) -> tuple[list[str], list[str]]:
    parts, slots, rest = [], [], text
    while True:
        i = min((j for j in (rest.find("{X}"), rest.find("{Y}")) if j >= 0), default=-1)
        if i < 0:
            parts.append(rest)
            return parts, slots
        parts.append(rest[:i])
        slots.append(rest[i + 1])
        rest = rest[i + 3:]


def _randint(rng: random.Random, lo: int, hi: int) -> int:
    return lo + int(rng.random() * (hi - lo + 1))


def _supporting(rng, say, entities: list[str], pos: dict, fresh: Iterator[str], out: list[str]) -> int:
    """Add an axis-aligned alternative path between two non-queried chain letters; return nodes added."""
    for _ in range(99):
        rng.shuffle(entities)
        end, start = entities[0], entities[1]
        dx, dy = pos[start][0] - pos[end][0], pos[start][1] - pos[end][1]
        if 2 <= abs(dx) + abs(dy) <= 7:
            break
    else:
        return 0
    dist = abs(dx) + abs(dy)
    cur = start
    for nxt in [next(fresh) for _ in range(dist - 1)] + [end]:
        move_x = (rng.random() < 0.5) if (dx and dy) else bool(dx)
        if move_x:
            rel, dx = ("left", dx - 1) if dx > 0 else ("right", dx + 1)
        else:
            rel, dy = ("below", dy - 1) if dy > 0 else ("above", dy + 1)
        out.append(say(nxt, rel, cur))
        cur = nxt
    return dist - 1


def story_pair(rng: random.Random, say: _Phraser, k: int) -> tuple[dict, dict]:
    """One generated story as (clean example, noisy example)."""
    letters = list(ALPHABET)
    rng.shuffle(letters)
    chain = letters[: k + 1]
    pos = {chain[0]: (0, 0)}
    x = y = 0
    sentences = []
    for i in range(k):
        rel = RELATIONS[int(rng.random() * 8)]
        x, y = x + OFFSET[rel][0], y + OFFSET[rel][1]
        pos[chain[i + 1]] = (x, y)
        sentences.append(say(chain[i + 1], rel, chain[i]))
    rest = chain[:]
    rng.shuffle(rest)
    ask_1, ask_2 = rest.pop(), rest.pop()
    label = label_of(pos[ask_2][0] - pos[ask_1][0], pos[ask_2][1] - pos[ask_1][1])
    question = QUESTION.format(ask_2, ask_1)

    fresh = iter(letters[k + 1:])
    noise: list[str] = []
    supporting = _supporting(rng, say, rest, pos, fresh, noise) if k > 3 else 0
    hi = (k + 1) // 3 + 1
    disconnected = _randint(rng, 2, hi) if hi >= 2 else 2
    irrelevant = _randint(rng, 1, hi)
    island = [next(fresh) for _ in range(disconnected)]
    for a, b in zip(island, island[1:]):
        noise.append(say(b, RELATIONS[int(rng.random() * 8)], a))
    anchors = list(chain)
    for _ in range(irrelevant):
        anchor, new = anchors[int(rng.random() * len(anchors))], next(fresh)
        anchors.append(new)
        noise.append(say(new, RELATIONS[int(rng.random() * 8)], anchor))

    clean_story = sentences[:]
    rng.shuffle(clean_story)
    noisy_story = sentences + noise
    rng.shuffle(noisy_story)
    counts = {"supporting": supporting, "disconnected": disconnected, "irrelevant": irrelevant}
    zero = {"supporting": 0, "disconnected": 0, "irrelevant": 0}
    clean = {"story": clean_story, "question": question, "label": label, "k_hop": k, "noise_nodes": zero}
    noisy = {"story": noisy_story, "question": question, "label": label, "k_hop": k, "noise_nodes": counts}
    return clean, noisy


def iter_pairs(k: int, n: int, seed: int = 0, template_set: str = "original") -> Iterator[tuple[dict, dict]]:
    """Yield n (clean, noisy) pairs for k hops; the stream depends only on (seed, k, template_set)."""
    if not 1 <= k <= MAX_K:
        raise ConfigError(f"stepgame k={k}: expected 1..{MAX_K} (26 letters limit the noise for larger k)")
    if n < 0:
        raise ConfigError(f"stepgame n={n}: expected a non-negative count")
    rng = random.Random(f"stepgame:{seed}:{k}")
    say = _Phraser(rng, template_set)
    for _ in range(n):
        yield story_pair(rng, say, k)


def generate(k: int, n: int, seed: int = 0, noise: bool = True, template_set: str = "original") -> list[dict]:
    """n examples with k hops: dicts with story, question, label, k_hop and noise_nodes (counts by type).

    Clean (``noise=False``) examples are exactly the chain sentences of the noisy ones for the same seed; their
    ``noise_nodes`` are all 0 (no noise in the story). Use ``iter_pairs`` to get both versions at once.
    """
    pick = 1 if noise else 0
    return [pair[pick] for pair in iter_pairs(k, n, seed, template_set)]
