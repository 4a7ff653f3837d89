"""Full fine-tuning: every parameter of the model trains (the IM paper's setting). Nothing to wrap."""

from __future__ import annotations

from dataclasses import replace

from ..models import load_model_and_tokenizer
from ..registry import Method


def _wrap(model, cfg, tokenizer=None):
    for param in model.parameters():
        param.requires_grad_(True)
    return model


def _restore(final_dir, model_cfg, for_training: bool, num_labels: int | None):
    """A finished full fine-tune's ``final/`` is a complete model directory."""
    return load_model_and_tokenizer(replace(model_cfg, name_or_path=str(final_dir), gguf_file=None),
                                    for_training=for_training, num_labels=num_labels)


METHOD = Method(
    name="full",
    summary="full fine-tuning: every parameter trains",
    settings=(),
    wrap=_wrap,
    restore=_restore,
    kl_reference="frozen_copy",
    noisy_embeddings=True,
    trains_embedding_rows=True,
    packing=True,
)
