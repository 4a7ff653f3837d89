"""posttrain from Python: train a recipe, reload any finished run, and use the methods inside your own training code.

Everything here is re-exported from ``posttrain`` (``posttrain.train``, ``posttrain.load_run``, ...) and documented
with runnable examples in docs/api.md:

- ``train(config, *overrides, **keyed)`` runs one recipe through posttrain's engine (``posttrain train``) and returns
  a ``TrainResult``; ``load_run(run_dir)`` gives ``(model, tokenizer)`` of any finished run (full, LoRA, prompt
  tuning, DePT, a classification head), in eval mode, ready for ``generate`` and scoring;
- ``prompt_tuning(model, ...)`` and ``dept(model, ...)`` wrap any supported Hugging Face model (decoder-only,
  encoder-decoder, encoder) with a trainable soft prompt (and DePT's offset): a module with ``forward``,
  ``generate``, ``save_pretrained``, ``from_pretrained`` and ``optimizer_groups`` (DePT's two learning rates);
- ``sft_dataset(tokenizer, examples, mode=...)`` and ``LabelsCollator``: IT / IM training rows whose untrained
  tokens are ``-100`` in ``labels``, batched with standard keys only (``input_ids``, ``attention_mask``, ``labels``),
  so a plain ``transformers.Trainer`` or TRL's ``SFTTrainer`` trains the IM loss with its own loss function (a
  sum over the step's trained tokens divided by their number, which is posttrain's ``loss.reduction: token_mean``);
- ``label_scorer(model, tokenizer, task, examples, ...)``: the verbalizer (or classification-head) label scorer of
  prompt-based fine-tuning over any examples: log-probabilities of the labels, predictions and the task's metrics;
  with ``get_task`` and ``read_split`` (task declarations and their data readers, ``posttrain.tasks``) and the
  StepGame generator and solver (``stepgame_generate``, ``stepgame_solve``, ``stepgame_evaluate``:
  ``posttrain.stepgame``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import LossConfig, RunConfig, load_config
from .config.loader import apply_overrides
from .data.chat import resolve_template
from .data.sft import build_sft_dataset
from .errors import ConfigError
from .methods.soft_prompt import SoftPromptModel


@dataclass
class TrainResult:
    """What ``train`` returns: the run directory (config.yaml, run_meta.json, metrics.jsonl, final/), the final
    metrics (``train_loss``, ``eval_*``, ``test_*``, ``global_step``) and the Trainer that ran."""

    run_dir: Path
    metrics: dict
    trainer: object


def _overrides(overrides: tuple, keyed: dict) -> list[str]:
    """``"section.key=value"`` strings, plus keyword overrides written ``section__key=value``."""
    out = list(overrides)
    for name, value in keyed.items():
        if "__" not in name:
            raise ConfigError(f"{name}: keyword overrides are written section__key (e.g. train__max_steps=10)")
        if isinstance(value, bool):
            value = str(value).lower()
        out.append(f"{name.replace('__', '.', 1)}={value}")
    return out


def train(config: RunConfig | str | Path | None = None, *overrides: str, resume: bool = False,
          overwrite: bool = False, **keyed) -> TrainResult:
    """Train one recipe: a ``RunConfig``, a YAML path or None (the defaults), with ``"section.key=value"``
    overrides and ``section__key=value`` keywords, as ``posttrain train CONFIG [overrides]`` does."""
    from .engine import train as engine_train

    changes = _overrides(overrides, keyed)
    if isinstance(config, RunConfig):
        cfg = apply_overrides(config, changes) if changes else config
    else:
        cfg = load_config(config, changes)
    final = engine_train(cfg, resume=resume, overwrite=overwrite)
    trainer = final.pop("trainer")
    return TrainResult(Path(final.pop("run_dir")), final, trainer)


def load_run(run_dir: str | Path, *, for_training: bool = False, dtype: str | None = None,
             precision: str | None = None):
    """``(model, tokenizer)`` of a finished run directory, whatever its method and head. Its forward runs under the
    autocast the run trained and scored under (run_meta.json's ``mixed_precision.used``, e.g. bf16 from the
    default ``auto`` on bf16 hardware), so it reproduces the run's scores; ``precision="none"`` gives plain
    ``dtype`` passes."""
    from .engine import objective_model_config
    from .generation import load_run as restore, run_config

    cfg = run_config(run_dir)
    model_cfg, num_labels = objective_model_config(cfg)
    if dtype:
        model_cfg = dataclasses.replace(model_cfg, dtype=dtype)
    return restore(run_dir, model_cfg, for_training=for_training, num_labels=num_labels, precision=precision)


def prompt_tuning(model, num_virtual_tokens: int = 20, *, init: str = "random", tokenizer=None,
                  init_text: str | None = None, seed: int = 0) -> SoftPromptModel:
    """Freeze ``model`` and put a trainable soft prompt of ``num_virtual_tokens`` rows in front of its input
    (Lester et al. 2021). ``init``: random, vocab (sampled vocabulary rows) or text (``init_text``'s tokens)."""
    return dept(model, num_virtual_tokens, rank=0, init=init, tokenizer=tokenizer, init_text=init_text, seed=seed)


def dept(model, num_virtual_tokens: int = 60, rank: int = 30, max_length: int = 256, *, alpha: float = 8.0,
         offset_positions: str = "real_tokens", init: str = "random", tokenizer=None, init_text: str | None = None,
         seed: int = 0) -> SoftPromptModel:
    """Freeze ``model`` and add DePT (Shi & Lipani 2024): a soft prompt P (m x d) and the offset (alpha / sqrt r) A B
    on the first ``max_length`` input embeddings (A: s x r, B: r x d = 0). Train with
    ``torch.optim.AdamW(wrapped.optimizer_groups(prompt_lr, offset_lr))``."""
    wrapped = SoftPromptModel(model, num_virtual_tokens, rank=rank, max_length=max_length if rank else 0,
                              alpha=alpha, offset_positions=offset_positions)
    wrapped.init_prompt(init, tokenizer=tokenizer, text=init_text, seed=seed)
    return wrapped


def sft_dataset(tokenizer, examples, *, mode: str = "output_only", im_mask: str = "paper", max_length: int = 1024,
                chat_template: str = "tokenizer", data_format: str = "auto"):
    """A ``datasets.Dataset`` of ``input_ids`` and ``labels`` for instruction tuning: ``mode`` output_only (IT),
    instruction_and_output (IM: instruction and output tokens, template tokens -100) or all_tokens. ``examples``:
    a data file path (any format posttrain reads) or rows already normalised to ``{"messages": [...]}``."""
    from .data.instruction import detect_and_normalise, load_examples

    loss = LossConfig(mode=mode, im_mask=im_mask)
    if isinstance(examples, (str, Path)):
        rows, source = load_examples(examples, data_format), str(examples)
    else:
        rows, source = detect_and_normalise(list(examples), "examples", data_format), "examples"
    template = resolve_template(tokenizer, chat_template)
    dataset, _ = build_sft_dataset(tokenizer, rows, template, loss, max_length, source=source)
    return dataset.remove_columns([c for c in dataset.column_names if c not in ("input_ids", "labels")])


@dataclass
class LabelsCollator:
    """Right-padded ``input_ids`` / ``attention_mask`` / ``labels`` (-100 on padding) and nothing else, for any
    Trainer. Rows may come from ``sft_dataset`` or carry ``loss_weights`` of 0 and 1 (posttrain's own rows); a
    weight other than 0 or 1 (``loss.prompt_loss_weight``) needs posttrain's engine, which keeps the weights."""

    pad_token_id: int

    def __call__(self, features: list[dict]) -> dict:
        width = max(len(f["input_ids"]) for f in features)
        batch = {"input_ids": torch.full((len(features), width), self.pad_token_id, dtype=torch.long),
                 "attention_mask": torch.zeros((len(features), width), dtype=torch.long),
                 "labels": torch.full((len(features), width), -100, dtype=torch.long)}
        for row, f in enumerate(features):
            labels = list(f["labels"])
            weights = f.get("loss_weights")
            if weights is not None:
                if any(w not in (0.0, 1.0) for w in weights):
                    raise ConfigError("LabelsCollator: a loss weight other than 0 or 1 cannot be expressed in labels; "
                                      "train weighted losses with posttrain.train")
                labels = [t if w > 0 else -100 for t, w in zip(f["input_ids"], weights)]
            n = len(f["input_ids"])
            batch["input_ids"][row, :n] = torch.tensor(f["input_ids"])
            batch["attention_mask"][row, :n] = 1
            batch["labels"][row, :n] = torch.tensor(labels)
        return batch


def label_scorer(model, tokenizer, task, examples: list[dict], *, objective: str = "verbalizer",
                 form: str = "template", max_length: int = 256, label_tokens: str = "all",
                 causal_scoring: str = "slot", batch_size: int = 16):
    """The label scorer of ``task`` (a name, a task file or a ``Task``) over ``examples`` (``read_split`` rows):
    ``scorer.label_scores(model)`` gives (N, C) label log-probabilities, ``scorer.predict(model)`` the labels and,
    when every example has a label, ``scorer(model)`` the task's metrics. ``objective``: verbalizer (the LM head at
    the template's label slot, PCP / LM-BFF) or classifier (a sequence-classification head); the same scoring as
    ``posttrain tasks eval``."""
    from .methods.objectives import OBJECTIVES, LabelScorer, _gold, model_kind_of
    from .tasks import get_task

    task = get_task(task) if not hasattr(task, "labels") else task
    if objective not in ("verbalizer", "classifier"):
        raise ConfigError(f"objective: expected verbalizer or classifier, got {objective!r}")
    # the scoring settings as a run's config carries them (checked by the config's own field choices)
    settings = load_config(None, [f"task.objective={objective}", f"task.form={form}",
                                  f"task.label_tokens={label_tokens}", f"task.causal_scoring={causal_scoring}",
                                  f"data.max_length={max_length}"])
    chosen = OBJECTIVES[objective]
    kind = model_kind_of(model)
    labelled = all(ex.get("label") is not None for ex in examples)
    rows, _ = chosen.encode(tokenizer, task, examples, settings, kind, "examples", labelled=labelled)
    gold = _gold(task, examples) if labelled else [None] * len(rows)
    return LabelScorer(task, rows, gold, batch_size, chosen.collator(tokenizer),
                       lambda m, batch: chosen.scores(m, batch, kind))


def get_task(name_or_file):
    """A declared task (``posttrain tasks list``) or a task YAML file: labels, verbalizer, templates, data sources."""
    from .tasks import get_task as get

    return get(name_or_file)


def read_split(task, source: str, split: str, *, root=None, seed=None) -> list[dict]:
    """The examples of one split of a task's data source (kshot with ``seed``, pool, superglue, a user source)."""
    from .tasks import read_split as read

    return read(task, source, split, root=root, seed=seed)


def stepgame_generate(k: int, n: int, seed: int = 0, noise: bool = True, template_set: str = "original"):
    """n StepGame examples with k hops (story, question, label, k_hop, noise_nodes); Shi et al., AAAI 2022."""
    from .stepgame import generate

    return generate(k, n, seed=seed, noise=noise, template_set=template_set)


def stepgame_solve(story: list[str], question: str, template_set: str = "corrected"):
    """The label a StepGame story implies (the exact solver), or None when the story does not connect them."""
    from .stepgame import solve

    return solve(story, question, template_set)


def stepgame_evaluate(examples: list[dict], template_set: str = "corrected") -> dict:
    """The exact solver's accuracy on examples, with every contradiction explained (defective templates)."""
    from .stepgame import evaluate

    return evaluate(examples, template_set)
