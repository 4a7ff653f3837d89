"""Continued pre-training on a text corpus, one example per line: TAPT and the PCP corpus (Step 3 of PCP).

Papers: TAPT (Gururangan et al., ACL 2020) as the SSL baseline of Shi et al., "Rethinking Semi-supervised Learning
with Language Models" (ACL Findings 2023); PCP, Shi & Lipani, "Don't Stop Pretraining? Make Prompt-based
Fine-tuning Powerful Learner" (NeurIPS 2023). Both run HF ``run_mlm.py --line_by_line`` on their corpus. The
objective is picked from the loaded model (``models.load_model_and_tokenizer``, head ``auto``):

- masked LM (BERT, RoBERTa): a random 15% M of the non-special tokens of each line is selected; of those 80% become
  ``<mask>``, 10% a random token, 10% stay; loss = -(1/|M|) sum_{i in M} log p(x_i | x~). This is transformers'
  ``DataCollatorForLanguageModeling(mlm_probability=0.15)``; special tokens (CLS/SEP/BOS/EOS/PAD) are never masked.
  The PCP reference passes ``--always_mask_label_token False``: the label word in the template is masked only when
  the 15% draw hits it, like any other token, so no option to force it exists here.
- causal LM (decoders such as SmolLM2): loss = -(1/T) sum_t log p(x_t | x_<t) over each line's tokens (padding
  excluded), the same collator with ``mlm=False``. No EOS is appended (pad = eos for most decoders, so it would be
  masked anyway).

Defaults are the papers' ``run_mlm.py`` settings: lr 1e-4, AdamW betas (0.9, 0.98), eps 1e-6, weight decay 0.01,
linear warmup over 6% of the steps, held-out loss every ``eval_steps`` (checkpoint at the same steps), and the
checkpoint with the lowest held-out loss kept at the end (``load_best_model_at_end``), saved as ``RUN/best/``
(safetensors + tokenizer, loadable by ``models.load_model_and_tokenizer``). The held-out set is masked once with
a fixed seed, so every evaluation scores the same masked positions (the reference re-draws them each time, which
adds noise to the choice of checkpoint); the value is transformers' ``eval_loss`` (mean over eval batches of each
batch's token-mean loss). Lines longer than ``max_length`` tokens are cut on the right; blank lines are skipped.

Run directory: ``cpt_config.yaml`` (resolved), ``run_meta.json``, ``metrics.jsonl``, ``loss_curve.png``,
``checkpoints/checkpoint-N/`` (resume continues from the last one), ``best/``, ``final_metrics.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import torch
from transformers import DataCollatorForLanguageModeling, DataCollatorForSeq2Seq, Trainer, TrainerCallback

from ..callbacks import MetricsCallback
from ..checkpointing import AtomicCheckpoints, save_final_model, step_of as _step_of
from ..config import help_field as _f, ModelConfig, RunConfig, TrainConfig, write_config
from ..config.fields import check_bounds
from ..config.validate import check_scheduler
from ..models.precision import resolve_precision
from ..errors import ConfigError, DataError
from ..distributed import remove_staging
from ..engine import last_checkpoint
from ..io_utils import atomic_write_json
from ..models import describe_model, load_model_and_tokenizer, load_model_config, resolve_head
from ..training_args import mixed_precision_arguments, training_arguments as engine_arguments




@dataclass
class ContinuedPretrainingConfig:
    model: Optional[str] = _f(None, "Model to continue pre-training (any models.load_model_and_tokenizer spec). "
                              "Empty = 'default' when run alone; in a PCP/TAPT pipeline, the final recipe's model.")
    head: Literal["auto", "causal_lm", "masked_lm"] = _f(
        "auto", "Head to load: auto = masked_lm for masked-LM checkpoints (BERT, RoBERTa), causal_lm for decoders.")
    attn_implementation: str = _f(
        "auto", "Attention backend, as model.attn_implementation of a run (sdpa, eager, flash_attention_2, ...); auto "
        "= sdpa where the model class supports it, else eager (Gemma 2, DeBERTa-v2). Overrides the model settings "
        "a pipeline passes unless auto.")
    objective: Literal["auto", "mlm", "clm"] = _f(
        "auto", "mlm (15% masking, 80/10/10) or clm (next token); auto = mlm for masked LMs, clm for causal LMs.")
    train_file: Optional[str] = _f(None, "Corpus, one example per line (UTF-8 text; blank lines skipped).")
    eval_file: Optional[str] = _f(None, "Held-out corpus in the same format (PCP: the templated dev pool).")
    output_dir: str = _f("runs/cpt", "Run directory: config, metrics.jsonl, loss plot, checkpoints/, best/.")
    max_length: int = _f(512, "Truncate lines to this many tokens (reference: none, i.e. RoBERTa's 512).",
                         bounds="[8, inf)")
    mlm_probability: float = _f(0.15, "Fraction of non-special tokens selected for MLM (PCP/TAPT: 0.15).",
                                bounds="(0, 1)")
    mask_replace_prob: float = _f(0.8, "Of the selected tokens, fraction replaced by the mask token (BERT: 0.8).",
                                  bounds="[0, 1]")
    random_replace_prob: float = _f(0.1, "Of the selected tokens, fraction replaced by a random token (BERT: 0.1).",
                                    bounds="[0, 1]")
    learning_rate: float = _f(1e-4, "Peak learning rate (PCP/TAPT run_mlm: 1e-4; the PCP README advises lower "
                              "for small corpora).", bounds="(0, inf)")
    adam_beta1: float = _f(0.9, "AdamW beta1 (PCP/TAPT: 0.9).", bounds="[0, 1)")
    adam_beta2: float = _f(0.98, "AdamW beta2 (PCP/TAPT: 0.98).", bounds="[0, 1)")
    adam_epsilon: float = _f(1e-6, "AdamW epsilon (PCP/TAPT: 1e-6).", bounds="(0, inf)")
    weight_decay: float = _f(0.01, "AdamW weight decay (PCP/TAPT: 0.01).", bounds="[0, inf)")
    warmup_ratio: float = _f(0.06, "Fraction of steps with linear warmup (PCP/TAPT: 0.06).", bounds="[0, 1)")
    lr_scheduler: str = _f("linear", "transformers scheduler name (run_mlm default: linear decay to 0).")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm (run_mlm default 1.0; 0 = off).", bounds="[0, inf)")
    per_device_batch_size: int = _f(16, "Lines per micro-batch (PCP: 16).", bounds="[1, inf)")
    gradient_accumulation_steps: int = _f(8, "Micro-batches per optimizer step (PCP: 8, i.e. 128 lines a step).",
                                          bounds="[1, inf)")
    num_epochs: float = _f(100.0, "Epochs over the corpus (PCP/TAPT: 100); ignored when max_steps > 0.",
                           bounds="[0, inf)")
    max_steps: int = _f(-1, "Optimizer steps; overrides num_epochs when > 0.", bounds="[-1, inf)")
    eval_steps: int = _f(500, "Held-out loss and a checkpoint every N steps, and at the last step (PCP: 500).",
                         bounds="[1, inf)")
    eval_on_start: bool = _f(True, "Also measure the held-out loss before the first step (the starting model).")
    save_total_limit: Optional[int] = _f(2, "Keep at most N checkpoints (the best one is always kept).",
                                         bounds="[1, inf)")
    logging_steps: int = _f(10, "Log the training loss every N steps.", bounds="[1, inf)")
    seed: int = _f(42, "Seed of data order and masking (the held-out masks use seed + 1).", bounds="[0, 4294967295]")
    progress: bool = _f(True, "Show tqdm progress bars.")
    mixed_precision: Literal["none", "bf16", "fp16", "auto"] = _f(
        "auto", "Autocast precision of forward passes, as train.mixed_precision of a run (bf16, fp16 on CUDA, auto, "
        "none).")

    def __post_init__(self):
        check_bounds(self)
        check_scheduler(self.lr_scheduler, "lr_scheduler")
        if not str(self.attn_implementation or "").strip():
            raise ConfigError("attn_implementation: must name an attention backend (auto, sdpa, eager, ...)")
        if self.mask_replace_prob + self.random_replace_prob > 1.0:
            raise ConfigError("random_replace_prob: mask_replace_prob + random_replace_prob must be <= 1")
        if self.max_steps <= 0 and self.num_epochs <= 0:
            raise ConfigError("max_steps: set max_steps > 0 or num_epochs > 0")


# ---------------------------------------------------------------------------------------------------------------
# data


class CorpusCollator:
    """Training batches: masked (MLM) or shifted-label (CLM) by ``DataCollatorForLanguageModeling``. Held-out rows
    arrive with their ``labels`` already drawn (``premask``) and are only padded (labels with -100).

    The masks of a training batch come from a generator seeded by (seed, the batch's line numbers), not from the
    global RNG: after a resume, transformers prefetches the first batch before it restores the checkpoint's RNG
    state, so global-RNG masks would differ from an uninterrupted run's. Batches are reshuffled every epoch, so a
    line still gets new masks each epoch (dynamic masking, as ``run_mlm.py``)."""

    def __init__(self, tokenizer, lm_collator, seed: int = 0):
        self.lm = lm_collator
        self.seed = seed
        self.pad = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, return_tensors="pt")

    def __call__(self, features):
        if "labels" in features[0]:
            return self.pad([{k: f[k] for k in ("input_ids", "attention_mask", "labels")} for f in features])
        lines = [int(f["line"]) for f in features]
        key = hashlib.sha256(repr((self.seed, lines)).encode()).digest()
        self.lm.generator = torch.Generator().manual_seed(int.from_bytes(key[:8], "little") >> 1)
        return self.lm([{k: v for k, v in f.items() if k != "line"} for f in features])


def build_lm_collator(tokenizer, objective: str, cfg: ContinuedPretrainingConfig, seed: int | None = None):
    """transformers' LM collator for ``objective`` (mlm: 15% / 80-10-10 with special tokens never selected)."""
    if objective == "mlm":
        if tokenizer.mask_token is None:
            raise ConfigError("cpt.objective: mlm needs a tokenizer with a mask token (this one has none); use clm")
        return DataCollatorForLanguageModeling(
            tokenizer, mlm=True, mlm_probability=cfg.mlm_probability, mask_replace_prob=cfg.mask_replace_prob,
            random_replace_prob=cfg.random_replace_prob, seed=seed)
    return DataCollatorForLanguageModeling(tokenizer, mlm=False, seed=seed)


def read_corpus(path: str, tokenizer, max_length: int, objective: str):
    """Tokenised lines of a text file (``datasets`` text loader; blank lines dropped) and their statistics."""
    import datasets

    if not path or not Path(path).is_file():
        raise DataError(f"{path}: corpus file not found (one example per line)")
    data = datasets.load_dataset("text", data_files={"corpus": str(path)}, split="corpus")
    data = data.filter(lambda row: bool(row["text"].strip()), keep_in_memory=True)
    if len(data) == 0:
        raise DataError(f"{path}: no non-blank lines")

    def encode(batch):
        enc = tokenizer(batch["text"], truncation=True, max_length=max_length,
                        return_special_tokens_mask=objective == "mlm")
        enc["truncated"] = [len(ids) >= max_length for ids in enc["input_ids"]]
        return enc

    data = data.map(encode, batched=True, remove_columns=["text"], keep_in_memory=True)
    data = data.add_column("line", list(range(len(data))))
    lengths = [len(ids) for ids in data["input_ids"]]
    stats = {"file": str(path), "lines": len(data), "tokens": sum(lengths), "max_tokens": max(lengths),
             "truncated_at_max_length": int(sum(data["truncated"]))}
    return data.remove_columns(["truncated"]), stats


def premask(data, lm_collator):
    """Draw the held-out set's MLM masks once (a seeded collator), so every evaluation scores the same positions."""
    import datasets

    rows = []
    for example in data:
        batch = lm_collator([{k: v for k, v in example.items() if k != "line"}])
        rows.append({"input_ids": batch["input_ids"][0].tolist(), "attention_mask": [1] * len(example["input_ids"]),
                     "labels": batch["labels"][0].tolist()})
    return datasets.Dataset.from_list(rows)


# ---------------------------------------------------------------------------------------------------------------
# training


class CorpusTrainer(AtomicCheckpoints, Trainer):
    """transformers.Trainer whose checkpoints appear atomically (``checkpointing.AtomicCheckpoints``): a run killed
    while saving resumes from the previous complete checkpoint."""

    def _load_callback_state(self) -> None:
        # Called on resume right after the checkpoint's trainer_state.json is loaded. That file was written while
        # the checkpoint was staged, so its best_model_checkpoint names a .tmp- path that no longer exists and
        # transformers drops it: the best checkpoint would then be rotated away and best/ would get the last
        # weights. Point it at the committed checkpoint of the best step again.
        state = self.state
        if state.best_model_checkpoint is None and state.best_global_step:
            path = os.path.join(self.args.output_dir, f"checkpoint-{state.best_global_step}")
            if os.path.isdir(path):
                state.best_model_checkpoint = path
        super()._load_callback_state()


class _EvaluateAtLastStep(TrainerCallback):
    """Evaluate (and so checkpoint, and compete for best) at the final step even when it is not a multiple of
    eval_steps: otherwise the last weights could never be selected."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_evaluate = True
        return control


class _CorpusMetrics(MetricsCallback):
    """metrics.jsonl as the engine writes it; the held-out corpus loss is also logged as ``eval_output_loss`` (every
    corpus token is output) so the shared loss plot draws it."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "eval_loss" in logs:
            logs = {**logs, "eval_output_loss": logs["eval_loss"]}
        return super().on_log(args, state, control, logs=logs, **kwargs)


def resolve_objective(cfg: ContinuedPretrainingConfig, model_config, head: str | None = None) -> str:
    """``mlm`` or ``clm`` for the model a transformers ``model_config`` describes, loaded with ``head`` (default
    ``cfg.head``): read from the config alone, so an encoder-decoder (no line-by-line LM objective here) or an
    objective that does not fit is refused before any weight loads."""
    name = (getattr(model_config, "architectures", None) or [model_config.model_type])[0]
    head = resolve_head(head or cfg.head, model_config)
    if head not in ("masked_lm", "causal_lm"):
        raise ConfigError(f"cpt.head: continued pre-training needs a masked or causal LM, {name} is {head}")
    natural = "mlm" if head == "masked_lm" else "clm"
    if cfg.objective not in ("auto", natural):
        raise ConfigError(f"cpt.objective: {cfg.objective} does not fit {name} (a {head}); use {natural} or auto")
    return natural


def training_arguments(cfg: ContinuedPretrainingConfig, resuming: bool = False):
    """The engine's TrainingArguments (same glue as every run), plus best-checkpoint selection by held-out loss.
    The starting model's loss (``eval_on_start``, measured once, not again on resume) does not compete for best."""
    train = TrainConfig(
        output_dir=cfg.output_dir, learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
        adam_beta1=cfg.adam_beta1, adam_beta2=cfg.adam_beta2, adam_epsilon=cfg.adam_epsilon,
        lr_scheduler=cfg.lr_scheduler, warmup_ratio=cfg.warmup_ratio, per_device_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, num_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps, max_grad_norm=cfg.max_grad_norm, logging_steps=cfg.logging_steps,
        eval_steps=cfg.eval_steps, eval_on_start=cfg.eval_on_start and not resuming, save_steps=cfg.eval_steps,
        save_total_limit=cfg.save_total_limit, seed=cfg.seed, progress=cfg.progress,
        mixed_precision=cfg.mixed_precision,
    )
    args = engine_arguments(RunConfig(train=train), has_eval=True)
    return dataclasses.replace(args, load_best_model_at_end=True, metric_for_best_model="loss",
                               greater_is_better=False, prediction_loss_only=True)


def continued_pretraining(cfg: ContinuedPretrainingConfig, *, resume: bool | None = None, model_config=None,
                          model=None, tokenizer=None, callbacks: list | None = None) -> dict:
    """Train ``cfg``; returns final metrics (``eval_loss`` of the best checkpoint, ``best_step``, ``start_eval_loss``).

    ``model_config`` (a ``config.ModelConfig``) replaces ``cfg.model``/``cfg.head`` where a pipeline passes a recipe's
    full model settings (dtype, gguf_file, ...); an explicit ``cfg.attn_implementation`` (not auto) still applies.
    ``resume=None`` continues from the last checkpoint under ``output_dir/checkpoints`` when there is one;
    ``True`` requires one; ``False`` refuses a directory that already holds checkpoints.
    """
    from transformers import set_seed

    if not cfg.train_file or not cfg.eval_file:
        raise ConfigError("cpt.train_file and cpt.eval_file: both are required (the best checkpoint is chosen by "
                          "the held-out corpus loss)")
    run_dir = Path(cfg.output_dir)
    checkpoint = last_checkpoint(run_dir)
    if resume is True and checkpoint is None:
        raise ConfigError(f"--resume: no checkpoint under {run_dir / 'checkpoints'}")
    if resume is False and checkpoint is not None:
        raise ConfigError(f"cpt.output_dir: {run_dir} already holds checkpoints; resume or choose a new dir")
    mixed_precision_arguments(cfg.mixed_precision)  # fp16 without a GPU fails before the model loads

    set_seed(cfg.seed)
    if model is None or tokenizer is None:
        model_config = model_config or ModelConfig(name_or_path=cfg.model or "default", head=cfg.head)
        if cfg.attn_implementation != "auto":
            model_config = dataclasses.replace(model_config, attn_implementation=cfg.attn_implementation)
        objective = resolve_objective(cfg, load_model_config(model_config.name_or_path,
                                                             model_config.trust_remote_code), model_config.head)
        model, tokenizer = load_model_and_tokenizer(model_config, for_training=True)
    else:
        objective = resolve_objective(cfg, model.config)
    train_data, train_stats = read_corpus(cfg.train_file, tokenizer, cfg.max_length, objective)
    eval_data, eval_stats = read_corpus(cfg.eval_file, tokenizer, cfg.max_length, objective)
    eval_data = premask(eval_data, build_lm_collator(tokenizer, objective, cfg, seed=cfg.seed + 1))
    for param in model.parameters():
        param.requires_grad_(True)

    metrics_cb = _CorpusMetrics(run_dir, resume_step=_step_of(checkpoint))
    trainer = CorpusTrainer(
        model=model, args=training_arguments(cfg, checkpoint is not None), train_dataset=train_data,
        eval_dataset=eval_data,
        data_collator=CorpusCollator(tokenizer, build_lm_collator(tokenizer, objective, cfg), seed=cfg.seed),
        processing_class=tokenizer, callbacks=[metrics_cb, _EvaluateAtLastStep(), *(callbacks or [])],
    )
    if trainer.is_world_process_zero():
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_staging(run_dir)  # .tmp-* directories of a run killed while saving or rotating (as engine.train)
        remove_staging(run_dir / "checkpoints")
        write_config(cfg, run_dir / "cpt_config.yaml")
        import transformers

        atomic_write_json(run_dir / "run_meta.json", {
            "method": "continued_pretraining", "objective": objective,
            "masking": ({"mlm_probability": cfg.mlm_probability, "mask": cfg.mask_replace_prob,
                         "random": cfg.random_replace_prob, "special_tokens_masked": False,
                         "always_mask_label_token": False} if objective == "mlm" else None),
            "model": describe_model(model), "torch": torch.__version__, "transformers": transformers.__version__,
            "optimizer": {"name": "adamw_torch", "betas": [cfg.adam_beta1, cfg.adam_beta2], "eps": cfg.adam_epsilon,
                          "weight_decay": cfg.weight_decay},
            "data": {"train": train_stats, "eval": eval_stats},
            "mixed_precision": {"configured": cfg.mixed_precision, "used": resolve_precision(cfg.mixed_precision)},
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })

    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    stopped = any(getattr(cb, "fired", False) for cb in callbacks or [])
    final = {"objective": objective, "train_loss": result.training_loss, "global_step": trainer.state.global_step}
    evals = [(r["step"], r["eval_loss"]) for r in trainer.state.log_history if "eval_loss" in r]
    if evals:
        final["start_eval_loss"] = evals[0][1] if cfg.eval_on_start and evals[0][0] == 0 else None
        final["eval_losses"] = [{"step": s, "eval_loss": v} for s, v in evals]
    if not stopped:
        best = trainer.state.best_model_checkpoint
        final["best_checkpoint"] = best
        final["best_step"] = _step_of(Path(best)) if best else trainer.state.global_step
        final["eval_loss"] = trainer.state.best_metric
        save_final_model(trainer, run_dir / "best")  # the best weights: load_best_model_at_end reloaded them
        if trainer.is_world_process_zero():
            metrics_cb.finish(final)
    final["run_dir"] = str(run_dir)
    final["trainer"] = trainer
    return final
