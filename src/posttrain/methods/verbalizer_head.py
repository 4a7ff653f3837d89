"""Label-word scores from an LM head, computing only the logits a verbalizer needs.

Prompt-based fine-tuning (LM-BFF, Gao et al., ACL 2021; PCP, Shi & Lipani, NeurIPS 2023) classifies by reading the
LM head at the label slot: for label c with word token v_c and the hidden state h at the slot,

    score_c = post(W h + b)[v_c],        p(c | x) = softmax_c(score_c)

so only one position per example is needed, not the (positions x vocabulary) logits a plain forward pass builds.
``head_logits`` gets exactly those: a forward *pre-hook* on the model's output embedding
(``get_output_embeddings()``: ``lm_head`` of Llama/T5, ``lm_head.decoder`` of RoBERTa, ``cls.predictions.decoder``
of BERT) replaces its input (the final hidden states, after any head transform such as RoBERTa's dense + layer
norm or T5's d^-1/2 scaling) by the N selected states, as N sequences of one position. The head and whatever the
model applies to its output (``post``) then run on N vectors instead of B x T: Gemma 2's final soft-cap
``cap * tanh(z / cap)``, Cohere's ``logit_scale``, Granite's ``logits_scaling``, BART's ``final_logits_bias``, the
transform-dense-then-tied-embedding head of DeBERTa-v2 (whose "output embedding" is the dense layer). Reading
``W[rows]`` directly would skip all of these, so the model's own path is kept, read from no list of model
attributes; the label rows are picked from the (N, V) result, a cost of N x V x d next to the B x T x V of a full
forward. The result equals the full forward's logits at those positions and rows (tested), for any model family,
through PEFT LoRA, DDP and posttrain's soft-prompt/DePT wrapper (whose virtual tokens shift the positions of
decoder-only and encoder inputs; seq2seq prompts sit on the encoder side and leave decoder positions alone).

FSDP2: the head runs inside the model's forward, so its parameters are gathered by whichever unit holds it
(tested on 2 CPU processes with the head in the root unit, the ``fsdp`` preset's layout).
"""

from __future__ import annotations

import contextlib

import torch
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
    """Within the block, the LM head computes nothing; ``box['hidden']`` receives its (B, T, d) input (for callers
    that want the final hidden states alone; the model's logit post-processing is not applied to anything)."""
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
    for seq2seq models the positions index the decoder. The head's input becomes the N selected hidden states,
    shaped as N sequences of one position, and everything the model does from there on runs as in a full forward.
    """
    positions = positions + (0 if "decoder_input_ids" in inputs else virtual_offset(model))
    head = output_head(model)
    fired = []

    def hook(module, args):
        fired.append(True)
        return (args[0][batch_index, positions][:, None, :],) + tuple(args[1:])

    handle = head.register_forward_pre_hook(hook)
    try:
        out = model(**inputs)
    finally:
        handle.remove()
    logits = out[0] if isinstance(out, tuple) else out["logits"]
    if len(fired) != 1 or logits.shape[:2] != (len(positions), 1):
        raise ValueError(f"{type(model).__name__}: its output embedding ran {len(fired)} times and gave logits of "
                         f"shape {tuple(logits.shape)}; head_logits needs one head call per forward")
    logits = logits[:, 0]
    return logits if rows is None else logits[:, rows]
