"""``posttrain tasks eval``: score a trained run, or a recipe's base model (zero-shot), on one split of its task.

    posttrain tasks eval RUN_DIR|RECIPE.yaml [key=value ...] [--split test|eval] [--out FILE.json]
        [--predictions FILE.jsonl]

A run directory is evaluated with its own resolved ``config.yaml`` (task, template, objective, form) and its
``final/`` weights (full model, LoRA or soft-prompt adapter); a recipe is evaluated with its base model, untrained:
the zero-shot prompt baseline of LM-BFF (Gao et al., ACL 2021, Table 3 "Prompt-based zero-shot"). Overrides change
the split or its size, e.g. ``task.test=kshot:test task.max_test_examples=0`` scores the whole test set where the
run kept a subset. The scoring is the one the run's own evaluation used (``run_data.prepare_data``): label scores
from the objective (verbalizer, classifier or the label word's next-token log-probability), predictions by
argmax (STS-B: lb + p(high) (ub - lb)), then the task's metrics.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..config import load_config
from ..errors import ConfigError, ModelLoadError
from ..methods.objectives import label_predictions
from ..scoring.metrics import task_metrics
from ..engine import objective_model_config
from ..generation import inside_run, load_run
from ..models import load_model_and_tokenizer
from ..models.precision import run_precision
from ..run_data import prepare_data, task_split
from ..tasks import get_task

SPLITS = ("test", "eval")


def task_config(spec: str, overrides: list[str], split: str = "test"):
    """The run's (or recipe's) config with ``overrides``, checked before any weights load."""
    path = Path(spec)
    if path.is_dir() and not (path / "config.yaml").is_file():
        raise ModelLoadError(f"{spec}: not a run directory (no config.yaml) and not a recipe file")
    source = path / "config.yaml" if path.is_dir() else path
    cfg = load_config(source, overrides)
    if path.is_dir():  # a model path relative to the run directory (an exported standalone run)
        cfg = inside_run(cfg, path)
    if not cfg.task.name:
        raise ConfigError(f"{source}: task.name is not set; tasks eval scores a declared task (`posttrain tasks "
                          "list`)")
    if split not in SPLITS:
        raise ConfigError(f"--split: expected test or eval, got {split!r}")
    if not getattr(cfg.task, split):
        raise ConfigError(f"task.{split}: the config names no {split} split; set one, e.g. task.{split}="
                          f"{'kshot:test' if split == 'test' else 'kshot:dev'}")
    return cfg


def load_task_model(spec: str, cfg):
    """(model, tokenizer, what): a run's final weights, or the recipe's base model (untrained)."""
    model_cfg, num_labels = objective_model_config(cfg)  # e.g. the CLS baseline's classification head
    # loaded as for training (right padding, as the run's own evaluation); the scorers switch to eval mode
    if Path(spec).is_dir():
        model, tokenizer = load_run(spec, model_cfg, for_training=True, num_labels=num_labels,
                                    precision=run_precision(spec))  # scored as the run scored its test split
        return model, tokenizer, f"run {spec}"
    model, tokenizer = load_model_and_tokenizer(model_cfg, for_training=True, num_labels=num_labels)
    return model, tokenizer, f"{model_cfg.name_or_path}, untrained (zero-shot)"


def scored_examples(cfg, split: str) -> list[dict]:
    """The examples of ``split`` that the run scores (its seeded subset when the config limits the split)."""
    limit = cfg.task.max_test_examples if split == "test" else cfg.task.max_eval_examples
    return task_split(cfg, get_task(cfg.task.name), split, limit)


def split_scorer(cfg, tokenizer, model, split: str, examples: list[dict]):
    """The run's scorer of ``split`` (``test`` or ``eval``) over ``examples``; no other split is read."""
    other = "eval" if split == "test" else "test"
    cfg = dataclasses.replace(cfg, task=dataclasses.replace(cfg.task, **{other: None}))
    # prepare_data also builds a training set, which must not be empty: one scored row stands in (nothing trains,
    # and no scorer reads the training rows), so the split is not encoded a second time as training data
    data = prepare_data(cfg, tokenizer, model, {"train": examples[:1], split: examples})
    return data.test_scorer if split == "test" else data.eval_scorer


def evaluate_split(cfg, model, tokenizer, split: str = "test", progress: bool | str = "scoring",
                   examples: list[dict] | None = None):
    """(metrics, prediction records) of ``model`` on ``split`` of ``cfg.task`` (``examples``: already read)."""
    examples = scored_examples(cfg, split) if examples is None else examples
    scorer = split_scorer(cfg, tokenizer, model, split, examples)
    logp = scorer.label_scores(model, progress)
    task = scorer.task
    predictions = label_predictions(task, logp)
    gold = scorer.gold
    if any(g is None for g in gold):
        raise ConfigError(f"task.{split}: {cfg.task.name} {getattr(cfg.task, split)} has unlabelled rows; "
                          "metrics need gold labels")
    metrics = task_metrics(task, predictions, gold)
    probs = torch.softmax(logp, -1)
    records = [{"index": i, "text_a": ex.get("text_a"), "text_b": ex.get("text_b"), "gold": g, "prediction": p,
                "probabilities": dict(zip(task.labels, map(float, row)))}
               for i, (ex, g, p, row) in enumerate(zip(examples, gold, predictions, probs.tolist()))]
    return metrics, records
