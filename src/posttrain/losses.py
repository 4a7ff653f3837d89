"""Weighted next-token loss that computes LM-head logits only where a target is trained.

For a batch with targets y_t and weights w_t (weight of predicting token t from x_<t):

    S = sum_{t: w_t > 0} w_t * (-log softmax(W_head h_{t-1})[y_t])

``logits_to_keep`` (a boolean (batch, seq) mask, transformers >= 5) makes the model project only the hidden states
at the selected positions onto the vocabulary: for SmolLM2 the head is 576 x 49,152, so on masked instruction
tokens and padding nothing is spent, and the (tokens x vocab) logit tensor shrinks accordingly. Models whose
forward has no ``logits_to_keep`` fall back to full logits, then selection (same result).
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F


def _accepts_logits_to_keep(model) -> bool:
    inner = model
    for attr in ("module", "base_model", "model"):  # DDP / PEFT wrappers
        if not _has_param(inner, "logits_to_keep") and hasattr(inner, attr) and isinstance(getattr(inner, attr), torch.nn.Module):
            inner = getattr(inner, attr)
    return _has_param(inner, "logits_to_keep")


def _has_param(module, name: str) -> bool:
    try:
        return name in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


def target_positions(loss_weights: torch.Tensor) -> torch.Tensor:
    """Boolean (B, T) mask of positions whose hidden state predicts a trained next token."""
    keep = torch.zeros_like(loss_weights, dtype=torch.bool)
    keep[:, :-1] = loss_weights[:, 1:] > 0
    return keep


def token_nll(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-target NLL (N,) and weights (N,) for the trained targets of ``batch``, in row-major order."""
    weights = batch["loss_weights"]
    keep = target_positions(weights)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    targets = batch["labels"][:, 1:][keep[:, :-1]]
    target_weights = weights[:, 1:][keep[:, :-1]]
    if _accepts_logits_to_keep(model):
        logits = model(**inputs, logits_to_keep=keep, use_cache=False).logits
        logits = logits.reshape(-1, logits.shape[-1])
    else:
        logits = model(**inputs, use_cache=False).logits[keep]
    nll = F.cross_entropy(logits.float(), targets, reduction="none")
    return nll, target_weights


def weighted_nll_sum(model, batch: dict) -> torch.Tensor:
    nll, weights = token_nll(model, batch)
    return (nll * weights).sum()
