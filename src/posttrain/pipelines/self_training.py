"""Running the self-training baselines (``methods/self_training.py``) on posttrain's engine.

``self_train`` trains the recipe's prompt-based classifier through ``engine.train`` with a Trainer whose loss adds
the unlabelled term on a deterministic unlabelled stream; this module also loads the self-training YAML and plots
the run's mask ratio and pseudo-label accuracy.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import torch
import yaml

from ..config import build_dataclass as _build, load_config, read_yaml_file, set_dotted
from ..engine import PosttrainTrainer
from ..errors import ConfigError
from ..methods.self_training import SelfTrainingConfig, UnlabelledStream, unlabelled_loss
from .. import engine
from ..methods.objectives import model_kind_of, OBJECTIVES
from ..plots import read_metrics, save_png
from ..tasks import canonical_label, get_task, read_split

RUN_SECTIONS = ("model", "data", "loss", "adapter", "task", "train")  # key=value overrides that go to the recipe

# ---------------------------------------------------------------------------------------------------------------
# config loading: YAML + key=value overrides, one-line errors naming the file and the key




def split_overrides(overrides: list[str] | None) -> tuple[list[str], list[str]]:
    """(self-training overrides, recipe overrides): ``train.max_steps=5`` goes to the recipe, ``p_cutoff=0.9`` not."""
    mine, recipe = [], []
    for item in overrides or []:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}': expected key=value (p_cutoff=0.9, train.max_steps=10, ...)")
        (recipe if key.strip().split(".")[0] in RUN_SECTIONS else mine).append(item)
    return mine, recipe


def load_self_training_config(path, overrides: list[str] | None = None) -> SelfTrainingConfig:
    """A ``SelfTrainingConfig`` from YAML + overrides (``train.*``-style ones are appended to ``overrides``)."""
    path = Path(path)
    raw = read_yaml_file(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys (recipe, algorithm, p_cutoff, ...)")
    mine, recipe_overrides = split_overrides(overrides)
    raw = set_dotted(raw, mine, "p_cutoff=0.9, train.max_steps=10, ...")
    if recipe_overrides:
        if not isinstance(raw.get("overrides", []), list):
            raise ConfigError(f"{path}: overrides: expected a list of section.key=value")
        raw["overrides"] = [*raw.get("overrides", []), *recipe_overrides]
    recipe = raw.get("recipe")
    if isinstance(recipe, str) and recipe and not Path(recipe).is_file() and (path.parent / recipe).is_file():
        raw["recipe"] = str(path.parent / recipe)
    return _build(SelfTrainingConfig, raw, str(path))


def run_config(st: SelfTrainingConfig):
    """The classifier's RunConfig: the recipe, its overrides, then ``output_dir``; checked for self-training."""
    forced = [f"train.output_dir={st.output_dir}"] if st.output_dir else []
    try:
        cfg = load_config(st.recipe, [*st.overrides, *forced])
    except ConfigError as err:
        raise ConfigError(f"recipe: {err}") from None
    if not cfg.task.name:
        raise ConfigError(f"recipe: {st.recipe} has no task.name (self-training needs a declared task)")
    if cfg.task.objective not in OBJECTIVES:
        raise ConfigError(f"recipe: {st.recipe}: task.objective is {cfg.task.objective}; self-training needs a "
                          f"label-scoring objective ({', '.join(OBJECTIVES)}; the papers: verbalizer)")
    if get_task(cfg.task.name).is_regression:
        raise ConfigError(f"recipe: {cfg.task.name} is a regression task; pseudo-labels need classes")
    if cfg.train.max_steps <= 0 and st.unsup_warmup > 0:
        raise ConfigError("unsup_warmup: needs train.max_steps > 0 in the recipe (the ramp is a share of it)")
    return cfg


