"""LoRA (Hu et al. 2021, arXiv:2106.09685) from PEFT, as a trainable-parameter choice.

W' = W + (alpha / r) * B A with A in R^{r x k}, B in R^{d x r} = 0 at init; only A and B train.
posttrain adds nothing to PEFT's implementation: this file maps the ``adapter.lora_*`` keys onto
``peft.LoraConfig`` and chooses, from the model's family (``models.families``), what PEFT needs to know:

- the task type: ``SEQ_CLS`` for a sequence-classification head, ``SEQ_2_SEQ_LM`` / ``CAUSAL_LM`` for generative
  LMs, none (a plain ``PeftModel``) for a masked-LM encoder, which has no ``prepare_inputs_for_generation`` for
  ``PeftModelForCausalLM`` to call;
- ``modules_to_save``: every module a classification head creates afresh (``classification_head_names``: the
  classifier or score, DistilBERT's pre_classifier, BERT's and DeBERTa's pooler), trained in full and saved with
  the adapter, so a reload does not draw them at random again;
- the target modules: the schema's default list (Llama's attention and MLP projections) is kept where the model has
  all of those names; anywhere else it would silently wrap a fraction of the layers (q/k/v on BART, o_proj and
  down_proj on Phi-3), so it becomes PEFT's ``all-linear``: every linear layer except the output head. A list the
  user wrote is taken as written. The names actually wrapped are left on the model as ``posttrain_lora_targets``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..config.schema import LoraSettings
from ..errors import ConfigError, ModelLoadError
from ..io_utils import safetensors_damage
from ..models import load_model_and_tokenizer
from ..models.families import classification_head_names, is_sequence_classifier, model_kind
from ..registry import Method

PEFT_SEQ_CLS_HEADS = ("classifier", "score")  # what PeftModelForSequenceClassification always saves
DEFAULT_TARGETS = next(f for f in dataclasses.fields(LoraSettings) if f.name == "lora_target_modules").default_factory()


def task_type(model):
    """PEFT's task type for ``model``, from its family and head; None for a masked-LM (or headless) encoder."""
    from peft import TaskType

    if is_sequence_classifier(model):
        return TaskType.SEQ_CLS
    if not hasattr(model, "prepare_inputs_for_generation"):  # PEFT's LM wrappers call it; an MLM has none
        return None
    return {"seq2seq": TaskType.SEQ_2_SEQ_LM, "causal": TaskType.CAUSAL_LM}.get(model_kind(model))


def resolve_targets(model, configured) -> str | list[str]:
    """``adapter.lora_target_modules`` for ``model``: 'all-linear', the user's own list (checked to name at least one
    module), or for the schema's default list, the list itself where ``model`` has every name in it, else
    'all-linear' (a partial match would wrap only some of the attention and MLP projections)."""
    configured = list(configured)
    if configured == ["all-linear"]:
        return "all-linear"
    names = {name.split(".")[-1] for name, _ in model.named_modules()}
    if configured == DEFAULT_TARGETS:
        return configured if names.issuperset(configured) else "all-linear"
    if not names.intersection(configured):
        raise ConfigError(
            f"adapter.lora_target_modules: none of {configured} is a module of {type(model).__name__}; "
            f"e.g. {sorted(n for n in names if n.endswith('proj'))[:8]} (or ['all-linear'])"
        )
    return configured


def wrapped_targets(peft_model) -> list[str]:
    """The module names (last component) that carry a LoRA layer in ``peft_model``: what was actually wrapped."""
    from peft.tuners.lora import LoraLayer

    return sorted({name.split(".")[-1] for name, m in peft_model.named_modules() if isinstance(m, LoraLayer)})


def _wrap(model, cfg, tokenizer=None):
    from peft import LoraConfig, TaskType, get_peft_model

    adapter = cfg.adapter
    heads, kind = classification_head_names(model), task_type(model)
    # PEFT's SEQ_CLS model adds "classifier" and "score" to modules_to_save itself; the rest of a new head is ours
    extra = [h for h in heads if kind != TaskType.SEQ_CLS or h not in PEFT_SEQ_CLS_HEADS]
    lora = LoraConfig(
        task_type=kind, r=adapter.lora_r, lora_alpha=adapter.lora_alpha, lora_dropout=adapter.lora_dropout,
        target_modules=resolve_targets(model, adapter.lora_target_modules), modules_to_save=extra or None,
    )
    wrapped = get_peft_model(model, lora)
    wrapped.posttrain_lora_targets = wrapped_targets(wrapped)
    wrapped.posttrain_lora_modules_to_save = heads
    return wrapped


def _restore(final_dir, model_cfg, for_training: bool, num_labels: int | None):
    """A finished LoRA run's ``final/`` is a PEFT adapter, loaded onto the run's base model."""
    from peft import PeftModel

    for weights in sorted(Path(final_dir).glob("*.safetensors")):
        reason = safetensors_damage(weights)
        if reason:
            raise ModelLoadError(f"{weights}: damaged adapter file, {reason}")
    model, tokenizer = load_model_and_tokenizer(model_cfg, for_training=for_training, num_labels=num_labels)
    restored = PeftModel.from_pretrained(model, str(final_dir)).train(for_training)
    restored.posttrain_lora_targets = wrapped_targets(restored)
    return restored, tokenizer


def _describe(cfg) -> dict:
    """The configured settings; the resolved targets depend on the model (``posttrain_lora_targets`` on it)."""
    a = cfg.adapter
    return {"r": a.lora_r, "alpha": a.lora_alpha, "dropout": a.lora_dropout, "target_modules": list(a.lora_target_modules)}


def _resolved(model) -> dict:
    """The modules LoRA wrapped and the head modules trained whole, as ``_wrap`` left them on the model."""
    from ..models.families import wrapper_chain

    peft_model = next((m for m in wrapper_chain(model) if hasattr(m, "posttrain_lora_targets")), None)
    if peft_model is None:
        return {}
    return {"resolved_target_modules": list(peft_model.posttrain_lora_targets),
            "modules_to_save": list(getattr(peft_model, "posttrain_lora_modules_to_save", None) or [])}


METHOD = Method(
    name="lora",
    summary="LoRA: a low-rank update B A of chosen weight matrices, from PEFT (Hu et al. 2021)",
    settings=("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules"),
    wrap=_wrap,
    weights_file="adapter_config.json",
    restore=_restore,
    describe=_describe,
    resolved=_resolved,
    kl_reference="adapter_disabled",
    noisy_embeddings=True,
    packing=True,
)
