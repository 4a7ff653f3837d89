"""Label-word scores from an LM head, computing only the logits a verbalizer needs.

Prompt-based fine-tuning (LM-BFF, Gao et al., ACL 2021; PCP, Shi & Lipani, NeurIPS 2023) classifies by reading the
LM head at the label slot: for label c with word token v_c and the hidden state h at the slot,

    score_c = (W h + b)[v_c],        p(c | x) = softmax_c(score_c)

so only C rows of W at one position per example are needed, not the (positions x vocabulary) logits a plain
forward pass builds. ``head_logits`` gets exactly those: a forward *pre-hook* on the model's output embedding
(``get_output_embeddings()``: ``lm_head`` of Llama/T5, ``lm_head.decoder`` of RoBERTa, ``cls.predictions.decoder``
of BERT) records its input (the final hidden states, after any head transform such as RoBERTa's dense + layer
norm or T5's d^-1/2 scaling) and hands the head an empty sequence, so the full logits are never computed; we then
apply ``F.linear(h[positions], W[rows], b[rows])``. The result equals the full forward's logits at those positions
and rows (tested), for any model family, through PEFT LoRA, DDP and posttrain's soft-prompt/DePT wrapper (whose
virtual tokens shift the positions of decoder-only and encoder inputs; seq2seq prompts sit on the encoder side and
leave decoder positions alone).

FSDP2: with the LM head in the root unit (the ``fsdp`` preset wraps decoder layers only), the root's parameters
are gathered from its forward to its backward, so ``W[rows]`` after the forward reads the whole matrix and its
gradient is reduce-scattered with the root's (tested on 2 CPU processes). A head wrapped as its own unit would be
resharded after its (empty) forward: keep it in the root.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from ..models.families import wrapper_chain


def output_head(model: nn.Module) -> nn.Module:
    """The output embedding (vocabulary projection) of the innermost transformers model."""
    for m in reversed(wrapper_chain(model)):
        getter = getattr(type(m), "get_output_embeddings", None)
        if getter is not None:
            head = m.get_output_embeddings()
            if head is not None:
                return head
    raise ValueError(f"{type(model).__name__} has no output embedding (LM head) to read label words from")


def virtual_offset(model: nn.Module) -> int:
    """Positions a soft-prompt wrapper prepends in front of the real tokens (0 for seq2seq and plain models)."""
    for m in wrapper_chain(model):
        shift = getattr(type(m), "real_token_offset", None)  # declared by soft-prompt wrappers only
        if shift is not None:
            return m.real_token_offset
    return 0


@contextlib.contextmanager
def captured_head_input(model: nn.Module):
    """Within the block, the LM head computes nothing; ``box['hidden']`` receives its (B, T, d) input."""
    head = output_head(model)
    box: dict = {}

    def hook(module, args):
        box["hidden"] = args[0]
        return (args[0][..., :0, :],) + tuple(args[1:])

    handle = head.register_forward_pre_hook(hook)
    try:
        yield box, head
    finally:
        handle.remove()


def head_logits(model: nn.Module, inputs: dict, batch_index: torch.Tensor, positions: torch.Tensor,
                rows: torch.Tensor | None = None) -> torch.Tensor:
    """(N, R) logits at (batch_index[i], positions[i]) of the real tokens for vocabulary ``rows`` (None = all).

    ``inputs`` are the model's keyword arguments (input_ids, attention_mask, decoder_input_ids, use_cache, ...);
    for seq2seq models the positions index the decoder.
    """
    with captured_head_input(model) as (box, head):
        model(**inputs)
    hidden = box["hidden"]
    positions = positions + (0 if "decoder_input_ids" in inputs else virtual_offset(model))
    selected = hidden[batch_index, positions]
    weight = head.weight if rows is None else head.weight[rows]
    bias = getattr(head, "bias", None)
    if bias is not None and rows is not None:
        bias = bias[rows]
    return F.linear(selected, weight, bias)