class SelfTrainingTrainer(PosttrainTrainer):
    """``PosttrainTrainer`` whose training loss adds lambda_u L_u on an unlabelled batch drawn from its own stream."""

    def __init__(self, *args, stream: UnlabelledStream, scores: Callable, st: SelfTrainingConfig, **kwargs):
        super().__init__(*args, **kwargs)
        self.stream, self.scores, self.st = stream, scores, st
        self._step_seen, self._micro = -1, 0
        self.window = self._empty()
        self.totals = self._empty()

    @staticmethod
    def _empty() -> dict:
        return dict.fromkeys(("micro", "n", "masked", "gold", "correct", "gold_masked", "correct_masked", "sup",
                              "unsup"), 0.0)

    def micro_step(self) -> int:
        """Index of the current micro-batch over the whole run (deterministic under resume)."""
        step = self.state.global_step
        if step != self._step_seen:
            self._step_seen, self._micro = step, 0
        m = step * self.args.gradient_accumulation_steps + self._micro
        self._micro += 1
        return m * self.args.world_size + self.args.process_index

    def lambda_u(self) -> float:
        warm = self.st.unsup_warmup * max(self.state.max_steps, 1)
        return self.st.lambda_u * (min(1.0, self.state.global_step / warm) if warm > 0 else 1.0)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        normalizer = inputs.pop("loss_normalizer")
        # this micro-batch's share of the step's labelled examples (1 without gradient accumulation)
        share = float(normalizer) / float(num_items_in_batch if num_items_in_batch is not None else normalizer)
        sup = self._example_loss(model, inputs).mean()
        unl = self.stream.batch(self.micro_step())
        weak = self._prepare_inputs(unl["weak"])
        if self.st.algorithm == "fixmatch":
            with torch.no_grad():
                scores_weak = self.scores(model, weak)
            trained = self.scores(model, self._prepare_inputs(unl["strong"]))
        else:
            scores_weak = trained = self.scores(model, weak)
        per_example, mask, pseudo = unlabelled_loss(scores_weak, trained, p_cutoff=self.st.p_cutoff,
                                                    hard_label=self.st.hard_label, temperature=self.st.temperature)
        unsup = per_example.mean()
        loss = share * (sup + self.lambda_u() * unsup)
        if self.args.world_size > 1 and num_items_in_batch is not None:
            loss = loss * self.args.world_size  # as PosttrainTrainer: DDP averages over processes
        self._count(mask.detach().cpu(), pseudo.cpu(), unl["gold"], float(sup.detach()), float(unsup.detach()))
        return (loss, None) if return_outputs else loss

    def _count(self, mask, pseudo, gold, sup: float, unsup: float) -> None:
        known = gold >= 0
        right = (pseudo == gold) & known
        on = mask > 0
        for acc in (self.window, self.totals):
            acc["micro"] += 1
            acc["n"] += len(mask)
            acc["masked"] += float(on.sum())
            acc["gold"] += float(known.sum())
            acc["correct"] += float(right.sum())
            acc["gold_masked"] += float((known & on).sum())
            acc["correct_masked"] += float((right & on).sum())
            acc["sup"] += sup
            acc["unsup"] += unsup

    @staticmethod
    def summary(acc: dict, prefix: str = "") -> dict:
        if not acc["micro"]:
            return {}
        out = {f"{prefix}mask_ratio": acc["masked"] / acc["n"], f"{prefix}sup_loss": acc["sup"] / acc["micro"],
               f"{prefix}unsup_loss": acc["unsup"] / acc["micro"]}
        if acc["gold"]:
            out[f"{prefix}pseudo_label_acc"] = acc["correct"] / acc["gold"]
        if acc["gold_masked"]:
            out[f"{prefix}pseudo_label_acc_masked"] = acc["correct_masked"] / acc["gold_masked"]
        return out

    def log(self, logs: dict, start_time: float | None = None) -> None:
        if "loss" in logs and self.window["micro"]:
            logs = {**logs, **self.summary(self.window), "lambda_u": self.lambda_u()}
            self.window = self._empty()
        super().log(logs, start_time)


# ---------------------------------------------------------------------------------------------------------------
# the run


def unlabelled_examples(st: SelfTrainingConfig, cfg, task) -> tuple[list[dict], list[int]]:
    """The unlabelled split (or a seeded subset, in file order) and its gold label indices (-1 = none)."""
    source, split = st.unlabeled.split(":")
    rows = read_split(task, source, split, root=cfg.task.data_root, seed=cfg.task.seed)
    if st.max_unlabeled and st.max_unlabeled < len(rows):
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(st.unlabeled_seed)).tolist()
        rows = [rows[i] for i in sorted(order[: st.max_unlabeled])]
    gold = []
    for row in rows:
        label = row.get("label")
        gold.append(task.labels.index(canonical_label(label)) if label is not None and canonical_label(label) in
                    task.labels else -1)
    return rows, gold


