"""One module per method, composed by the engine through these tables (no ``if method == ...`` in shared code).

- ``ADAPTERS[adapter.type](model, cfg, tokenizer)`` makes a model trainable (and wraps it where needed);
- ``OPTIMIZER_GROUPS[adapter.type](model, cfg)`` gives parameter groups with their own learning rates, for the
  methods that need them (DePT's two learning rates); absent = the Trainer's default groups at train.learning_rate.
"""

from . import full_finetune, lora, soft_prompt

ADAPTERS = {
    "full": full_finetune.apply,
    "lora": lora.apply,
    "prompt_tuning": soft_prompt.apply,
    "dept": soft_prompt.apply,
}

OPTIMIZER_GROUPS = {
    "prompt_tuning": soft_prompt.optimizer_groups,
    "dept": soft_prompt.optimizer_groups,
}

DESCRIBE = {
    "lora": lora.describe,
    "prompt_tuning": soft_prompt.describe,
    "dept": soft_prompt.describe,
}
