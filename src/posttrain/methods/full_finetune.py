"""Full fine-tuning: every parameter of the model trains (the IM paper's setting). Nothing to wrap."""

from __future__ import annotations

from ..config import RunConfig


def apply(model, cfg: RunConfig, tokenizer=None):
    for param in model.parameters():
        param.requires_grad_(True)
    return model
