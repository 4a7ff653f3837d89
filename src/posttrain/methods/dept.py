"""DePT: decomposed prompt tuning (Shi & Lipani, ICLR 2024, arXiv:2309.05173).

DePT shortens prompt tuning's soft prompt and adds a low-rank, *position-wise* update of the frozen input
embeddings E in R^{s x d}:

    E' = E + (alpha / sqrt(r)) * A B,    A in R^{s x r} (Kaiming-uniform),  B in R^{r x d} (zeros),
    input = [P ; E'],                     trainable: P, A, B  (m*d + s*r + r*d parameters),

with two learning rates (P at ``adapter.prompt_learning_rate``, A and B at ``adapter.offset_learning_rate``). With
B = 0 at step 0, DePT(m, r) starts as prompt tuning with m tokens. The forward pass is ``methods/soft_prompt.py``'s
wrapper (the offset goes on the encoder input of seq2seq models, the paper's T5 setting); this file holds DePT's
checks, its parameter budget (``posttrain dept-budget``) and its run metadata.
"""

from __future__ import annotations

import math

from ..errors import ConfigError
from ..registry import Method
from . import soft_prompt, soft_prompt_io


def budget_rank(prompt_length: int, m: int, s: int, d: int) -> int:
    """Largest r with m*d + s*r + r*d <= L*d (the DePT paper's equal-budget pairs: L=100, s=256, d=768 gives
    (m, r) = (60, 30), (40, 45); s=512 gives (60, 24))."""
    if not 0 <= m <= prompt_length:
        raise ConfigError(f"dept budget: m={m} must be between 0 and the prompt-tuning length {prompt_length}")
    return ((prompt_length - m) * d) // (s + d)


def trainable_count(m: int, r: int, s: int, d: int) -> int:
    return m * d + (s * r + r * d if r else 0)


def budget_table(prompt_length: int, s: int, d: int, prompt_lengths: list[int] | None = None) -> list[dict]:
    """Rows (m, r, parameters, share of PT's budget) for DePT configurations matching PT(prompt_length)."""
    ms = prompt_lengths if prompt_lengths is not None else list(range(prompt_length, -1, -max(1, prompt_length // 5)))
    budget = prompt_length * d
    rows = []
    for m in ms:
        r = budget_rank(prompt_length, m, s, d)
        n = trainable_count(m, r, s, d)
        rows.append({"m": m, "r": r, "s": s, "d": d, "parameters": n, "budget": budget, "ratio": n / budget})
    return rows


def _validate(cfg) -> None:
    a, data = cfg.adapter, cfg.data
    if a.dept_rank < 1:
        raise ConfigError("adapter.dept_rank: must be >= 1 for dept (r = 0 is prompt_tuning)")
    if a.dept_max_length and a.dept_max_length < data.max_length:
        raise ConfigError(f"adapter.dept_max_length: s={a.dept_max_length} is shorter than data.max_length="
                          f"{data.max_length}; inputs can have more tokens than the offset has rows")
    if a.offset_positions == "absolute" and data.padding_side == "left" and not data.pad_to_max_length:
        raise ConfigError("adapter.offset_positions: absolute offsets with left padding need "
                          "data.pad_to_max_length=true (otherwise a token's offset row depends on the batch)")


def _describe(cfg) -> dict:
    a = cfg.adapter
    return {**soft_prompt.describe_prompt(cfg), "rank": a.dept_rank,
            "offset_length": a.dept_max_length or cfg.data.max_length, "alpha": a.dept_alpha,
            "scale": a.dept_alpha / math.sqrt(a.dept_rank), "offset_positions": a.offset_positions,
            "offset_learning_rate": a.offset_learning_rate}


def _fits_model(cfg, config) -> None:
    """A rank above min(s, d) is no longer a low-rank offset (and only adds parameters)."""
    width = getattr(config, "hidden_size", None) or getattr(config, "d_model", None)
    s = cfg.adapter.dept_max_length or cfg.data.max_length
    if width and cfg.adapter.dept_rank > min(s, width):
        raise ConfigError(f"adapter.dept_rank: {cfg.adapter.dept_rank} exceeds min(s={s}, d={width}), where the "
                          f"offset A B is no longer low-rank; use a rank <= {min(s, width)}")


METHOD = Method(
    name="dept",
    summary="DePT: a shorter soft prompt + a low-rank position-wise offset of the input embeddings, two learning "
            "rates (Shi & Lipani, ICLR 2024)",
    settings=("num_virtual_tokens", "prompt_init", "prompt_init_text", "prompt_learning_rate", "dept_rank",
              "dept_max_length", "dept_alpha", "offset_positions", "offset_learning_rate"),
    wrap=lambda model, cfg, tokenizer: soft_prompt.wrap(model, cfg, tokenizer, rank=cfg.adapter.dept_rank),
    weights_file=soft_prompt_io.CONFIG_NAME,
    restore=soft_prompt.restore,
    feeds_embeddings=True,
    fits_model=_fits_model,
    validate=_validate,
    optimizer_groups=soft_prompt.optimizer_groups,
    describe=_describe,
)
