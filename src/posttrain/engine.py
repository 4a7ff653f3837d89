"""Thin glue between a ``RunConfig`` and ``transformers.Trainer``.

The Trainer does the optimisation, gradient accumulation, checkpoints, resume, distributed training, progress
bars and logging integrations. This module adds only what it lacks:

- the weighted next-token loss with its step-level normaliser (``loss.reduction``), so that gradient
  accumulation and data parallelism give the same update as one big batch;
- held-out evaluation = mean NLL over *output* tokens of the eval set (the IM paper's overfitting measure),
  whatever the training loss mode;
- the run directory: resolved config, run metadata, ``metrics.jsonl``, ``loss_curve.png``, final weights;
- crash safety: a checkpoint (and ``final/``) is written into a ``.tmp-`` directory and renamed into place only
  when complete, so a run killed at any moment leaves the previous valid checkpoint or the new one;
- multi-process runs (``torchrun`` / ``accelerate launch``): rank-0-only run files, the eval loss reduced over
  processes without the padding duplicates of uneven shards, the CPU (gloo) backend when there is no GPU, and full
  parameters for a method's own saver under FSDP / ZeRO-3 (docs/distributed.md).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import NamedTuple

import torch
from transformers import Trainer, TrainerCallback

from . import distributed, support
from .best_weights import BestWeightsCallback
from .checkpointing import (AtomicCheckpoints, clear_run, complete_checkpoints, last_checkpoint,  # noqa: F401
                            run_contents, save_final_model, step_of as _step_of)
from .callbacks import MetricsCallback, NonFiniteGuardCallback, SampleCallback, StopAtStepCallback
from .config import RunConfig, write_config
from .data.chat import generation_prompt
from .data.sft import SFTCollator
from .errors import ConfigError
from .io_utils import atomic_write_json, atomic_write_text, remove_stale_temp_files
from .losses import target_mask, token_nll, weighted_nll_sum
from .methods import kl_regularisation, neftune
from .methods.objectives import OBJECTIVES
from .models.families import model_kind
from .registry import method_named
from .run_data import PreparedData, prepare_data, read_rows
from .run_meta import run_metadata
from .training_args import mixed_precision_arguments, tensorboard_callback, training_arguments
from .tasks import get_task


class PosttrainTrainer(AtomicCheckpoints, Trainer):
    """Trainer whose loss is sum(w * nll) / (sum of w over the whole optimizer step, all processes).

    Methods plug in through two optional hooks: ``param_groups`` (a list of optimizer groups with their own
    learning rates, e.g. DePT's) and, on the model, ``posttrain_save(dir)`` / ``posttrain_load(dir)`` for methods
    whose checkpoint is a small adapter file rather than the whole model (soft prompts).
    """

    loss_is_scaled_for_ga = True

    def __init__(self, *args, param_groups: list[dict] | None = None, task_scorer=None, example_loss=None,
                 train_loss=None, **kwargs):
        self._param_groups = param_groups
        model = kwargs.get("model", args[0] if args else None)
        # names of the grouped parameters: FSDP2 replaces the parameter objects when it shards the model, so the
        # optimizer's groups are rebuilt from the model's parameters of the same names (create_optimizer)
        names = {id(p): n for n, p in model.named_parameters()} if model is not None else {}
        self._param_group_names = [[names.get(id(p)) for p in g["params"]] for g in param_groups or []]
        self._task_scorer = task_scorer  # classification tasks: metrics of rank classification at each evaluation
        self._example_loss = example_loss  # (model, batch) -> per-example losses, for objectives that score labels
        self._train_loss = train_loss  # (model, batch) -> weighted sum for training only (e.g. NLL + lambda * KL)
        self.last_evaluation: tuple[int, dict] | None = None  # (global step, metrics) of the latest evaluate()
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model=None):
        if self.optimizer is None and self._param_groups is not None:
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
            optimizer_kwargs.pop("lr", None)  # each group carries its own learning rate
            current = {distributed.clean_name(n): p for n, p in self.model.named_parameters()}
            groups = [{**g, "params": [current.get(distributed.clean_name(n), p) if n else p
                                       for n, p in zip(names, g["params"])]}
                      for g, names in zip(self._param_groups, self._param_group_names)]
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return super().create_optimizer(model)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        unwrapped = self.accelerator.unwrap_model(self.model)
        saver = getattr(unwrapped, "posttrain_save", None)
        if saver is None:
            return super()._save(output_dir, state_dict)
        if not self.args.should_save:
            return None
        output_dir = output_dir or self.args.output_dir
        # FSDP / ZeRO-3: Trainer.save_model gathered the full state dict on this process; the method's saver reads
        # its parameters, which hold only shards, so the full tensors go in while it runs.
        with distributed.full_parameters(unwrapped, state_dict):
            saver(output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        return None

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        loader = getattr(self.accelerator.unwrap_model(model or self.model), "posttrain_load", None)
        if loader is None or self.is_fsdp_enabled:  # FSDP: the Trainer restores the shards it saved (all ranks)
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        loader(resume_from_checkpoint)
        return None

    def _get_num_items_in_batch(self, batch_samples, device):
        total = sum(float(b["loss_normalizer"]) for b in batch_samples)
        total = torch.tensor(total, device=device)
        if self.args.world_size > 1:
            total = self.accelerator.gather(total[None]).sum()
        return total

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        normalizer = inputs.pop("loss_normalizer")
        if self._train_loss is not None and model.training:
            total = self._train_loss(model, inputs)
        elif self._example_loss:
            total = self._example_loss(model, inputs).sum()
        else:
            total = weighted_nll_sum(model, inputs)
        denominator = num_items_in_batch if num_items_in_batch is not None else normalizer
        loss = total / torch.clamp(torch.as_tensor(denominator, dtype=total.dtype, device=total.device), min=1e-8)
        if self.args.world_size > 1 and num_items_in_batch is not None:
            loss = loss * self.args.world_size  # DDP averages gradients over processes; the normaliser is global
        return (loss, None) if return_outputs else loss

    def log(self, logs: dict, *args, **kwargs) -> None:
        pop_logs = getattr(self._train_loss, "pop_logs", None)
        if pop_logs is not None and "loss" in logs:  # the training loss's parts (NLL and KL) since the last log
            logs = {**logs, **pop_logs()}
        super().log(logs, *args, **kwargs)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        model = self.model_wrapped if self.model_wrapped is not None else self.model
        start = time.time()
        # a task scorer gives the metrics, and with them the loss when it measures it (one pass over the split)
        metrics = dict(self._task_scorer(model)) if self._task_scorer is not None else {}
        if "output_loss" not in metrics:
            metrics.update(self._output_loss(model, self.get_eval_dataloader(eval_dataset)))
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in metrics.items()}
        metrics[f"{metric_key_prefix}_runtime"] = round(time.time() - start, 3)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        self.last_evaluation = (self.state.global_step, metrics)
        model.train()
        return metrics

    def _output_loss(self, model, dataloader) -> dict:
        """Mean loss over the eval dataset: per output token (instruction data) or per example (``example_loss``)."""
        model.eval()
        nll_sum = torch.zeros((), device=self.args.device, dtype=torch.float64)
        count = torch.zeros((), device=self.args.device, dtype=torch.float64)
        with torch.no_grad():
            for batch in dataloader:
                batch = self._prepare_inputs(batch)
                batch.pop("loss_normalizer", None)
                if self._example_loss:
                    sums = self._example_loss(model, batch).double()
                    counts = torch.ones_like(sums)
                else:
                    sums, counts = per_example_nll(model, batch)
                if self.args.world_size > 1:
                    # each process scored its shard; the last shards are padded with repeated examples so that all
                    # processes run the same number of batches: gather_for_metrics drops those repeats
                    sums, counts = self.accelerator.gather_for_metrics((sums, counts))
                nll_sum += sums.sum()
                count += counts.sum()
        return {"output_loss": (nll_sum / count.clamp(min=1)).item(), "output_tokens": int(count.item())}


def per_example_nll(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of output-token NLL, number of output tokens) per example of ``batch``, float64.

    Rows are examples, except in a packed batch (``position_ids`` restarting at 0, no attention mask), whose
    examples are found from the restarts. Per-example values let a multi-process evaluation drop the padding duplicates exactly.
    """
    nll = token_nll(model, batch)[0].double()
    keep = target_mask(batch)
    rows = keep.shape[0]
    if "position_ids" in batch and "attention_mask" not in batch:  # SFTCollator's packed rows
        starts = (batch["position_ids"] == 0).long()
        per_row = starts.sum(dim=1).clamp(min=1)
        offsets = torch.cumsum(per_row, 0) - per_row
        example = (torch.cumsum(starts, dim=1) - 1).clamp(min=0) + offsets[:, None]
        n = int(per_row.sum())
    else:
        example = torch.arange(rows, device=keep.device)[:, None].expand_as(keep)
        n = rows
    index = example[keep]
    sums = torch.zeros(n, dtype=torch.float64, device=nll.device).index_add_(0, index, nll)
    counts = torch.zeros(n, dtype=torch.float64, device=nll.device).index_add_(0, index, torch.ones_like(nll))
    return sums, counts


# ---------------------------------------------------------------------------------------------------------------
# run directory


def objective_model_config(cfg: RunConfig) -> tuple:
    """(ModelConfig, num_labels) to load: an objective may ask for another head (the CLS baseline's classifier)."""
    if not (cfg.task.name and cfg.task.objective in OBJECTIVES):
        return cfg.model, None
    wanted = OBJECTIVES[cfg.task.objective].model_overrides(cfg, get_task(cfg.task.name))
    num_labels = wanted.pop("num_labels", None)
    return dataclasses.replace(cfg.model, **wanted), num_labels


def finished_from_checkpoint(trainer, checkpoint: Path, metrics_cb: MetricsCallback) -> float:
    """Restore a checkpoint taken at the run's last step (weights and state) without training; returns the run's
    mean train loss from metrics.jsonl."""
    from transformers import TrainerState

    trainer._load_from_checkpoint(str(checkpoint))
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
    metrics_cb.on_train_begin(trainer.args, trainer.state, trainer.control)  # drops the records logged after it
    return metrics_cb.mean_train_loss() or 0.0


def final_evaluation(trainer, restored_from: BestWeightsCallback | None) -> dict:
    """Dev metrics of the weights the run keeps. An evaluation already made of exactly these weights is reused
    (the best one after a restore; the last one when it ran at the final step) rather than computed and logged
    twice; otherwise one more pass."""
    if restored_from is not None and restored_from.best_metrics:
        return restored_from.best_metrics
    if restored_from is None and trainer.last_evaluation and trainer.last_evaluation[0] == trainer.state.global_step:
        return trainer.last_evaluation[1]
    return trainer.evaluate()


@dataclasses.dataclass
class RunExtension:
    """What a method that needs its own Trainer subclass adds to ``train`` (e.g. self-training's unlabelled stream):
    built by ``train(..., extension=fn)`` as ``fn(cfg, model, tokenizer, data)`` after the data are prepared and
    before the adapter wraps the model."""

    trainer_cls: type | None = None  # a PosttrainTrainer subclass
    trainer_kwargs: dict = dataclasses.field(default_factory=dict)
    meta: dict = dataclasses.field(default_factory=dict)  # merged into run_meta.json
    files: dict = dataclasses.field(default_factory=dict)  # name -> text, written into the run directory
    final_metrics: object | None = None  # trainer -> extra final metrics
    on_finish: object | None = None  # run_dir -> None, after metrics are written (plots)


def sample_callback(cfg: RunConfig, run_dir: Path, tokenizer, data, model, resume_step) -> SampleCallback:
    """``train.sample_prompts`` rendered as generation prompts with the run's chat template."""
    texts = [generation_prompt(tokenizer, [{"role": "user", "content": p}], data.template)
             for p in cfg.train.sample_prompts]
    return SampleCallback(run_dir, tokenizer, texts, list(cfg.train.sample_prompts), cfg.train.sample_max_new_tokens,
                          resume_step)


class LoadedRun(NamedTuple):
    """What ``load_for_run`` hands the engine: the config with every ``auto`` decided, and the run's inputs."""
    cfg: RunConfig
    model: object
    tokenizer: object
    data: PreparedData
    packing: dict  # support.resolve_packing's record of the choice (run_meta.json)


def load_for_run(cfg: RunConfig, model=None, tokenizer=None) -> LoadedRun:
    """The model, tokenizer and prepared data of a run, unwrapped: the data files are read and the model's family
    checked against the run before any weight loads (``support``), so every such mistake fails in seconds. The
    returned config has ``train.packing: auto`` decided for the model's family (the reason printed when off)."""
    from transformers import set_seed

    from .models import load_model_and_tokenizer

    rows = read_rows(cfg)  # before the model loads: a bad data file fails at once
    mixed_precision_arguments(cfg.train.mixed_precision)  # so does fp16 without a GPU
    model_cfg, num_labels = objective_model_config(cfg)
    # so does a method or objective the model's family does not support (from its config, before any weight)
    planned, model_config = (model_kind(model), model.config) if model is not None else \
        support.planned(cfg, model_cfg.head)
    if planned is not None:
        support.check(cfg, planned)  # the family first: a size is moot on a model that cannot run the recipe
        support.check_sizes(cfg, model_config)
    configured = cfg
    cfg, packing = support.resolve_packing(configured, planned)
    set_seed(cfg.train.seed)
    if model is None or tokenizer is None:
        # (attn_implementation auto: the loader picks what the class supports for packed or padded batches)
        model, tokenizer = load_model_and_tokenizer(model_cfg, for_training=True, num_labels=num_labels,
                                                    packed=cfg.train.packing)
    if planned is None:  # the config could not be read before loading (the loader said nothing was wrong)
        support.check(configured, model_kind(model))
        cfg, packing = support.resolve_packing(configured, model_kind(model))
    line = support.packing_line(packing)
    if line and distributed.is_main_process():
        print(line, flush=True)
    return LoadedRun(cfg, model, tokenizer, prepare_data(cfg, tokenizer, model, rows), packing)


def train(cfg: RunConfig, *, resume: bool = False, overwrite: bool = False,
          callbacks: list[TrainerCallback] | None = None, model=None, tokenizer=None, extension=None) -> dict:
    """Run one training job described by ``cfg``; returns the final metrics.

    ``resume=True`` continues from the last checkpoint in ``train.output_dir/checkpoints`` (optimizer, scheduler,
    RNG and data position included). A directory that holds an earlier run (finished or not) is refused before
    the model loads unless ``resume`` or ``overwrite`` (which removes that run's weights, checkpoints and files).
    ``model``/``tokenizer`` may be passed to skip loading (tests, notebooks).
    """
    run_dir = Path(cfg.train.output_dir)
    checkpoint = last_checkpoint(run_dir) if resume else None
    if resume and checkpoint is None:
        raise ConfigError(f"--resume: no checkpoint under {run_dir / 'checkpoints'}")
    held = [] if resume else run_contents(run_dir)
    if held and not overwrite:
        if "checkpoints/" in held:
            raise ConfigError(f"train.output_dir: {run_dir} already holds checkpoints; pass --resume, --overwrite "
                              "or choose a new dir")
        what = "a finished run" if "final/" in held else f"an earlier run ({', '.join(held)})"
        raise ConfigError(f"train.output_dir: {run_dir} holds {what}; pass --overwrite to replace it or choose a new "
                          "dir")

    given = cfg  # config.yaml keeps the settings as given (auto stays auto); run_meta.json records the decisions
    cfg, model, tokenizer, data, packing = load_for_run(cfg, model, tokenizer)
    ext = extension(cfg, model, tokenizer, data) if extension else RunExtension()
    reference = kl_regularisation.reference_model(cfg, model)  # the starting weights, before anything trains
    method = method_named(cfg.adapter.type)
    model = method.wrap(model, cfg, tokenizer)
    if cfg.train.neftune_alpha > 0:
        neftune.attach(model, cfg.train.neftune_alpha, cfg.train.neftune_length)
    groups_of = method.optimizer_groups

    args = training_arguments(cfg, has_eval=data.eval is not None)
    metrics_cb = MetricsCallback(run_dir, resume_step=_step_of(checkpoint))
    samples = [sample_callback(cfg, run_dir, tokenizer, data, model, _step_of(checkpoint))] \
        if cfg.train.sample_prompts else []
    best_cb = (BestWeightsCallback(cfg.train.best_metric, cfg.train.early_stopping_patience)
               if cfg.train.best_metric else None)
    if best_cb is not None and checkpoint is not None:
        best_cb.load_from(checkpoint)
    trainer = (ext.trainer_cls or PosttrainTrainer)(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        data_collator=data.collator or SFTCollator(
            tokenizer.pad_token_id, cfg.train.packing, cfg.loss.reduction,
            pad_to=cfg.data.max_length if cfg.data.pad_to_max_length else None, padding_side=cfg.data.padding_side,
        ),
        processing_class=tokenizer,
        callbacks=[metrics_cb, NonFiniteGuardCallback(), *([best_cb] if best_cb else []), *samples,
                   *([tensorboard_callback(run_dir)] if "tensorboard" in cfg.train.report_to else []),
                   *(callbacks or [])],
        param_groups=groups_of(model, cfg) if groups_of else None,
        task_scorer=data.eval_scorer,
        example_loss=data.example_loss,
        train_loss=kl_regularisation.train_loss(cfg, reference),
        **ext.trainer_kwargs,
    )
    distributed.check_world_size(args)
    distributed.check_engine(trainer)
    if trainer.is_world_process_zero():  # run files: one writer (the checkpoints: args.should_save, see Trainer)
        if held:  # --overwrite: the earlier run goes only now, once the new one has loaded
            clear_run(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        distributed.remove_staging(run_dir)
        distributed.remove_staging(run_dir / "checkpoints")
        remove_stale_temp_files(run_dir)  # a file write killed mid-way (the file itself is intact: atomic rename)
        write_config(given, run_dir / "config.yaml")
        atomic_write_json(run_dir / "run_meta.json", {**run_metadata(cfg, model, data), "packing": packing,
                                                      **ext.meta})
        for name, text in ext.files.items():
            atomic_write_text(run_dir / name, text)
    trainer.accelerator.wait_for_everyone()

    if checkpoint is not None and 0 < cfg.train.max_steps <= (_step_of(checkpoint) or 0):
        # killed after its last step's checkpoint: nothing is left to train (the Trainer would run one more step)
        training_loss = finished_from_checkpoint(trainer, checkpoint, metrics_cb)
    else:
        training_loss = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None).training_loss
    stopped_early = any(isinstance(cb, StopAtStepCallback) and cb.fired for cb in callbacks or [])
    final = {"train_loss": training_loss, "global_step": trainer.state.global_step}
    if checkpoint is not None and trainer.is_world_process_zero():
        final["train_loss"] = metrics_cb.mean_train_loss() or training_loss  # all steps, not only this process's
    if ext.final_metrics:
        final.update(ext.final_metrics(trainer))
    restored = best_cb is not None and not stopped_early and best_cb.restore(trainer.model)
    if restored:
        final.update(best_cb.summary())  # final eval, test and saved weights are the best evaluation's
    if data.eval is not None and not stopped_early:
        final.update(final_evaluation(trainer, best_cb if restored else None))
    if data.test_scorer is not None and not stopped_early:
        test = {f"test_{k}": v for k, v in data.test_scorer(trainer.model, progress="test").items()}
        trainer.log(test)
        final.update(test)
    if not stopped_early:
        save_final_model(trainer, run_dir / "final")
    if trainer.is_world_process_zero():
        metrics_cb.finish(final)
        if ext.on_finish:
            ext.on_finish(run_dir)
    final["run_dir"] = str(run_dir)
    final["trainer"] = trainer
    return final