def build_stream(st: SelfTrainingConfig, cfg, tokenizer, model, task) -> tuple[UnlabelledStream, Callable]:
    """The unlabelled stream and the (model, batch) -> (B, C) scores function of the recipe's objective."""
    objective = OBJECTIVES[cfg.task.objective]
    kind = model_kind_of(model)
    examples, gold = unlabelled_examples(st, cfg, task)

    def encode(rows):
        return objective.encode(tokenizer, task, rows, cfg, kind, st.unlabeled, labelled=False)[0]

    stream = UnlabelledStream(examples, gold, batch_size=st.uratio * cfg.train.per_device_batch_size,
                              seed=cfg.train.seed, augment=st.augment, strong=st.algorithm == "fixmatch",
                              encode=encode, collate=objective.collator(tokenizer))
    return stream, lambda m, batch: objective.scores(m, batch, kind)


def _check_resume(st: SelfTrainingConfig, run_dir: Path) -> None:
    saved = run_dir / "self_training.yaml"
    if saved.is_file():
        old = yaml.safe_load(saved.read_text(encoding="utf-8"))
        new = json.loads(json.dumps(dataclasses.asdict(st)))
        for key in sorted(set(old) | set(new)):
            if key not in ("recipe", "overrides", "output_dir") and old.get(key) != new.get(key):
                raise ConfigError(f"--resume: {key} was {old.get(key)!r} in {saved}, now {new.get(key)!r}; resume with "
                                  "the same self-training settings or choose a new output_dir")


def self_train(st: SelfTrainingConfig, *, resume: bool = False, overwrite: bool = False, callbacks: list | None = None,
               model=None, tokenizer=None) -> dict:
    """One self-training run: engine.train's run directory and protocol with ``SelfTrainingTrainer``.

    Returns the final metrics (``test_*``, ``eval_*``, ``train_*`` mask ratio and pseudo-label accuracy).
    """
    cfg = run_config(st)
    run_dir = Path(cfg.train.output_dir)
    if resume and engine.last_checkpoint(run_dir) is not None:
        _check_resume(st, run_dir)

    def extension(cfg, model, tokenizer, data):
        stream, scores = build_stream(st, cfg, tokenizer, model, get_task(cfg.task.name))
        meta = {"self_training": {**dataclasses.asdict(st), "unlabelled_examples": len(stream),
                                  "unlabelled_with_gold": sum(g >= 0 for g in stream.gold),
                                  "unlabelled_batch": stream.batch_size}}
        text = yaml.safe_dump(json.loads(json.dumps(dataclasses.asdict(st))), sort_keys=False)
        return engine.RunExtension(
            trainer_cls=SelfTrainingTrainer, trainer_kwargs=dict(stream=stream, scores=scores, st=st), meta=meta,
            files={"self_training.yaml": text},
            final_metrics=lambda trainer: trainer.summary(trainer.totals, "train_"),
            on_finish=lambda run_dir: plot_self_training(run_dir / "metrics.jsonl", run_dir / "self_training.png"))

    return engine.train(cfg, resume=resume, overwrite=overwrite, callbacks=callbacks, model=model,
                        tokenizer=tokenizer, extension=extension)


def plot_self_training(metrics_path: Path, out_png: Path) -> Path | None:
    """Losses (left) and mask ratio / pseudo-label accuracy / dev accuracy (right) against optimizer steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)

    def series(key):  # the first record per step: the engine re-evaluates the restored best weights at the end
        seen = {}
        for r in records:
            if isinstance(r.get(key), (int, float)) and r["step"] not in seen:
                seen[r["step"]] = r[key]
        return sorted(seen.items())

    if not series("loss"):
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    for key, label in (("loss", "total"), ("sup_loss", "labelled CE"), ("unsup_loss", "unlabelled (masked) CE"),
                       ("eval_output_loss", "dev CE")):
        if series(key):
            left.plot(*zip(*series(key)), "o-" if key.startswith("eval") else "-", label=label, lw=1.2, ms=3)
    left.set_xlabel("optimizer step")
    left.set_ylabel("cross-entropy (nats)")
    left.legend(fontsize=8)
    for key, label in (("mask_ratio", "mask ratio (p >= p_cutoff)"), ("pseudo_label_acc", "pseudo-label acc (all)"),
                       ("pseudo_label_acc_masked", "pseudo-label acc (masked in)"), ("eval_accuracy", "dev acc")):
        if series(key):
            right.plot(*zip(*series(key)), "o-" if key.startswith("eval") else "-", label=label, lw=1.2, ms=3)
    right.set_xlabel("optimizer step")
    right.set_ylim(-0.02, 1.02)
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(Path(metrics_path).parent.name)
    fig.tight_layout()
    return save_png(fig, out_png)
