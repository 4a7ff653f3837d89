"""What kind of model a transformers model is, decided from its config and classes, never from its name.

posttrain meets architectures it has never seen, so every method asks this module instead of a list of names:

- ``model_kind``: ``seq2seq`` (an encoder-decoder: T5, BART), ``causal`` (decoder-only: Llama, GPT-2, ...) or
  ``encoder`` (bidirectional: BERT, RoBERTa, DeBERTa, with a masked-LM or classification head);
- ``wrapper_chain``: the model and every wrapper around it (DDP/FSDP ``module``, PEFT and posttrain's soft-prompt
  ``get_base_model``), so a question about the architecture reaches the transformers model inside;
- ``classification_head_names``: the head modules a sequence-classification model creates afresh.
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
