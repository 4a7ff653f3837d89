"""Self-training baselines on the prompt-based classifier: confidence-thresholded pseudo-labelling and FixMatch.

Pseudo-labelling: Lee, "Pseudo-Label: The Simple and Efficient Semi-Supervised Learning Method for Deep Neural
Networks", ICML-W 2013. FixMatch: Sohn et al., "FixMatch: Simplifying Semi-Supervised Learning with Consistency and
Confidence", NeurIPS 2020. Both as implemented in USB (Wang et al., NeurIPS 2022) and run by Shi et al.,
"Rethinking Semi-supervised Learning with Language Models" (ACL Findings 2023) and by PCP (Shi & Lipani, NeurIPS
2023) on the *same hard prompt-based classifier* as prompt-based fine-tuning (``task.objective: verbalizer``): the
label scores s(x) in R^C are the verbalizer words' scores at the template's slot (``prompt_ft``).

For a labelled micro-batch {(x_b, y_b)}, b = 1..B, and an unlabelled one {u_j}, j = 1..mu B (mu = ``uratio``),
with p(.|x) = softmax s(x), weak/strong views alpha(u) and A(u) (``text_augment``):

    q_j      = p(. | alpha(u_j))                       computed without gradient (stop-gradient)
    mask_j   = 1[max_c q_jc >= tau]                    tau = ``p_cutoff`` (0.95)
    yhat_j   = argmax_c q_jc                           (hard labels; soft: softmax(s(alpha(u_j)) / T))
    L_s      = 1/B      sum_b   CE(p(. | x_b), y_b)
    L_u      = 1/(mu B) sum_j   mask_j CE(p(. | v(u_j)), yhat_j)
    L        = L_s + lambda_u(t) L_u,   lambda_u(t) = lambda_u min(1, t / (unsup_warmup * T_max))  (1 if no warm-up)

with v(u) = alpha(u) for ``pseudo_label`` (the pseudo-label comes from the model on the same input, at the current
step, detached; USB's PseudoLabel) and v(u) = A(u) for ``fixmatch`` (the weak view's prediction is the target of the
strong view's). L_u is a mean over the whole unlabelled batch, masked examples included (USB's
``consistency_loss(..., mask).mean()``), so the mask ratio scales the unlabelled term. With gradient accumulation
each micro-batch's L is weighted by its share of the step's labelled examples.

The unlabelled batch of micro-step m (m = global_step x grad-accum + micro index, across processes) holds positions
m mu B .. (m+1) mu B - 1 of an endless stream of seeded permutations of the unlabelled set, and its views are seeded
by (seed, example, pass): it is a pure function of m, so ``--resume`` continues the same stream without saving it.
The Trainer's checkpoints, resume, logging and evaluation are unchanged; each log record adds ``mask_ratio`` (share of
unlabelled examples above tau), ``pseudo_label_acc`` (argmax of q vs the pool's gold label, where the pool has one;
SST-2's does: an oracle, never trained on) and ``pseudo_label_acc_masked`` (the same over the masked-in examples),
``sup_loss`` and ``unsup_loss``.

USB settings in the papers: p_cutoff 0.95, T 0.5, hard labels, uratio 1, lambda_u 1, batch 8, lr in {1e-5, 2e-5,
5e-5}, 25,600 iterations, strong view = back-translation (not available offline; see ``text_augment``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Optional

import torch
import torch.nn.functional as F
import yaml

from ..config import build_dataclass as _build
from ..config import read_yaml_file, set_dotted
from ..config import help_field as _f
from ..engine import PosttrainTrainer
from ..errors import ConfigError
from .text_augment import AugmentConfig, augment_example

RUN_SECTIONS = ("model", "data", "loss", "adapter", "task", "train")  # key=value overrides that go to the recipe




@dataclass
class SelfTrainingConfig:
    recipe: str = _f("", "RunConfig YAML of the classifier (task.objective: verbalizer, or classifier for the CLS "
                     "head), its labelled data, optimiser and steps (relative to the cwd, else to this file).")
    overrides: list = _f([], "section.key=value overrides of the recipe (command-line ones are applied after).")
    algorithm: Literal["pseudo_label", "fixmatch"] = _f(
        "fixmatch", "pseudo_label: the target and the trained prediction are both on the weak view (Lee 2013); "
        "fixmatch: the weak view's pseudo-label trains the strong view's prediction (Sohn et al. 2020).")
    p_cutoff: float = _f(0.95, "Confidence threshold tau: an unlabelled example counts when max_c p(c | weak view) "
                         ">= tau (USB: 0.95).")
    lambda_u: float = _f(1.0, "Weight of the unlabelled loss (USB: 1.0).")
    uratio: int = _f(1, "Unlabelled examples per labelled example in a batch (mu; USB text configs: 1).")
    hard_label: bool = _f(True, "Hard pseudo-labels (argmax, USB's use_hard_label); false: soft targets "
                          "softmax(s / temperature).")
    temperature: float = _f(0.5, "T of the soft targets (only with hard_label: false; USB: 0.5).")
    unsup_warmup: float = _f(0.0, "Fraction of train.max_steps over which lambda_u ramps up linearly from 0 (0 = "
                             "none; USB's PseudoLabel uses 0.4, FixMatch none).")
    unlabeled: str = _f("pool:train", "Unlabelled split as source:split of the recipe's task (gold labels, if any, "
                        "are only used to report pseudo-label accuracy).")
    max_unlabeled: Optional[int] = _f(None, "Use a seeded subset of at most N unlabelled examples (CPU runs).")
    unlabeled_seed: int = _f(42, "Seed of that subset; the stream order and the views use train.seed.")
    augment: AugmentConfig = field(default_factory=AugmentConfig,
                                   metadata={"help": "Weak/strong views (methods/text_augment.py; EDA-style, "
                                             "offline substitute for back-translation)."})
    output_dir: Optional[str] = _f(None, "Run directory (sets the recipe's train.output_dir; empty = keep it).")

    def __post_init__(self):
        if not self.recipe:
            raise ConfigError("recipe: required (a RunConfig YAML with task.objective: verbalizer)")
        if not 0.0 <= self.p_cutoff <= 1.0:
            raise ConfigError(f"p_cutoff: must be in [0, 1], got {self.p_cutoff}")
        if self.lambda_u < 0:
            raise ConfigError(f"lambda_u: must be >= 0, got {self.lambda_u}")
        if self.uratio < 1:
            raise ConfigError(f"uratio: must be >= 1, got {self.uratio}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature: must be > 0, got {self.temperature}")
        if not 0.0 <= self.unsup_warmup <= 1.0:
            raise ConfigError(f"unsup_warmup: must be in [0, 1], got {self.unsup_warmup}")
        if self.unlabeled.count(":") != 1:
            raise ConfigError(f"unlabeled: expected source:split such as pool:train, got {self.unlabeled!r}")
        if self.max_unlabeled is not None and self.max_unlabeled < 1:
            raise ConfigError("max_unlabeled: must be >= 1 (or empty for the whole split)")


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
    from ..config import load_config
    from ..methods.objectives import OBJECTIVES
    from ..tasks import get_task

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


# ---------------------------------------------------------------------------------------------------------------
# the unlabelled loss


def unlabelled_loss(scores_weak: torch.Tensor, scores_trained: torch.Tensor, *, p_cutoff: float,
                    hard_label: bool = True, temperature: float = 0.5):
    """Per-example masked loss, mask and pseudo-labels (see the module docstring).

    ``scores_weak`` give the target q (no gradient flows into them); ``scores_trained`` are the scores whose
    gradient trains the model (the same tensor for pseudo-labelling, the strong view's for FixMatch).
    """
    weak = scores_weak.detach().float()
    probs = weak.softmax(-1)
    confidence, pseudo = probs.max(-1)
    mask = (confidence >= p_cutoff).to(scores_trained.dtype)
    logp = F.log_softmax(scores_trained.float(), -1)
    if hard_label:
        ce = F.nll_loss(logp, pseudo, reduction="none")
    else:
        ce = -((weak / temperature).softmax(-1) * logp).sum(-1)
    return ce * mask, mask, pseudo


class UnlabelledStream:
    """Micro-step m -> its unlabelled batch (weak and, for FixMatch, strong view), a pure function of m."""

    def __init__(self, examples: list[dict], gold: list[int], *, batch_size: int, seed: int, augment: AugmentConfig,
                 strong: bool, encode: Callable, collate: Callable):
        if not examples:
            raise ConfigError("unlabeled: the unlabelled split is empty")
        self.examples, self.gold, self.batch_size, self.seed = examples, gold, batch_size, seed
        self.augment, self.strong, self.encode, self.collate = augment, strong, encode, collate
        self._orders: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self.examples)

    def order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._orders = {epoch: torch.randperm(len(self.examples), generator=gen).tolist()}
        return self._orders[epoch]

    def positions(self, m: int) -> list[tuple[int, int]]:
        """(index into the unlabelled set, pass over it) of the batch of micro-step m."""
        n, out = len(self.examples), []
        for p in range(m * self.batch_size, (m + 1) * self.batch_size):
            out.append((self.order(p // n)[p % n], p // n))
        return out

    def views(self, m: int, view: str) -> list[dict]:
        return [augment_example(self.examples[i], self.augment, view, seed=self.seed, epoch=e, key=i)
                for i, e in self.positions(m)]

    def batch(self, m: int) -> dict:
        where = self.positions(m)
        out = {"index": [i for i, _ in where], "gold": torch.tensor([self.gold[i] for i, _ in where]),
               "weak": self.collate(self.encode(self.views(m, "weak")))}
        if self.strong:
            out["strong"] = self.collate(self.encode(self.views(m, "strong")))
        for name in ("weak", "strong"):
            if name in out:
                out[name].pop("loss_normalizer", None)
        return out


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
    from ..tasks import canonical_label, read_split

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
    from .objectives import OBJECTIVES, model_kind_of

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


def self_train(st: SelfTrainingConfig, *, resume: bool = False, callbacks: list | None = None, model=None,
               tokenizer=None) -> dict:
    """One self-training run: engine.train's run directory and protocol with ``SelfTrainingTrainer``.

    Returns the final metrics (``test_*``, ``eval_*``, ``train_*`` mask ratio and pseudo-label accuracy).
    """
    from .. import engine
    from ..tasks import get_task

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

    return engine.train(cfg, resume=resume, callbacks=callbacks, model=model, tokenizer=tokenizer,
                        extension=extension)


def plot_self_training(metrics_path: Path, out_png: Path) -> Path | None:
    """Losses (left) and mask ratio / pseudo-label accuracy / dev accuracy (right) against optimizer steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..evaluation.plots import read_metrics

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
    tmp = out_png.with_name(f".{out_png.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out_png)
    return out_png
