"""Prompt tuning (Lester, Al-Rfou & Constant, EMNLP 2021, arXiv:2104.08691): the DePT paper's main baseline.

m trainable virtual-token embeddings P in R^{m x d} are prepended to the frozen model's input embeddings E:

    input = [P ; E],    trainable: P (m*d parameters; the classification head too, when the model has a new one)

The wrapper (``methods/soft_prompt.py``) puts P on the encoder side of seq2seq models and in front of the input of
decoder-only and encoder models; it is DePT with rank r = 0.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..registry import Method
from . import soft_prompt, soft_prompt_io


def _validate(cfg) -> None:
    if cfg.adapter.num_virtual_tokens < 1:
        raise ConfigError("adapter.num_virtual_tokens: must be >= 1 for prompt_tuning (>= 0 for dept)")


METHOD = Method(
    name="prompt_tuning",
    summary="prompt tuning: a trainable soft prompt in front of the frozen model's input (Lester et al. 2021)",
    settings=("num_virtual_tokens", "prompt_init", "prompt_init_text", "prompt_learning_rate"),
    wrap=lambda model, cfg, tokenizer: soft_prompt.wrap(model, cfg, tokenizer, rank=0),
    weights_file=soft_prompt_io.CONFIG_NAME,
    restore=soft_prompt.restore,
    feeds_embeddings=True,
    validate=_validate,
    optimizer_groups=soft_prompt.optimizer_groups,
    describe=soft_prompt.describe_prompt,
)
