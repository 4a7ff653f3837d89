"""Load a base model or a trained run for inference, and generate chat-formatted answers.

A *model spec* is anything ``models.load_model_and_tokenizer`` accepts (``default``, a hub id, a directory, a
``.gguf`` file) or a posttrain run directory (holding ``config.yaml`` and ``final/``): a full fine-tune's
``final/`` is a complete model; a LoRA run's ``final/`` is a PEFT adapter loaded onto the run's base model; a
prompt-tuning/DePT run's ``final/`` is a soft-prompt adapter (``methods/soft_prompt_io.py``) wrapped around it;
each method says how (``Method.restore``).

A prompt is a user message (a string) or a conversation (role/content messages, e.g. a training row cut before
its last assistant turn); either is rendered with the chat template plus the assistant header, and the model
writes the next assistant turn. ``generate`` keeps the prompts' order; ``render_prompts`` and ``generate_batch``
are its two halves, for callers that order and checkpoint batches themselves (``evaluation/generate_set.py``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from . import support
from .config import ModelConfig, load_config
from .data.chat import generation_prompt, resolve_template
from .errors import ModelLoadError
from .models import load_model_and_tokenizer, model_kind
from .models.precision import autocast_forward, run_precision
from .models.decoding import generate_batch  # noqa: F401  (re-exported: one batch of rendered prompts)
from .registry import METHODS


def is_run_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / "config.yaml").is_file() and (path / "final").is_dir()


def inside_run(cfg, run_dir: str | Path):
    """``cfg`` with its model path read relative to ``run_dir`` where it names something inside it (``posttrain
    export --to standalone`` writes ``model.name_or_path: base``)."""
    name = str(cfg.model.name_or_path)
    if not Path(name).is_absolute() and (Path(run_dir) / name).exists():
        cfg = replace(cfg, model=replace(cfg.model, name_or_path=str(Path(run_dir) / name)))
    return cfg


def run_config(run_dir: str | Path):
    """A run directory's ``config.yaml`` (``inside_run``)."""
    return inside_run(load_config(Path(run_dir) / "config.yaml"), run_dir)


def load_run(run_dir: str | Path, model_cfg: ModelConfig, *, for_training: bool = False,
             num_labels: int | None = None, precision: str | None = None):
    """(model, tokenizer) of a finished run, restored by the method whose weights ``final/`` holds (its
    ``Method.weights_file``): a full model, or a PEFT or soft-prompt adapter on ``model_cfg``'s base model (the
    run's ``model`` section, possibly with another dtype or head). For inference its forward runs under the
    autocast the run used (``precision=None``: run_meta.json's, so scores reproduce the run's own; ``none``:
    plain ``model_cfg.dtype``); for training (``precision=None``) it is left to the Trainer."""
    if not is_run_dir(run_dir):
        raise ModelLoadError(f"{run_dir}: run directory has no final/ weights (did the run finish?)")
    final = Path(run_dir) / "final"
    methods = METHODS.values()
    marked = [m for m in methods if m.weights_file and (final / m.weights_file).is_file()]
    method = marked[0] if marked else next(m for m in methods if m.weights_file is None)
    model, tokenizer = method.restore(final, model_cfg, for_training, num_labels)
    if precision is None:
        precision = "none" if for_training else run_precision(run_dir)
    return autocast_forward(model, precision), tokenizer


def load_for_inference(spec: str, dtype: str = "float32", families: tuple[str, ...] | None = None,
                       what: str = "generation and output-token losses"):
    """Returns (model, tokenizer, chat_template_name) ready for ``generate``. With ``families``, a model outside them
    is refused from its config, before its weights load (``support.check_model_family``)."""
    if Path(spec).is_dir() and (Path(spec) / "config.yaml").is_file():
        cfg = run_config(spec)
        if families and is_run_dir(spec):  # (an unfinished run gets load_run's own message)
            support.check_model_family(cfg.model, spec, families, what)
        model, tokenizer = load_run(spec, replace(cfg.model, dtype=dtype))
        return model, tokenizer, cfg.data.chat_template
    model_cfg = ModelConfig(name_or_path=spec, dtype=dtype)
    if families:
        support.check_model_family(model_cfg, spec, families, what)
    model, tokenizer = load_model_and_tokenizer(model_cfg, for_training=False)
    return model, tokenizer, "tokenizer"


Prompt = str | list[dict]  # a user prompt, or a conversation (role/content messages) to continue


def to_messages(prompt: Prompt, system: str | None = None) -> list[dict]:
    """A prompt as chat messages: a string becomes one user turn; a conversation is used as it is.

    ``system`` is prepended unless the conversation already opens with its own system message (the data's wins)."""
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt):
        messages = [{"role": m["role"], "content": m["content"]} for m in prompt]
    else:
        raise TypeError(f"a prompt must be a string or a list of {{role, content}} messages, "
                        f"got {type(prompt).__name__}")
    if system and not (messages and messages[0]["role"] == "system"):
        messages = [{"role": "system", "content": system}] + messages
    return messages


def render_prompts(tokenizer, prompts: list[Prompt], *, chat_template: str = "tokenizer",
                   system: str | None = None, kind: str = "causal") -> list[str]:
    """Chat-formatted prompt texts ending with the assistant header, so generation writes the next answer
    (``kind``: the model's family, ``models.families.model_kind``; it picks the template default)."""
    template = resolve_template(tokenizer, chat_template, kind)
    return [generation_prompt(tokenizer, to_messages(prompt, system), template) for prompt in prompts]


def generate(model, tokenizer, prompts: list[Prompt], *, chat_template: str = "tokenizer", system: str | None = None,
             max_new_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0, batch_size: int = 8,
             seed: int = 0) -> list[str]:
    """Greedy (temperature 0) or sampled answers, rendered with the chat template, in the order of ``prompts``.

    Each prompt is a user prompt string or a conversation (a list of role/content messages) whose next assistant
    turn is generated."""
    texts = render_prompts(tokenizer, prompts, chat_template=chat_template, system=system, kind=model_kind(model))
    torch.manual_seed(seed)
    outputs = []
    for start in range(0, len(texts), batch_size):
        outputs += generate_batch(model, tokenizer, texts[start : start + batch_size], max_new_tokens=max_new_tokens,
                                  temperature=temperature, top_p=top_p)
    return outputs
