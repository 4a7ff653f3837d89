"""One batch of generation, as each model family needs it (used by ``generation``, the engine's evaluation samples and
``generate-set``)."""

from __future__ import annotations

import torch

from .families import model_kind


@torch.no_grad()
def generate_batch(model, tokenizer, texts: list[str], *, max_new_tokens: int = 128, temperature: float = 0.0,
                   top_p: float = 1.0) -> list[str]:
    """Answers to already rendered prompt texts, generated as one left-padded batch (the caller seeds sampling).

    An encoder-decoder reads each prompt with its special tokens, as in training (``data.seq2seq``), and returns
    only the decoder's tokens; a decoder-only model continues the prompt, whose tokens are cut off."""
    seq2seq = model_kind(model) == "seq2seq"
    old_side = tokenizer.padding_side
    # a decoder continues from the right edge; an encoder reads right-padded input (BART's learned positions)
    tokenizer.padding_side = "right" if seq2seq else "left"
    try:
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=seq2seq)
        enc = {k: v.to(model.device) for k, v in enc.items()}
        kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        out = model.generate(**enc, **kwargs)
        new = out if seq2seq else out[:, enc["input_ids"].shape[1] :]
        return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in new]
    finally:
        tokenizer.padding_side = old_side
