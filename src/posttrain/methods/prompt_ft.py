"""Prompt-based fine-tuning: a task's template and verbalizer turn classification into predicting a label word.

LM-BFF (Gao, Fisch, Chen, ACL 2021) and PCP (Shi & Lipani, NeurIPS 2023, Sec. 3; `RobertaForPromptingClassification`
of PowerfulPromptFT) render an example x into the hard template T(x) with one label slot and score each label c by
its word v_c there. With s_c(x) the score of label c,

    p(c | x) = softmax_c s_c(x),     loss = -log p(y | x)                       (classification)
    loss = KL([1 - t, t] || p),      t = (y - lb) / (ub - lb),  y_hat = lb + p(high) (ub - lb)   (STS-B regression)

and all model parameters train (or those of an adapter: LoRA, prompt tuning, DePT). s_c depends on the model:

- masked LM: s_c = logit of v_c's first sub-token at the <mask> position (LM-BFF's verbalizer head);
- causal LM, ``causal_scoring: slot`` (default): the slot's label word is predicted from its left context
  (template up to the slot). s_c = log p(v_c | left context) summed over v_c's tokens (``label_tokens: all``) or
  the first sub-token only (``first``). Text after the slot is not used: a decoder cannot see it at the slot.
- causal LM, ``causal_scoring: filled``: s_c = log p(v_c + rest of the template | left context): the whole filled
  template is scored (the prefix before the slot is shared by all c and cancels in the softmax). This uses the
  text after the slot (e.g. ", <S2>" of MNLI's "<S1> ? <mask> , <S2>") at the cost of C forward passes.
- seq2seq: the encoder reads the template (the slot holds the tokenizer's first sentinel, <extra_id_0> for T5, or
  its mask token) or the text-to-text input; s_c = log p(v_c | encoder input) on the decoder.

When every label is one scored token at one position (single-token words, or ``label_tokens: first``), the
softmax over the C log-probabilities equals the softmax over the C raw logits (log Z cancels), so only the C
verbalizer rows of the LM head at one position per example are computed (``verbalizer_head.head_logits``). Other
cases compute full-vocabulary rows, but only at the label-word positions.

Over-long inputs lose tokens far from the slot: the middle for causal/seq2seq (the slot is at the end); for masked
LMs a window of text centred on the <mask> is kept (with the special tokens at both ends).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..data.classification import cut_middle, label_word_ids as _word_ids
from ..errors import ConfigError, DataError
from .verbalizer_head import head_logits
from ..tasks import canonical_label, label_words, render_template, soft_target
from ..tasks.render import _fill


def _slot_token(tokenizer, kind: str) -> str | None:
    if kind == "masked":
        if tokenizer.mask_token is None:
            raise ConfigError("task.objective=verbalizer: this masked LM's tokenizer has no mask token")
        return tokenizer.mask_token
    sentinels = [t for t in getattr(tokenizer, "all_special_tokens", []) if t == "<extra_id_0>"]
    return sentinels[0] if sentinels else tokenizer.mask_token


def _window_around(ids: list[int], position: int, max_length: int, tokenizer) -> tuple[list[int], int]:
    """Keep the special tokens at both ends and a window of the text centred on ``position`` (the <mask>)."""
    special = set(tokenizer.all_special_ids) - {tokenizer.mask_token_id}
    head = 0
    while head < len(ids) and ids[head] in special:
        head += 1
    tail = 0
    while tail < len(ids) - head and ids[len(ids) - 1 - tail] in special:
        tail += 1
    body, p = ids[head: len(ids) - tail], position - head
    room = max_length - head - tail
    start = max(0, min(p - room // 2, len(body) - room))
    return ids[:head] + body[start: start + room] + ids[len(ids) - tail:], head + p - start


@dataclass
class EncodedExample:
    input_ids: list[int]
    position: int                # where the first scored token is predicted (decoder position for seq2seq)
    candidates: list[list[int]]  # scored tokens of each label (after the slot, for causal/seq2seq)
    truncated: bool = False


def encode_example(tokenizer, task, example: dict, *, kind: str, form: str, max_length: int, label_tokens: str,
                   causal_scoring: str) -> EncodedExample:
    """Token ids of one example for the verbalizer objective (see the module docstring)."""
    words = label_words(task)
    if kind == "masked":
        text = render_template(task, example, _slot_token(tokenizer, kind))
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        where = [i for i, t in enumerate(ids) if t == tokenizer.mask_token_id]
        if len(where) != 1:
            raise DataError(f"example {example.get('idx')}: the rendered template has {len(where)} mask tokens, "
                            "expected exactly one (does the text itself contain the mask token?)")
        position, cut = where[0], len(ids) > max_length
        if cut:
            ids, position = _window_around(ids, position, max_length, tokenizer)
        word_ids = [_word_ids(tokenizer, w) for w in words]
        multi = [w for w, w_ids in zip(words, word_ids) if len(w_ids) > 1]
        if multi and label_tokens == "all":
            raise ConfigError(f"task.label_tokens=all: masked LMs score one <mask> token, but {multi[0]!r} has "
                              "several; use label_tokens=first (LM-BFF) or single-token label words")
        return EncodedExample(ids, position, [w_ids[:1] for w_ids in word_ids], cut)

    if kind == "seq2seq":
        slot = _slot_token(tokenizer, kind)
        text = (render_template(task, example, slot) if form == "template" and slot
                else _fill(task, task.text_to_text, example, None))
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        cut = len(ids) > max_length
        ids = cut_middle(ids, max_length) if cut else ids
        cands = [_word_ids(tokenizer, w) for w in words]
        return EncodedExample(ids, 0, [c[:1] if label_tokens == "first" else c for c in cands], cut)

    # causal: context up to the slot; candidates = the word (+ the rest of the template when scoring it filled)
    sentinel = "\u2063SLOT\u2063"
    if form == "template":
        before, after = render_template(task, example, sentinel).split(sentinel, 1)
        before = before.rstrip()
    else:
        before, after = _fill(task, task.text_to_text, example, None), ""
    ctx = tokenizer(before, add_special_tokens=True)["input_ids"]
    cands = []
    for w in words:
        if causal_scoring == "filled":
            cands.append(tokenizer(" " + w + after, add_special_tokens=False)["input_ids"])
        else:
            ids = _word_ids(tokenizer, w)
            cands.append(ids[:1] if label_tokens == "first" else ids)
    room = max_length - max(len(c) for c in cands) + 1
    if room < 1:
        raise ConfigError(f"data.max_length={max_length} leaves no room for the context before the label words")
    cut = len(ctx) > room
    ctx = cut_middle(ctx, room) if cut else ctx
    return EncodedExample(ctx, len(ctx) - 1, cands, cut)


@dataclass
class PromptStats:
    examples: int = 0
    tokens: int = 0
    truncated: int = 0
    by_label: dict = field(default_factory=dict)


def label_targets(task, example: dict, source: str, labelled: bool = True) -> tuple[int, list[float]]:
    """(class index, soft target): the index for classification (-1 unlabelled or regression) and, for regression,
    [1 - t, t] with t = (y - lb) / (ub - lb)."""
    label, target = -1, [0.0] * len(task.labels)
    if not labelled:
        return label, target
    if example.get("label") is None:
        raise DataError(f"{source}: example {example.get('idx')} has no label")
    if task.is_regression:
        t = soft_target(task, float(example["label"]))
        return label, [1.0 - t, t]
    return task.labels.index(canonical_label(example["label"])), target


def build_rows(tokenizer, task, examples: list[dict], *, kind: str, form: str, max_length: int, label_tokens: str,
               causal_scoring: str, source: str, labelled: bool = True):
    """Dataset rows (input_ids, position, candidates, label, soft_target) and stats."""
    rows, stats = [], PromptStats()
    for example in examples:
        enc = encode_example(tokenizer, task, example, kind=kind, form=form, max_length=max_length,
                             label_tokens=label_tokens, causal_scoring=causal_scoring)
        label, target = label_targets(task, example, source, labelled)
        if label >= 0:
            stats.by_label[task.labels[label]] = stats.by_label.get(task.labels[label], 0) + 1
        rows.append({"input_ids": enc.input_ids, "position": enc.position, "candidates": enc.candidates,
                     "label": label, "soft_target": target})
        stats.examples += 1
        stats.tokens += len(enc.input_ids)
        stats.truncated += int(enc.truncated)
    if not rows:
        raise DataError(f"{source}: no examples")
    return rows, stats


@dataclass
class PromptCollator:
    """Right-pads inputs; keeps the per-example candidates; ``loss_normalizer`` = examples in the batch."""

    pad_token_id: int

    def __call__(self, features: list[dict]) -> dict:
        longest = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), longest), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(features), longest), dtype=torch.long)
        for row, f in enumerate(features):
            ids[row, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
            mask[row, : len(f["input_ids"])] = 1
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "position": torch.tensor([f["position"] for f in features]),
            "candidates": [f["candidates"] for f in features],  # ragged: stays a list
            "label": torch.tensor([f["label"] for f in features]),
            "soft_target": torch.tensor([f["soft_target"] for f in features], dtype=torch.float32),
            "loss_normalizer": torch.tensor(float(len(features))),
        }


def _single_position(candidates) -> bool:
    return all(len(c) == 1 for cands in candidates for c in cands)


def candidate_scores(model, batch: dict, kind: str) -> torch.Tensor:
    """(B, C) label scores s_c (logits on the fast path, summed log-probabilities otherwise)."""
    ids, mask, cands = batch["input_ids"], batch["attention_mask"], batch["candidates"]
    device = ids.device
    if _single_position(cands):
        table = torch.tensor([[c[0] for c in row] for row in cands], device=device)  # (B, C)
        rows, where = torch.unique(table, return_inverse=True)
        inputs = {"input_ids": ids, "attention_mask": mask}
        positions = batch["position"].to(device)
        if kind == "seq2seq":
            start = _decoder_start(model)
            inputs["decoder_input_ids"] = torch.full((ids.shape[0], 1), start, dtype=torch.long, device=device)
        if kind != "masked":
            inputs["use_cache"] = False
        logits = head_logits(model, inputs, torch.arange(ids.shape[0], device=device), positions, rows)
        return logits.float().gather(1, where)
    if kind == "masked":
        raise ConfigError("masked LMs score one token per label (label_tokens=first)")
    return summed_logprobs(model, batch, kind)


def _decoder_start(model) -> int:
    config = model.config
    start = getattr(config, "decoder_start_token_id", None)
    return int(start if start is not None else config.pad_token_id)


def summed_logprobs(model, batch: dict, kind: str) -> torch.Tensor:
    """log p(candidate | input) for every (example, candidate), one sequence per pair, head rows only where a
    candidate token is predicted."""
    ids, mask, cands = batch["input_ids"], batch["attention_mask"], batch["candidates"]
    device, lengths = ids.device, mask.sum(-1).tolist()
    pairs = [(b, c) for b in range(len(cands)) for c in range(len(cands[b]))]
    targets = [cands[b][c] for b, c in pairs]
    if kind == "seq2seq":
        start = _decoder_start(model)
        width = max(len(t) for t in targets)
        dec = torch.full((len(pairs), width), start, dtype=torch.long, device=device)
        for i, t in enumerate(targets):
            dec[i, 1: len(t)] = torch.tensor(t[:-1], device=device)
        index = torch.tensor([b for b, _ in pairs], device=device)
        inputs = {"input_ids": ids[index], "attention_mask": mask[index], "decoder_input_ids": dec, "use_cache": False}
        starts = [0] * len(pairs)
    else:
        seqs = [ids[b, : lengths[b]].tolist() + t[:-1] for (b, _), t in zip(pairs, targets)]
        width = max(len(s) for s in seqs)
        seq_ids = torch.full((len(seqs), width), 0, dtype=torch.long, device=device)
        seq_mask = torch.zeros((len(seqs), width), dtype=torch.long, device=device)
        for i, s in enumerate(seqs):
            seq_ids[i, : len(s)] = torch.tensor(s, device=device)
            seq_mask[i, : len(s)] = 1
        inputs = {"input_ids": seq_ids, "attention_mask": seq_mask, "use_cache": False}
        starts = [lengths[b] - 1 for b, _ in pairs]
    row_index = torch.tensor([i for i, t in enumerate(targets) for _ in t], device=device)
    positions = torch.tensor([s + j for s, t in zip(starts, targets) for j in range(len(t))], device=device)
    token = torch.tensor([x for t in targets for x in t], device=device)
    logp = F.log_softmax(head_logits(model, inputs, row_index, positions).float(), dim=-1)
    picked = logp.gather(1, token[:, None]).squeeze(1)
    per_pair = torch.zeros(len(pairs), device=device, dtype=picked.dtype).index_add(0, row_index, picked)
    out = torch.zeros(len(cands), max(len(c) for c in cands), device=device, dtype=picked.dtype)
    for i, (b, c) in enumerate(pairs):
        out[b, c] = per_pair[i]
    return out


def example_losses(scores: torch.Tensor, batch: dict, regression: bool) -> torch.Tensor:
    """Per-example loss: cross-entropy over the labels, or KL(soft target || p) for regression (STS-B)."""
    logp = F.log_softmax(scores, dim=-1)
    if regression:
        target = batch["soft_target"].to(logp.device)
        return (torch.xlogy(target, target) - target * logp).sum(-1)
    return F.nll_loss(logp, batch["label"].to(logp.device), reduction="none")
