"""LoRA (Hu et al. 2021, arXiv:2106.09685) from PEFT, as a trainable-parameter choice.

W' = W + (alpha / r) * B A with A in R^{r x k}, B in R^{d x r} = 0 at init; only A and B train.
posttrain adds nothing to PEFT's implementation: this file only maps the ``adapter.lora_*`` keys onto
``peft.LoraConfig``.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, ModelLoadError
from ..io_utils import safetensors_damage
from ..models import load_model_and_tokenizer
from ..registry import Method


def _wrap(model, cfg, tokenizer=None):
    from peft import LoraConfig, TaskType, get_peft_model

    adapter = cfg.adapter
    targets = adapter.lora_target_modules
    target = "all-linear" if targets == ["all-linear"] else list(targets)
    names = {name.split(".")[-1] for name, _ in model.named_modules()}
    if target != "all-linear" and not names.intersection(target):
        raise ConfigError(
            f"adapter.lora_target_modules: none of {target} is a module of {type(model).__name__}; "
            f"e.g. {sorted(n for n in names if n.endswith('proj'))[:8]}"
        )
    lora = LoraConfig(
        task_type=TaskType.CAUSAL_LM, r=adapter.lora_r, lora_alpha=adapter.lora_alpha,
        lora_dropout=adapter.lora_dropout, target_modules=target,
    )
    return get_peft_model(model, lora)


def _restore(final_dir, model_cfg, for_training: bool, num_labels: int | None):
    """A finished LoRA run's ``final/`` is a PEFT adapter, loaded onto the run's base model."""
    from peft import PeftModel

    for weights in sorted(Path(final_dir).glob("*.safetensors")):
        reason = safetensors_damage(weights)
        if reason:
            raise ModelLoadError(f"{weights}: damaged adapter file, {reason}")
    model, tokenizer = load_model_and_tokenizer(model_cfg, for_training=for_training, num_labels=num_labels)
    return PeftModel.from_pretrained(model, str(final_dir)).train(for_training), tokenizer


def _describe(cfg) -> dict:
    a = cfg.adapter
    return {"r": a.lora_r, "alpha": a.lora_alpha, "dropout": a.lora_dropout, "target_modules": list(a.lora_target_modules)}


METHOD = Method(
    name="lora",
    summary="LoRA: a low-rank update B A of chosen weight matrices, from PEFT (Hu et al. 2021)",
    settings=("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules"),
    wrap=_wrap,
    weights_file="adapter_config.json",
    restore=_restore,
    describe=_describe,
    kl_reference="adapter_disabled",
    noisy_embeddings=True,
    packing=True,
)
