"""Full fine-tuning: every parameter of the model trains (the IM paper's setting). Nothing to wrap."""

from __future__ import annotations

from ..config import AdapterConfig


def apply(model, adapter: AdapterConfig):
    for param in model.parameters():
        param.requires_grad_(True)
    return model
