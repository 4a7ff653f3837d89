"""What kind of model a transformers model is, decided from its config and classes, never from its name.

posttrain meets architectures it has never seen, so every method asks this module instead of a list of names:

- ``model_kind``: ``seq2seq`` (an encoder-decoder: T5, BART), ``causal`` (decoder-only: Llama, GPT-2, ...) or
  ``encoder`` (bidirectional: BERT, RoBERTa, DeBERTa, with a masked-LM or classification head);
- ``wrapper_chain``: the model and every wrapper around it (DDP/FSDP ``module``, PEFT and posttrain's soft-prompt
  ``get_base_model``), so a question about the architecture reaches the transformers model inside;
- ``classification_head_names``: the head modules a sequence-classification model creates afresh;
- ``resolve_head`` and ``config_kind``: the same answers from the model's config alone, before any weight loads, so
  that a method or objective the family does not support is refused in seconds.
"""

from __future__ import annotations

from torch import nn


def wrapper_chain(model: nn.Module) -> list[nn.Module]:
    """The model and every wrapper inside it (DDP/FSDP ``module``, PEFT and soft-prompt ``get_base_model``)."""
    seen = []
    while model is not None and all(model is not m for m in seen):
        seen.append(model)
        inner = getattr(model, "module", None) if isinstance(getattr(model, "module", None), nn.Module) else None
        if inner is None and hasattr(type(model), "get_base_model"):
            inner = model.get_base_model()
        model = inner
    return seen


def model_kind(model: nn.Module) -> str:
    """'seq2seq', 'causal' or 'encoder', from the transformers model class (inside any DDP, PEFT or soft-prompt
    wrapper)."""
    model = wrapper_chain(model)[-1]
    if getattr(model.config, "is_encoder_decoder", False):
        return "seq2seq"
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    return "causal" if type(model).__name__ in causal or type(model).__name__.endswith("ForCausalLM") else "encoder"


def classification_head_names(model: nn.Module) -> list[str]:
    """Names of a sequence-classification model's head modules (trained with the prompt), else []."""
    if not type(model).__name__.endswith("ForSequenceClassification"):
        return []
    return [name for name in ("classifier", "score") if isinstance(getattr(model, name, None), nn.Module)]


def _is_encoder_config(config) -> bool:
    """A bidirectional encoder (BERT, RoBERTa, DeBERTa, ELECTRA, ...): its type has a masked-LM class and the config
    is not set up as a decoder. (BERT-like types also map to a causal class, used only with ``is_decoder``.)"""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False)


def resolve_head(head: str, config) -> str:
    """``auto`` -> seq2seq_lm for encoder-decoders, masked_lm for bidirectional encoders (BERT, RoBERTa, ...), else
    causal_lm. The checkpoint's ``architectures`` decide where they name a causal LM; other values pass through."""
    if head != "auto":
        return head
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq_lm"
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return "causal_lm"
    return "masked_lm" if _is_encoder_config(config) else "causal_lm"


def config_kind(config, head: str = "auto") -> str:
    """``model_kind`` of the model that ``head`` would load from ``config``, without loading it."""
    head = resolve_head(head, config)
    if head == "seq2seq_lm" or getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    if head == "masked_lm":
        return "encoder"
    if head == "sequence_classification":
        return "encoder" if _is_encoder_config(config) else "causal"
    return "causal"
