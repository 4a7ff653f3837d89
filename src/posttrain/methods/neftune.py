"""NEFTune: noisy input embeddings during instruction tuning (Jain et al., ICLR 2024), a baseline of the IM paper
(Shi et al., NeurIPS 2024, Tables 1 and 4).

During training only, the input token embeddings X (L x d for an example of L tokens) become

    X' = X + (alpha / sqrt(L * d)) * eps,        eps ~ Uniform(-1, 1)^(L x d)

so the noise's expected norm stays constant whatever the sequence length. Evaluation and generation see X.

What "L" is for a padded batch (``train.neftune_length``):
- ``real_tokens`` (default): each example's own number of real tokens (its attention mask; in a packed row, the
  length of the example a token belongs to). This is the formula per example, and what the IM reference code
  computes, since it trains with one example per micro-batch (no padding).
- ``padded``: the batch's padded length for every row, as transformers' Trainer (``neftune_noise_alpha``) and TRL
  do: shorter examples then get less noise than the formula, and the noise depends on the batch composition.

Implemented as two hooks rather than the Trainer's built-in option because of the ``real_tokens`` choice: a
forward pre-hook on the transformers model records the batch's attention mask / position ids, and a forward
hook on the input embedding adds the noise when the embedding module is in training mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..losses import _unwrap


@dataclass
class NEFTuneHooks:
    alpha: float
    length: str = "real_tokens"
    handles: list = field(default_factory=list)
    last_batch: dict = field(default_factory=dict)  # attention_mask / position_ids of the running forward

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def example_lengths(shape: tuple[int, int], attention_mask: torch.Tensor | None,
                    position_ids: torch.Tensor | None, length: str) -> torch.Tensor:
    """(B, T) float tensor: the L of each token's example (0 at padding, which gets no noise)."""
    batch, seq = shape
    if length == "real_tokens" and attention_mask is not None and attention_mask.shape == (batch, seq):
        real = attention_mask.to(torch.float32)
        return real.sum(dim=1, keepdim=True) * real
    if length == "real_tokens" and position_ids is not None and position_ids.shape == (batch, seq):
        starts = (position_ids == 0).long()  # packed rows: an example starts where the position restarts
        segment = torch.cumsum(starts, dim=1)  # 1-based example index within the row
        out = torch.zeros(batch, seq)
        for row in range(batch):
            sizes = torch.bincount(segment[row]).to(torch.float32)
            out[row] = sizes[segment[row]]
        return out.to(position_ids.device)
    return torch.full((batch, seq), float(seq))


def noise_scale(lengths: torch.Tensor, alpha: float, hidden_size: int) -> torch.Tensor:
    """alpha / sqrt(L * d) per token (0 where L = 0)."""
    scale = alpha / torch.sqrt(lengths.clamp(min=1.0) * hidden_size)
    return torch.where(lengths > 0, scale, torch.zeros_like(scale))


def attach(model: nn.Module, alpha: float, length: str = "real_tokens") -> NEFTuneHooks:
    """Add NEFTune noise to ``model``'s input embeddings in training mode; returns the hooks (``.remove()``)."""
    hooks = NEFTuneHooks(alpha=alpha, length=length)
    inner = _unwrap(model)
    embedding = inner.get_input_embeddings()

    def record(_module, args, kwargs):
        hooks.last_batch = {"attention_mask": kwargs.get("attention_mask"),
                            "position_ids": kwargs.get("position_ids")}

    def add_noise(module, _inputs, output):
        if not module.training or hooks.alpha <= 0:
            return output
        batch = hooks.last_batch
        lengths = example_lengths(tuple(output.shape[:2]), batch.get("attention_mask"), batch.get("position_ids"),
                                  hooks.length).to(output.device)
        scale = noise_scale(lengths, hooks.alpha, output.shape[-1]).to(output.dtype)
        noise = torch.empty_like(output).uniform_(-1.0, 1.0)
        return output + noise * scale[..., None]

    hooks.handles.append(inner.register_forward_pre_hook(record, with_kwargs=True))
    hooks.handles.append(embedding.register_forward_hook(add_noise))
    return hooks


def expected_bound(seq_len: int, alpha: float, hidden_size: int) -> float:
    """The padded-length bound alpha / sqrt(T * d) (transformers' and TRL's scale), for docs and tests."""
    return alpha / math.sqrt(seq_len * hidden_size)


def describe(cfg) -> dict:
    return {"neftune_alpha": cfg.train.neftune_alpha, "neftune_length": cfg.train.neftune_length,
            "formula": "X + alpha/sqrt(L*d) * U(-1,1), training only"}
