"""Variable-length (padding-free) attention on any device: ``model.attn_implementation: posttrain_varlen``.

Padding-free batching (``train.packing``) concatenates a micro-batch's examples into one row whose position ids
restart at 0 for each example. With transformers' ``sdpa`` implementation that row gets a dense block-diagonal
(T x T) mask: attention costs grow with (sum of L_i)^2 and the mask itself is built at every forward, which cancels
what removing padding saves (measured in README, "Benchmarks"). FlashAttention's varlen kernels avoid this on GPUs;
this module does the same with plain PyTorch SDPA, so it works on CPUs too:

- the mask function (registered in transformers' ``AttentionMaskInterface``) builds no mask when there is no
  padding (a packed row, or an unpadded batch), and transformers' SDPA mask otherwise;
- the attention function (registered in ``AttentionInterface``) splits a packed row at its position restarts and
  runs causal SDPA on each example's span: cost sum of L_i^2, no mask. Everything else (padded batches,
  generation with a cache) goes to transformers' own SDPA function unchanged.

The result equals running each example on its own (tests/test_attention.py), as ``sdpa`` with the block mask does.

``model.attn_implementation: auto`` is decided from the model class's declared support (``choose``), before any
weight loads: not every class runs SDPA (Gemma 2, DeBERTa-v2), so asking for it would fail the load.
"""

from __future__ import annotations

import torch

NAME = "posttrain_varlen"


def segment_bounds(position_ids: torch.Tensor) -> list[list[tuple[int, int]]]:
    """Per row, the (start, end) spans of the packed examples: an example starts where positions do not go +1."""
    restarts = torch.ones_like(position_ids, dtype=torch.bool)
    restarts[:, 1:] = position_ids[:, 1:] != position_ids[:, :-1] + 1
    bounds = []
    for row in restarts.cpu():
        starts = row.nonzero().flatten().tolist()
        bounds.append(list(zip(starts, starts[1:] + [len(row)])))
    return bounds


def varlen_mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None, attention_mask=None,
                **kwargs):
    """No mask without padding (the attention function handles packed rows); SDPA's mask otherwise."""
    from transformers.masking_utils import causal_mask_function, sdpa_mask

    no_padding = attention_mask is None or (attention_mask.shape[-1] == kv_length and bool(attention_mask.all()))
    if no_padding and q_offset == 0 and q_length == kv_length:
        return None
    return sdpa_mask(batch_size, q_length, kv_length, q_offset, kv_offset, mask_function or causal_mask_function,
                     attention_mask, **kwargs)


def varlen_attention(module, query, key, value, attention_mask, **kwargs):
    """Causal SDPA per packed example when the row is packed; transformers' SDPA otherwise. Returns (B, T, H, D)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    position_ids = kwargs.get("position_ids")
    q_len = query.shape[2]
    if attention_mask is not None or position_ids is None or q_len <= 1 or key.shape[2] != q_len \
            or position_ids.shape[-1] != q_len:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    bounds = segment_bounds(position_ids.expand(query.shape[0], -1))
    if all(len(spans) == 1 for spans in bounds):  # nothing packed: one causal SDPA call for the whole batch
        return sdpa_attention_forward(module, query, key, value, None, **kwargs)
    rest = {k: v for k, v in kwargs.items() if k not in ("is_causal", "position_ids")}
    rows = []
    for b, spans in enumerate(bounds):
        parts = [sdpa_attention_forward(module, query[b:b + 1, :, s:e], key[b:b + 1, :, s:e], value[b:b + 1, :, s:e],
                                        None, is_causal=True, **rest)[0] for s, e in spans]
        rows.append(torch.cat(parts, dim=1))
    return torch.cat(rows, dim=0), None


def supported(model_class, causal: bool = True) -> list[str]:
    """The attention implementations ``model_class`` can run, from the class's own ``_supports_*`` flags (what
    transformers checks when it loads): eager always; sdpa, flash_attention_2/3 and flex_attention where declared;
    this module's attention for causal classes that run SDPA and dispatch through ``AttentionInterface``
    (``_supports_attention_backend``; a class without it would silently ignore the registered function)."""
    names = ["eager"]
    if getattr(model_class, "_supports_sdpa", False):
        names.append("sdpa")
        if causal and getattr(model_class, "_supports_attention_backend", False):
            names.append(NAME)
    if getattr(model_class, "_supports_flash_attn", False) or getattr(model_class, "_supports_flash_attn_2", False):
        names += ["flash_attention_2", "flash_attention_3"]
    if getattr(model_class, "_supports_flex_attn", False):
        names.append("flex_attention")
    return names


GATED = ("sdpa", NAME, "flash_attention_2", "flash_attention_3", "flex_attention")  # names a class must declare


def choose(requested: str | None, packed: bool, model_class=None, causal: bool = True) -> str | None:
    """The implementation to load. ``auto`` -> this module's attention for packed causal training (cost sum of
    L_i^2 and no T x T mask, where ``sdpa`` builds a dense block mask; README, "Benchmarks"), else ``sdpa``, each
    only where ``model_class`` supports it (``supported``), else ``eager`` (Gemma 2 refuses SDPA, which ignores its
    attention soft-capping; DeBERTa-v2 has no SDPA path). Without a class, this module's attention for packed
    batches, else sdpa; any other name is kept (``unsupported`` says whether the class can run it)."""
    if requested != "auto":
        return requested
    if model_class is None:
        return NAME if packed else "sdpa"
    names = supported(model_class, causal)
    if packed and NAME in names:
        return NAME
    return "sdpa" if "sdpa" in names else "eager"


def unsupported(name: str | None, model_class, causal: bool = True) -> list[str] | None:
    """None when ``model_class`` can run ``name`` (or the name is one transformers resolves itself: None, eager,
    a hub kernel, a registered function), else what the class supports."""
    if name not in GATED:
        return None
    names = supported(model_class, causal)
    return None if name in names else names


def register() -> str:
    """Make ``attn_implementation="posttrain_varlen"`` known to transformers (idempotent); returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, varlen_attention)
    AttentionMaskInterface.register(NAME, varlen_mask)
    return NAME
