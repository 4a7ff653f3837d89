"""Rendering a task's examples: the LM-BFF/PCP prompt with a word in its ``{mask}`` slot, and DePT's text-to-text
(input, target) pair.

Rendering fills the fields and puts a label word (PCP corpus, Step 2) or the tokenizer's mask token (prompt-based
fine-tuning) in the ``{mask}`` slot. An empty field is dropped with one neighbouring space, as the reference code joins
only non-empty parts with spaces. The text-to-text form is the T5 input of DePT (Shi & Lipani, ICLR 2024; src/tasks.py
inherited from ATTEMPT), e.g. ``"premise: {text_a} hypothesis: {text_b}"``, whose target here is the label word.
"""

from __future__ import annotations

from ..errors import ConfigError
from .spec import _PLACEHOLDER, MASK, Task, canonical_label, placeholders


def label_words(task: Task) -> list[str]:
    """The rendered word of each label, in label order (the verbalizer head's rows)."""
    return [task.verbalizer[label][0] for label in task.labels]


def label_word(task: Task, label) -> str:
    """The word of one label (classification) or the text-to-text target of a score (regression)."""
    if task.is_regression and isinstance(label, (int, float)) and not isinstance(label, bool):
        return f"{round(float(label) * 5) / 5:.1f}"
    try:
        key = canonical_label(label)
    except ValueError:
        key = None
    if key not in task.verbalizer:
        raise ConfigError(f"task '{task.name}': unknown label {label!r} (labels: {', '.join(task.labels)})")
    return task.verbalizer[key][0]


def soft_target(task: Task, score: float) -> float:
    """(y - lb) / (ub - lb): the probability of the high label word a regression score stands for (PCP, STS-B)."""
    if task.regression is None:
        raise ConfigError(f"task '{task.name}' is not a regression task")
    lb, ub = task.regression.lb, task.regression.ub
    return (float(score) - lb) / (ub - lb)


def _fill(task: Task, template: str, example: dict, mask: str | None) -> str:
    values = {}
    for name in placeholders(template):
        if name == MASK:
            values[name] = mask
            continue
        if name not in example:
            raise ConfigError(f"task '{task.name}': the example has no field '{name}' (it has: "
                              f"{', '.join(sorted(map(str, example)))})")
        value = example[name]
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"task '{task.name}': field '{name}' must be a string, got {value!r}")
        values[name] = value or ""
    out = []
    pos = 0
    for match in _PLACEHOLDER.finditer(template):
        out.append(template[pos:match.start()])
        value = values[match.group(1)]
        if value:
            out.append(value)
        elif out and out[-1].endswith(" ") and (match.end() == len(template) or template[match.end()] != " "):
            out[-1] = out[-1][:-1]  # an empty part at the end or before punctuation: drop the space before it
        elif match.end() < len(template) and template[match.end()] == " ":
            pos = match.end() + 1  # drop the space after it
            continue
        pos = match.end()
    out.append(template[pos:])
    return "".join(out)


def render_template(task: Task, example: dict, label_word_or_mask: str) -> str:
    """The LM-BFF/PCP prompt of ``example`` with ``label_word_or_mask`` in the {mask} slot.

    >>> render_template(get_task("SST-2"), {"text_a": "a gem ."}, "<mask>")
    'a gem . It was <mask> .'
    """
    if not isinstance(label_word_or_mask, str) or not label_word_or_mask:
        raise ConfigError(f"task '{task.name}': the mask slot needs a non-empty string, got {label_word_or_mask!r}")
    return _fill(task, task.template, example, label_word_or_mask)


def render_text_to_text(task: Task, example: dict) -> tuple[str, str]:
    """(T5 input, target): DePT-style input; target = the label word (regression: the score rounded to 0.2)."""
    label = example.get("label")
    if label is None:
        raise ConfigError(f"task '{task.name}': the example has no label, so it has no text-to-text target")
    return _fill(task, task.text_to_text, example, None), label_word(task, label)
