"""Task metrics by ranking label words: predict argmax_y log p(word_y | context), then the task's metrics.

This is rank classification (the verbalizer scoring of LM-BFF, Gao et al. 2021, and the scoring form of DePT's
text-to-text tasks, Shi & Lipani 2024): each label word's scored tokens (all, or the first sub-token) are ranked
by summed log-probability through ``scoring.scorer.choose``, which computes only the LM-head rows it needs and
strips soft-prompt positions. Metrics come from ``scoring.metrics`` (accuracy, MCC, F1, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.classification import context_and_words, encode_choices
from ..scoring.metrics import task_metrics
from ..scoring.scorer import _pad, _progress, choose, selected_logits
from ..scoring.sharding import my_batches, sum_over_processes
from ..tasks import canonical_label
from .objectives import label_predictions
from .prompt_ft import summed_logprobs


@dataclass
class TaskScorer:
    task: object
    contexts: list
    choices: list
    gold: list
    batch_size: int
    pad_token_id: int
    truncated: int = 0
    kind: str = "causal"  # models.families.model_kind: seq2seq contexts go to the encoder, words to the decoder

    def __len__(self) -> int:
        return len(self.contexts)

    def predict(self, model, progress: bool | str = False) -> list[str]:
        return label_predictions(self.task, self.label_scores(model, progress))

    def label_scores(self, model, progress: bool | str = False) -> torch.Tensor:
        """(N, C) float32: log p(word_c | context) of each label word (summed over its scored tokens), the
        quantity prediction ranks. ``softmax`` over the last axis gives the label distribution (pseudo-label
        confidences, PCP Step 1). Scored in eval mode (no dropout), whatever mode the model is in."""
        was_training = model.training
        model.eval()
        try:
            if self.kind == "seq2seq":
                return self._seq2seq_scores(model, progress)
            if all(len(option) == 1 for options in self.choices for option in options):
                return self._single_token_scores(model, progress)
            scores = choose(model, self.contexts, self.choices, batch_size=self.batch_size,
                            pad_token_id=self.pad_token_id, progress=progress)
            return torch.tensor([[s.logprob for s in row] for row in scores], dtype=torch.float32)
        finally:
            model.train(was_training)

    @torch.no_grad()
    def _seq2seq_scores(self, model, progress) -> torch.Tensor:
        """log p(word_c | context) on the decoder, the context on the encoder (``prompt_ft.summed_logprobs``)."""
        device = next(model.parameters()).device
        order = sorted(range(len(self.contexts)), key=lambda i: -len(self.contexts[i]))
        chunks = [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        out = torch.zeros(len(self.contexts), len(self.task.labels), dtype=torch.float32)
        with _progress(len(order), progress, "scoring") as bar:
            for index in my_batches(len(chunks)):
                chunk = chunks[index if index is not None else 0]
                ids, mask = _pad([self.contexts[i] for i in chunk], self.pad_token_id)
                batch = {"input_ids": ids.to(device), "attention_mask": mask.long().to(device),
                         "candidates": [self.choices[i] for i in chunk]}
                logp = summed_logprobs(model, batch, "seq2seq")
                if index is None:
                    continue
                out[chunk] = logp.float().cpu()
                bar.update(len(chunk))
        return sum_over_processes(out, device)

    @torch.no_grad()
    def _single_token_scores(self, model, progress) -> torch.Tensor:
        """Every label word is one token: one pass per context, reading the label rows at its last position
        (the same scores as ``choose``, without running the context once per label)."""
        device = next(model.parameters()).device
        order = sorted(range(len(self.contexts)), key=lambda i: -len(self.contexts[i]))
        chunks = [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        out = torch.zeros(len(self.contexts), len(self.task.labels), dtype=torch.float32)
        with _progress(len(order), progress, "scoring") as bar:
            for index in my_batches(len(chunks)):  # this process's share (scoring/sharding.py)
                chunk = chunks[index if index is not None else 0]
                ids, mask = _pad([self.contexts[i] for i in chunk], self.pad_token_id)
                keep = torch.zeros_like(mask)
                for row, i in enumerate(chunk):
                    keep[row, len(self.contexts[i]) - 1] = True
                logits = selected_logits(model, ids.to(device), mask.to(device), keep.to(device))
                if index is None:  # a repeat that keeps the processes' forward counts equal
                    continue
                logp = torch.log_softmax(logits.float(), dim=-1)
                for row, i in enumerate(chunk):
                    out[i] = logp[row, [option[0] for option in self.choices[i]]].cpu()
                bar.update(len(chunk))
        return sum_over_processes(out, device)

    def __call__(self, model, progress: bool | str = False) -> dict[str, float]:
        return task_metrics(self.task, self.predict(model, progress), self.gold)


def build_task_scorer(tokenizer, task, examples: list[dict], *, form: str, max_length: int, label_tokens: str,
                      batch_size: int = 8, kind: str = "causal") -> TaskScorer:
    contexts, choices, gold, truncated = [], [], [], 0
    for example in examples:
        context, words = context_and_words(task, example, form)
        ctx, options, cut = encode_choices(tokenizer, context, words, max_length, label_tokens, kind)
        contexts.append(ctx)
        choices.append(options)
        label = example.get("label")
        gold.append(None if label is None else canonical_label(label))  # unlabelled rows: label_scores only
        truncated += int(cut)
    return TaskScorer(task, contexts, choices, gold, batch_size, tokenizer.pad_token_id, truncated, kind)
