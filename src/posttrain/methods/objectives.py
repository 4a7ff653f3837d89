"""Task objectives that score labels directly: ``task.objective: verbalizer | classifier``.

Both give each example a vector of label scores s(x) in R^C and train with cross-entropy (or, for STS-B-style
regression, KL to the soft target [1 - t, t]); they differ only in where s comes from:

- ``verbalizer``: prompt-based fine-tuning (LM-BFF, Gao et al. 2021; PCP, Shi & Lipani, NeurIPS 2023): the LM
  head read at the template's label slot (``prompt_ft``);
- ``classifier``: the CLS-head baseline of PCP (``run_cls_ft.py``): a new sequence-classification head on the
  plain input (transformers' ``AutoModelForSequenceClassification``: RoBERTa's <s> -> dense -> tanh -> linear,
  Llama's last-token linear "score"), no template.

(``task.objective: lm``, the default, is the label word's next-token loss over the whole vocabulary; see
``data/classification.py``.) Each objective supplies: how the model is loaded, the dataset rows and collator, the
per-example loss, and a scorer for dev/test metrics and pseudo-labels, which the engine composes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..scoring.metrics import task_metrics
from ..models.families import model_kind
from . import dart_lite, prompt_ft
from ..errors import DataError
from ..scoring.scorer import _progress
from ..scoring.sharding import my_batches, sum_over_processes
from ..tasks import canonical_label, get_task


@dataclass
class LabelScorer:
    """Dev/test metrics and label distributions of a task split under a scores function.

    With ``loss_of`` ((scores, batch) -> per-example training loss) the same pass also gives the split's mean loss
    (``output_loss``), so an evaluation runs the model once over the split, not once for the loss and once for
    the metrics. In a distributed run each process scores a share of the batches (``scoring.sharding``).
    """

    task: object
    rows: list
    gold: list
    batch_size: int
    collate: Callable
    scores: Callable  # (model, batch) -> (B, C)
    loss_of: Callable | None = None  # (scores, batch) -> (B,) the objective's per-example loss

    def __len__(self) -> int:
        return len(self.rows)

    @torch.no_grad()
    def scores_and_losses(self, model, progress: bool | str = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, C) log-probabilities of the labels (rows sum to 1 after exp), and the (N,) losses with ``loss_of``."""
        device = next(model.parameters()).device
        order = sorted(range(len(self.rows)), key=lambda i: -len(self.rows[i]["input_ids"]))
        chunks = [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        out = torch.zeros(len(self.rows), len(self.task.labels))
        losses = torch.zeros(len(self.rows)) if self.loss_of else None
        was_training = model.training
        model.eval()
        try:
            with _progress(len(order), progress, "scoring") as bar:
                for index in my_batches(len(chunks)):
                    chunk = chunks[index if index is not None else 0]
                    batch = self.collate([self.rows[i] for i in chunk])
                    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                    scores = self.scores(model, batch)
                    if index is None:  # a repeat that keeps the processes' forward counts equal
                        continue
                    out[chunk] = torch.log_softmax(scores.float(), -1).cpu()
                    if losses is not None:
                        losses[chunk] = self.loss_of(scores, batch).float().cpu()
                    bar.update(len(chunk))
        finally:
            model.train(was_training)
        out = sum_over_processes(out, device)
        return out, None if losses is None else sum_over_processes(losses, device)

    def label_scores(self, model, progress: bool | str = False) -> torch.Tensor:
        """(N, C) log-probabilities of the labels (rows sum to 1 after exp)."""
        return self.scores_and_losses(model, progress)[0]

    def predict(self, model, progress: bool | str = False) -> list:
        return label_predictions(self.task, self.label_scores(model, progress))

    def __call__(self, model, progress: bool | str = False) -> dict[str, float]:
        logp, losses = self.scores_and_losses(model, progress)
        metrics = task_metrics(self.task, label_predictions(self.task, logp), self.gold)
        if losses is not None:  # the same quantity and names as the engine's loss pass over the eval dataset
            metrics["output_loss"] = losses.double().mean().item() if len(losses) else float("nan")
            metrics["output_tokens"] = len(losses)
        return metrics


def label_predictions(task, logp: torch.Tensor) -> list:
    """Predictions from (N, C) label scores: the argmax label, or for STS-B-style regression lb + p(high) (ub - lb)
    with p the softmax over the two scores (PCP's regression head)."""
    reg = getattr(task, "regression", None)
    if reg is not None:
        return (reg.lb + torch.softmax(logp.float(), -1)[:, 1] * (reg.ub - reg.lb)).tolist()
    return [task.labels[int(i)] for i in logp.argmax(-1)]


def _gold(task, rows_source: list[dict]) -> list:
    if task.is_regression:
        return [float(ex["label"]) for ex in rows_source]
    return [canonical_label(ex["label"]) for ex in rows_source]


@dataclass
class Objective:
    """What the engine needs from a task objective (see the module docstring)."""

    name: str
    model_overrides: Callable  # (cfg, task) -> dict of ModelConfig fields and load kwargs
    encode: Callable           # (tokenizer, task, examples, cfg, kind, source, labelled) -> (rows, stats)
    collator: Callable         # (tokenizer) -> collate function
    scores: Callable           # (model, batch, kind) -> (B, C)
    families: tuple[str, ...] = ("causal", "seq2seq", "encoder")  # model kinds it means something for
    # the kinds whose model class for this objective accepts input embeddings (a soft prompt in front)
    embeddings_families: tuple[str, ...] = ("causal", "seq2seq", "encoder")


def _verbalizer_encode(tokenizer, task, examples, cfg, kind, source, labelled=True):
    t = cfg.task
    return prompt_ft.build_rows(tokenizer, task, examples, kind=kind, form=t.form, max_length=cfg.data.max_length,
                                label_tokens=t.label_tokens, causal_scoring=t.causal_scoring, source=source,
                                labelled=labelled)


def _classifier_encode(tokenizer, task, examples, cfg, kind, source, labelled=True):
    """Plain input (text_a, or the text_a/text_b pair as the tokenizer joins it), no template."""
    rows, stats = [], prompt_ft.PromptStats()
    for ex in examples:
        enc = tokenizer(ex["text_a"], ex.get("text_b") or None, truncation=True, max_length=cfg.data.max_length)
        label, target = prompt_ft.label_targets(task, ex, source, labelled)
        rows.append({"input_ids": enc["input_ids"], "position": 0, "candidates": [], "label": label,
                     "soft_target": target})
        stats.examples += 1
        stats.tokens += len(enc["input_ids"])
    if not rows:
        raise DataError(f"{source}: no examples")
    return rows, stats


def _classifier_scores(model, batch, kind):
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


OBJECTIVES = {
    "verbalizer": Objective(
        "verbalizer", lambda cfg, task: {}, _verbalizer_encode,
        lambda tok: prompt_ft.PromptCollator(tok.pad_token_id), prompt_ft.candidate_scores),
    "classifier": Objective(
        "classifier", lambda cfg, task: {"head": "sequence_classification", "num_labels": len(task.labels)},
        _classifier_encode, lambda tok: prompt_ft.PromptCollator(tok.pad_token_id), _classifier_scores,
        # T5/BART...ForSequenceClassification build their decoder input from input_ids and refuse embeddings
        embeddings_families=("causal", "encoder")),
}


def model_kind_of(model) -> str:
    kind = model_kind(model)
    return "masked" if kind == "encoder" else kind


def task_for(cfg, tokenizer, model):
    """The declared task, or its soft (DART-lite) variant, whose new tokens are added to tokenizer and model."""
    task = get_task(cfg.task.name)
    return dart_lite.make_soft(task, tokenizer, model) if cfg.task.prompt_style == "soft" else task


def prepare(cfg, tokenizer, model, read_split: Callable):
    """Train rows, eval rows, collator, loss and scorers for ``cfg.task`` under its objective."""
    objective = OBJECTIVES[cfg.task.objective]
    task = task_for(cfg, tokenizer, model)
    kind = model_kind_of(model)
    t, d = cfg.task, cfg.data
    collate = objective.collator(tokenizer)
    scores = lambda m, batch: objective.scores(m, batch, kind)  # noqa: E731
    regression = task.is_regression

    def loss_of(label_scores, batch):
        return prompt_ft.example_losses(label_scores, batch, regression)

    def loss(m, batch):
        return loss_of(scores(m, batch), batch)

    def rows_of(which, limit=None):
        examples = read_split(cfg, task, which, limit)
        rows, stats = objective.encode(tokenizer, task, examples, cfg, kind, getattr(t, which))
        return examples, rows, stats

    import datasets

    train_examples, train_rows, train_stats = rows_of("train")
    train_rows = train_rows[: d.max_train_examples or None]
    out = dict(train=datasets.Dataset.from_list(train_rows), train_stats=train_stats, collator=collate,
               loss=loss, eval=None, eval_stats=None, eval_scorer=None, test_scorer=None)
    batch = cfg.train.per_device_batch_size
    if t.eval:
        examples, rows, stats = rows_of("eval", t.max_eval_examples)
        out.update(eval=datasets.Dataset.from_list(rows), eval_stats=stats,
                   eval_scorer=LabelScorer(task, rows, _gold(task, examples), batch, collate, scores, loss_of))
    if t.test:
        examples, rows, _ = rows_of("test", t.max_test_examples)
        out["test_scorer"] = LabelScorer(task, rows, _gold(task, examples), batch, collate, scores, loss_of)
    return out


def unlabelled_scorer(cfg, tokenizer, model, task, examples: list[dict], batch_size: int = 16) -> LabelScorer:
    """A scorer over examples without labels (pseudo-labelling a pool, PCP Step 1)."""
    objective = OBJECTIVES[cfg.task.objective]
    kind = model_kind_of(model)
    if cfg.task.prompt_style == "soft":
        task = dart_lite.make_soft(task, tokenizer, model)
    rows, _ = objective.encode(tokenizer, task, examples, cfg, kind, "pool", labelled=False)
    collate = objective.collator(tokenizer)
    return LabelScorer(task, rows, [None] * len(rows), batch_size, collate,
                       lambda m, batch: objective.scores(m, batch, kind))


def describe(cfg) -> dict:
    """The task's named choices, for run metadata."""
    t = cfg.task
    return {"objective": t.objective, "form": t.form, "label_tokens": t.label_tokens,
            "causal_scoring": t.causal_scoring, "prompt_style": t.prompt_style}


