"""Corpora for continued pre-training: raw task text (TAPT) and prompt-templated, pseudo-labelled text (PCP).

PCP, Shi & Lipani, "Don't Stop Pretraining? Make Prompt-based Fine-tuning Powerful Learner" (NeurIPS 2023), Step 2
(PowerfulPromptFT ``src/convert_to_pretrain_pcp.py``): every unlabelled text x is rendered with the task's hard
template T and the verbalizer word v(y^) of its pseudo-label y^ = argmax_y p_teacher(y | x) in the label slot,

    line(x) = T(x)[<mask> := v(y^)],   e.g. SST-2: "<x> It was great ."   MNLI: "<x1> ? Maybe , <x2>"

one line per example (``train.txt`` / ``dev.txt``); every pool example gets its prediction, confident or not. The soft
("DART") layout of ``--use_fixed_dart`` is "<x> It was <v>" (single sentence, no final period) and "<x1> <v> , <x2>"
(pairs). TAPT (Gururangan et al., ACL 2020; ``convert_to_pretrain_tapt_{1,2}.py`` in the PCP code, used as the
baseline of Shi et al., ACL Findings 2023) writes the raw text only: text_a, or text_a + " " + text_b for pairs.

One line must stay one example: every line break inside a text (``\\n``, ``\\r``, and the other separators Python's
``str.splitlines`` knows: \\v, \\f, \\x1c-\\x1e, \\x85, U+2028, U+2029), with the spaces around it, becomes one space.
A text that is empty after this is left out of the corpus (``write_corpus`` counts it); the continued pre-training
reader skips blank lines anyway, as ``run_mlm.py --line_by_line`` does.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import ConfigError
from ..io_utils import atomic_write_text
from ..tasks import label_word, render_template

LAYOUTS = ("hard", "soft")
_BREAKS = re.compile(r"[ \t]*[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]+[ \t]*")


def one_line(text: str | None) -> str:
    """``text`` with every line break (and the spaces around it) turned into one space, stripped."""
    return _BREAKS.sub(" ", text or "").strip()


def _clean(example: dict) -> dict:
    return {k: one_line(v) if isinstance(v, str) else v for k, v in example.items()}


def tapt_line(task, example: dict) -> str:
    """TAPT: the raw text (text_a; text_a + " " + text_b for sentence-pair tasks)."""
    example = _clean(example)
    parts = [example.get("text_a") or ""]
    if task.kind == "pair":
        parts.append(example.get("text_b") or "")
    return " ".join(p for p in parts if p)


def pcp_line(task, example: dict, label, layout: str = "hard") -> str:
    """PCP: ``example`` rendered with the task's template and the word of ``label`` (its pseudo-label) in the slot."""
    if task.is_regression:
        raise ConfigError(f"task '{task.name}': the PCP corpus needs class labels; regression tasks are not supported")
    word = label_word(task, label)
    example = _clean(example)
    if layout == "hard":
        return render_template(task, example, word)
    if layout == "soft":
        if task.kind == "pair":
            return " ".join(p for p in (example.get("text_a"), word, ",", example.get("text_b")) if p)
        return " ".join(p for p in (example.get("text_a"), "It was", word) if p)
    raise ConfigError(f"corpus: expected one of {', '.join(LAYOUTS)}, got {layout!r}")


def write_corpus(path: str | Path, lines: list[str]) -> dict:
    """Write one example per line (atomically); empty lines are left out. Returns counts."""
    kept = [line for line in lines if line.strip()]
    if any(_BREAKS.search(line) for line in kept):  # a caller bypassed one_line: never split an example
        raise ValueError("a corpus line contains a line break")
    atomic_write_text(path, "".join(line + "\n" for line in kept))
    return {"file": str(path), "lines": len(kept), "empty_left_out": len(lines) - len(kept)}
