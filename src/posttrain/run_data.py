"""What a run trains and evaluates on: instruction data (``data.train_file``) or a declared task (``task.name``).

``prepare_data`` returns the training set, the held-out set and their statistics, plus, for classification tasks,
the scorers of the eval and test splits and the objective's collator and per-example loss. Held-out loss on
instruction data is always measured on output tokens (IM paper, Sec. 5.5), whatever the training loss mode.
"""

from __future__ import annotations

import dataclasses

import torch

from .config import LossConfig, RunConfig
from .data.chat import resolve_template
from .data.instruction import load_examples
from .data.seq2seq import Seq2SeqCollator, build_seq2seq_dataset, decoder_start_id
from .data.sft import build_sft_dataset
from .errors import ConfigError
from .methods.objectives import OBJECTIVES, prepare as prepare_objective
from .data.classification import build_classification_dataset
from .methods.rank_classification import build_task_scorer
from .models.families import model_kind
from .tasks import get_task, read_split

OUTPUT_ONLY = LossConfig(mode="output_only")


@dataclasses.dataclass
class PreparedData:
    train: object
    eval: object | None
    train_stats: object
    eval_stats: object | None
    template: str | None
    eval_scorer: object | None = None  # task metrics on the held-out split (classification tasks)
    test_scorer: object | None = None  # task metrics on the test split, after training
    collator: object | None = None  # the objective's batches (default: SFTCollator from the config)
    example_loss: object | None = None  # (model, batch) -> per-example losses (default: weighted next-token NLL)


def split_examples(cfg: RunConfig) -> tuple[list[dict], list[dict]]:
    d = cfg.data
    if not d.train_file:
        raise ConfigError("data.train_file: required (a .jsonl/.json/.csv/.parquet file)")
    train = load_examples(d.train_file, d.format)
    evals: list[dict] = []
    if d.eval_file:
        evals = load_examples(d.eval_file, d.format)
    elif d.eval_size:
        if d.eval_size >= len(train):
            raise ConfigError(f"data.eval_size: {d.eval_size} leaves no training rows ({len(train)} in {d.train_file})")
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(d.shuffle_seed)).tolist()
        held = set(order[: d.eval_size])
        evals = [train[i] for i in sorted(held)]
        train = [row for i, row in enumerate(train) if i not in held]
    if d.max_train_examples:
        train = train[: d.max_train_examples]
    if d.max_eval_examples:
        evals = evals[: d.max_eval_examples]
    return train, evals


def task_split(cfg: RunConfig, task, which: str, limit: int | None = None) -> list[dict]:
    source, split = getattr(cfg.task, which).split(":")
    rows = read_split(task, source, split, root=cfg.task.data_root, seed=cfg.task.seed)
    if limit:  # a seeded subset, so that a limited eval set is not biased towards the file's first rows
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(cfg.data.shuffle_seed)).tolist()
        rows = [rows[i] for i in sorted(order[:limit])]
    return rows


def read_rows(cfg: RunConfig) -> dict[str, list[dict]]:
    """Every example a run reads, by split, parsed without tokenizer or model.

    The engine calls this before it loads the model, so that a bad data file fails in seconds with its one-line
    error instead of after the weights have loaded.
    """
    if not cfg.task.name:
        train, evals = split_examples(cfg)
        return {"train": train, "eval": evals}
    task, t = get_task(cfg.task.name), cfg.task
    limits = {"train": None, "eval": t.max_eval_examples, "test": t.max_test_examples}
    return {which: task_split(cfg, task, which, limit) for which, limit in limits.items() if getattr(t, which)}


def _seq2seq_collator(cfg: RunConfig, tokenizer, model):
    return Seq2SeqCollator(tokenizer.pad_token_id, decoder_start_id(model.config), cfg.loss.reduction,
                           padding_side=cfg.data.padding_side,
                           pad_to=cfg.data.max_length if cfg.data.pad_to_max_length else None)


def prepare_task_data(cfg: RunConfig, tokenizer, rows: dict[str, list[dict]], kind: str = "causal",
                      model=None) -> PreparedData:
    """A declared classification task: label-word loss for training, rank-classification metrics for eval/test."""
    task = get_task(cfg.task.name)
    t, d = cfg.task, cfg.data
    train_rows = rows["train"][: d.max_train_examples or None]
    common = dict(form=t.form, max_length=d.max_length, label_tokens=t.label_tokens, kind=kind)
    train, train_stats = build_classification_dataset(tokenizer, task, train_rows, source=t.train, **common)
    evals = eval_stats = eval_scorer = test_scorer = None
    if t.eval:
        eval_rows = rows["eval"]
        evals, eval_stats = build_classification_dataset(tokenizer, task, eval_rows, source=t.eval, **common)
        eval_scorer = build_task_scorer(tokenizer, task, eval_rows, batch_size=cfg.train.per_device_batch_size,
                                        **common)
    if t.test:
        test_rows = rows["test"]
        test_scorer = build_task_scorer(tokenizer, task, test_rows, batch_size=cfg.train.per_device_batch_size,
                                        **common)
    collator = _seq2seq_collator(cfg, tokenizer, model) if kind == "seq2seq" else None
    return PreparedData(train, evals, train_stats, eval_stats, None, eval_scorer, test_scorer, collator)


def prepare_data(cfg: RunConfig, tokenizer, model=None, rows: dict[str, list[dict]] | None = None) -> PreparedData:
    """Datasets, statistics and scorers of a run; ``rows`` are ``read_rows(cfg)`` when the caller already has them."""
    rows = read_rows(cfg) if rows is None else rows
    if cfg.task.name and cfg.task.objective in OBJECTIVES:
        parts = prepare_objective(cfg, tokenizer, model, lambda _cfg, _task, which, _limit: rows[which])
        return PreparedData(parts["train"], parts["eval"], parts["train_stats"], parts["eval_stats"], None,
                            parts["eval_scorer"], parts["test_scorer"], parts["collator"], parts["loss"])
    kind = model_kind(model) if model is not None else "causal"
    if cfg.task.name:
        return prepare_task_data(cfg, tokenizer, rows, kind, model)
    template = resolve_template(tokenizer, cfg.data.chat_template, kind)
    build = build_seq2seq_dataset if kind == "seq2seq" else build_sft_dataset
    train_rows, eval_rows = rows["train"], rows["eval"]
    train, train_stats = build(
        tokenizer, train_rows, template, cfg.loss, cfg.data.max_length, source=cfg.data.train_file,
        overlong=cfg.data.overlong,
    )
    evals, eval_stats = None, None
    if eval_rows:  # held-out loss is always measured on output tokens (IM paper, Sec. 5.5)
        evals, eval_stats = build(
            tokenizer, eval_rows, template, OUTPUT_ONLY, cfg.data.max_length,
            source=cfg.data.eval_file or f"{cfg.data.train_file} (held-out split)", overlong=cfg.data.overlong,
        )
    collator = _seq2seq_collator(cfg, tokenizer, model) if kind == "seq2seq" else None
    return PreparedData(train, evals, train_stats, eval_stats, template, collator=collator)


