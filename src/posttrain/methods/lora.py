"""LoRA (Hu et al. 2021, arXiv:2106.09685) from PEFT, as a trainable-parameter choice.

W' = W + (alpha / r) * B A with A in R^{r x k}, B in R^{d x r} = 0 at init; only A and B train.
posttrain adds nothing to PEFT's implementation: this file only maps ``AdapterConfig`` onto ``peft.LoraConfig``.
"""

from __future__ import annotations

from ..config import RunConfig
from ..errors import ConfigError


def apply(model, cfg: RunConfig, tokenizer=None):
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


def describe(cfg: RunConfig) -> dict:
    a = cfg.adapter
    return {"r": a.lora_r, "alpha": a.lora_alpha, "dropout": a.lora_dropout, "target_modules": list(a.lora_target_modules)}
