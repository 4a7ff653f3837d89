"""StepGame prompts, answer words and answer normalisation for evaluating language models.

StepGame (Shi, Zhang, Lipani, "StepGame: A New Benchmark for Robust Multi-Hop Spatial Reasoning in Texts",
AAAI 2022) asks for the relation of one entity to another: 8 directions or overlap. This module fixes how a model
is asked (one prompt for log-likelihood multiple choice, generation and the lm-evaluation-harness export) and how a
free-form answer is mapped back to a label.

One example is shown as (``PROMPT_TEMPLATE``; the story sentences are joined by single spaces)::

    Read the story and answer the question about where the first agent is relative to the second. Answer with one
    of: left, right, above, below, upper-left, upper-right, lower-left, lower-right, overlap.

    Story: <sentences>
    Question: What is the relation of the agent X to the agent Y?
    Answer:

Plain text (no chat template): ``shot_1 + " " + label_1 + "\\n\\n" + ... + prompt``; the answer word is scored as the
continuation ``" " + word`` (one leading space, like lm-evaluation-harness's ``target_delimiter``). Chat: every
example is a user turn, every shot's label an assistant turn, and the answer word is scored right after the
assistant header, without a leading space (lm-eval does the same with ``--apply_chat_template``).

Answer normalisation for generation (``normalise_answer``), applied to the generated text (plain mode: its first
non-empty line only): lower-case; ``_`` and dashes become ``-``; diagonal phrases ``(upper|top|lower|bottom)`` +
optional spaces/hyphen + ``(left|right)`` map to ``upper-*``/``lower-*``; then the words ``left``, ``right``,
``above``, ``below``, ``overlap``/``overlaps``/``overlapping`` are found as whole words outside those phrases. The
answer is the label if exactly one distinct label is mentioned, else unparseable (None): ``"Upper-Left."``,
``"the answer is lower right"`` and ``"top left"`` parse; ``"above and to the left"`` (two labels), ``"up"``,
``"north"`` or ``"leftmost"`` do not, since reading them needs a guess. Unparseable answers count as wrong and are
counted separately.
"""

from __future__ import annotations

import random
import re
from typing import Sequence

from .templates import LABELS

ANSWER_WORDS = ("left", "right", "above", "below", "upper-left", "upper-right", "lower-left", "lower-right",
                "overlap")
assert sorted(ANSWER_WORDS) == sorted(LABELS)
INSTRUCTION = ("Read the story and answer the question about where the first agent is relative to the second. "
               "Answer with one of: " + ", ".join(ANSWER_WORDS) + ".")
PROMPT_TEMPLATE = INSTRUCTION + "\n\nStory: {story}\nQuestion: {question}\nAnswer:"
LM_EVAL_DOC_TO_TEXT = PROMPT_TEMPLATE.replace("{story}", "{{story}}").replace("{question}", "{{question}}")
TARGET_DELIMITER = " "     # plain text: " left"; chat: "left"
FEWSHOT_DELIMITER = "\n\n"

_DIAGONAL = re.compile(r"\b(upper|top|lower|bottom)[\s-]*(left|right)\b")
_AXIS = re.compile(r"\b(left|right|above|below|overlap|overlaps|overlapping)\b")


def story_text(example: dict) -> str:
    return " ".join(s.strip() for s in example["story"] if s.strip())


def example_prompt(example: dict) -> str:
    """The prompt of one example (instruction, story, question, 'Answer:')."""
    return PROMPT_TEMPLATE.format(story=story_text(example), question=example["question"].strip())


def build_messages(example: dict, shots: Sequence[dict] = ()) -> list[dict]:
    """Chat turns: each shot as user prompt + assistant label, then the example's user prompt."""
    messages = []
    for shot in shots:
        messages += [{"role": "user", "content": example_prompt(shot)}, {"role": "assistant", "content": shot["label"]}]
    return messages + [{"role": "user", "content": example_prompt(example)}]


def build_plain(example: dict, shots: Sequence[dict] = ()) -> str:
    """Plain text: shots with their answers, separated by blank lines, then the example's prompt."""
    return "".join(example_prompt(s) + TARGET_DELIMITER + s["label"] + FEWSHOT_DELIMITER for s in shots) + \
        example_prompt(example)


def build_context(example: dict, shots: Sequence[dict] = (), *, tokenizer=None, chat_template=False) -> str:
    """Context text: ``chat_template`` False = plain text; None = the tokenizer's template; else Jinja source."""
    if chat_template is False:
        return build_plain(example, shots)
    return tokenizer.apply_chat_template(build_messages(example, shots), chat_template=chat_template, tokenize=False,
                                         add_generation_prompt=True)


def choice_texts(chat: bool, delimiter: str | None = None) -> list[str]:
    """The scored continuations, in ``ANSWER_WORDS`` order: ``delimiter + word``; the delimiter defaults to
    ``TARGET_DELIMITER`` in plain text and to nothing in chat mode (see ``harness.answer_delimiter``)."""
    if delimiter is None:
        delimiter = "" if chat else TARGET_DELIMITER
    return [delimiter + word for word in ANSWER_WORDS]


def normalise_answer(text: str) -> str | None:
    """Map a generated answer to a label; None when no label or more than one distinct label is mentioned."""
    t = re.sub(r"[_\u2010-\u2015]", "-", text.lower())
    found = set()
    for match in _DIAGONAL.finditer(t):
        found.add(("upper" if match.group(1) in ("upper", "top") else "lower") + "-" + match.group(2))
    rest = _DIAGONAL.sub(" ", t)
    for match in _AXIS.finditer(rest):
        word = match.group(1)
        found.add("overlap" if word.startswith("overlap") else word)
    return found.pop() if len(found) == 1 else None


def sample_shots(pool: Sequence[dict], n: int, rng: random.Random, exclude: dict | None = None) -> list[dict]:
    """``n`` distinct examples of ``pool`` (never one with the same story and question as ``exclude``)."""
    if n <= 0:
        return []
    key = None if exclude is None else (tuple(exclude["story"]), exclude["question"])
    picked, seen = [], set()
    limit = min(n, len(pool))
    while len(picked) < limit and len(seen) < len(pool):
        i = rng.randrange(len(pool))
        if i in seen:
            continue
        seen.add(i)
        if key is not None and (tuple(pool[i]["story"]), pool[i]["question"]) == key:
            continue
        picked.append(pool[i])
    return picked
