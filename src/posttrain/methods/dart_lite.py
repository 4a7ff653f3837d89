"""Soft ("DART-lite") prompts: the template's words and the label words become new, trainable tokens.

DART (Zhang et al., ICLR 2022) makes the prompt differentiable; PCP (Shi & Lipani, NeurIPS 2023) uses a light
version (``DartDatasetSequenceClassification`` + ``_init_embedding`` in PowerfulPromptFT): the pattern words and
every label word are replaced by new vocabulary entries whose embeddings start as copies of the original words'
embeddings, and then train with the rest of the model under the ordinary cross-entropy (no DART fluency loss):

    e(<P_i>) <- mean_j e(t_j) for the sub-tokens t_j of the i-th template word,
    e(<L_c>) <- mean_j e(t_j) for the sub-tokens of label word v_c      (and the same for untied output rows).

The reference hard-codes two layouts ("<S1> [P1][P2] <mask>" and "<S1> <mask> [P] <S2>"); here every literal
word of the task's own template becomes one new token, so each task keeps its template's shape (SST-2:
"<S1> It was <mask> ." -> "<S1><P0><P1><mask><P2>"). New tokens are added as special tokens so no tokenizer merges
or splits them. Tokens already present (a resumed run or a saved soft-prompt model) are reused, not re-initialised.
All parameters train (the new rows live in the embedding matrix), so this needs ``adapter.type: full``.
"""

from __future__ import annotations

import dataclasses
import re

import torch

from ..errors import ConfigError

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _token_name(task_name: str, kind: str, i: int) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "", task_name).lower() or "task"
    return f"<|{slug}_{kind}{i}|>"


def soft_template_string(template: str, pattern_tokens: list[str]) -> str:
    """The template with its literal words replaced, in order, by ``pattern_tokens`` (one per word)."""
    out, pos, k = [], 0, 0
    pieces = []
    for match in _PLACEHOLDER.finditer(template):
        pieces.append(("text", template[pos:match.start()]))
        pieces.append(("field", match.group(0)))
        pos = match.end()
    pieces.append(("text", template[pos:]))
    for index, (kind, value) in enumerate(pieces):
        if kind == "field":
            out.append(value)
            continue
        words = value.split()
        out.extend(pattern_tokens[k: k + len(words)])
        k += len(words)
        after = pieces[index + 1][1] if index + 1 < len(pieces) else ""
        if words and after and after != "{mask}":
            out.append(" ")  # a text field after pattern tokens starts as a word, as in the hard template
    return "".join(out)


def literal_words(template: str) -> list[str]:
    return _PLACEHOLDER.sub(" ", template).split()


@torch.no_grad()
def _init_rows(model, tokenizer, new_ids: list[int], sources: list[str]) -> None:
    tables = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings()
    if out is not None and out.weight.data_ptr() != tables[0].data_ptr():
        tables.append(out.weight)
    for new, word in zip(new_ids, sources):
        ids = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ConfigError(f"task.prompt_style=soft: {word!r} tokenises to nothing")
        for table in tables:
            table[new] = table[ids].mean(0)


def make_soft(task, tokenizer, model):
    """Add the task's pattern and label tokens to ``tokenizer`` and ``model`` (initialised from the words) and
    return the task with the soft template and verbalizer."""
    words = literal_words(task.template)
    pattern = [_token_name(task.name, "p", i) for i in range(len(words))]
    labels = [_token_name(task.name, "l", i) for i in range(len(task.labels))]
    originals = [task.verbalizer[label][0] for label in task.labels]
    fresh = [t for t in pattern + labels if t not in tokenizer.get_vocab()]
    if fresh:
        tokenizer.add_special_tokens({"additional_special_tokens": fresh}, replace_extra_special_tokens=False)
        model.resize_token_embeddings(len(tokenizer))
        source = dict(zip(pattern + labels, words + originals))
        _init_rows(model, tokenizer, tokenizer.convert_tokens_to_ids(fresh), [source[t] for t in fresh])
    soft = dataclasses.replace(task, template=soft_template_string(task.template, pattern),
                               verbalizer={label: [tok] for label, tok in zip(task.labels, labels)})
    return soft


def describe(task, soft_task) -> dict:
    return {"prompt_style": "soft", "template": soft_task.template,
            "label_tokens": {label: soft_task.verbalizer[label][0] for label in task.labels}}
