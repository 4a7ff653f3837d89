"""What kind of model a transformers model is, decided from its config and classes, never from its name.

posttrain meets architectures it has never seen, so every method asks this module instead of a list of names:

- ``model_kind``: ``seq2seq`` (an encoder-decoder: T5, BART), ``causal`` (decoder-only: Llama, GPT-2, ...) or
  ``encoder`` (bidirectional: BERT, RoBERTa, DeBERTa, with a masked-LM or classification head);
- ``wrapper_chain``: the model and every wrapper around it (DDP/FSDP ``module``, PEFT and posttrain's soft-prompt
  ``get_base_model``), so a question about the architecture reaches the transformers model inside;
- ``is_sequence_classifier`` and ``classification_head_names``: whether a model has a sequence-classification head,
  and the modules that head creates afresh (to train and save with any adapter);
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
    """'seq2seq', 'causal' or 'encoder', from the transformers model class and config (inside any DDP, PEFT or
    soft-prompt wrapper). A class that is neither a causal LM nor an encoder-decoder is an encoder only if its config
    is one (``_is_encoder_config``): a decoder-only model with another head (``LlamaForSequenceClassification``)
    stays causal, as ``config_kind`` says, so its positions and padding are handled as a decoder's."""
    model = wrapper_chain(model)[-1]
    if getattr(model.config, "is_encoder_decoder", False):
        return "seq2seq"
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    if type(model).__name__ in causal or type(model).__name__.endswith("ForCausalLM"):
        return "causal"
    return "encoder" if _is_encoder_config(model.config) else "causal"


def is_sequence_classifier(model: nn.Module) -> bool:
    """Whether the transformers model inside any wrapper has a sequence-classification head."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    name = type(wrapper_chain(model)[-1]).__name__
    return name.endswith("ForSequenceClassification") or name in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.values()


def classification_head_names(model: nn.Module) -> list[str]:
    """Dotted names (relative to the transformers model inside any wrapper) of every module a sequence-classification
    model creates afresh on top of a base or masked-LM checkpoint, else [].

    They are what the classification class adds beside its base model (``model.base_model``): the classifier or
    score, and DistilBERT's ``pre_classifier`` or DeBERTa's ``pooler`` beside it; plus a ``pooler`` inside the base
    model (BERT's ``bert.pooler``), which a masked-LM checkpoint does not have. All of them must train and be saved
    with the adapter, or every reload draws them at random again. Decided from the modules, never the model name.
    """
    model = wrapper_chain(model)[-1]
    if not is_sequence_classifier(model):
        return []
    base = getattr(model, "base_model", model)
    if base is model:  # no base model to tell the head from: the usual head names
        return [name for name in ("classifier", "score") if isinstance(getattr(model, name, None), nn.Module)]
    prefix = next((name for name, child in model.named_children() if child is base), None)
    names = []
    pooler = getattr(base, "pooler", None)
    if prefix is not None and isinstance(pooler, nn.Module) and any(True for _ in pooler.parameters()):
        names.append(f"{prefix}.pooler")
    names += [name for name, child in model.named_children()
              if child is not base and any(True for _ in child.parameters())]
    return names


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
