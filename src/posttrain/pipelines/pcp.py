"""PCP and TAPT as pipelines of stages with files between them (``posttrain pcp`` / ``posttrain tapt``).

PCP, Shi & Lipani, "Don't Stop Pretraining? Make Prompt-based Fine-tuning Powerful Learner" (NeurIPS 2023):

    1 teacher        prompt-FT on the k-shot set (``engine.train`` of a RunConfig recipe)   -> stage1_teacher/ (a run)
    2 pseudo_labels  p_teacher(y | x) for every unlabelled pool text x (train and dev pools) -> stage2_pseudo_labels/
                     predictions_{train,dev}.jsonl + summary.json (pseudo-label accuracy where gold labels exist)
    3 corpus         template(x) with v(argmax_y p) in the label slot, one line per example  -> stage3_corpus/
                     {train,dev}.txt (methods/pcp_corpus.py; TAPT: the raw text)
    4 cpt            continued pre-training on train.txt, best checkpoint by dev.txt loss     -> stage4_cpt/best/
    5 final          prompt-FT (or CLS-FT) of the final recipe from stage4_cpt/best           -> stage5_final/ (a run)

TAPT (Gururangan et al. 2020, the baseline of Shi et al., ACL Findings 2023) is stages 3-5 with the raw corpus.

Each stage reads only files of earlier stages, and writes ``stage<N>.done.json`` (outputs, settings, timing) after its
outputs are complete. A stage with its marker is skipped (an error if its settings changed since: pass ``--force N``);
a stage without one is redone, continuing from its last checkpoint where it trains. When a stage runs, the markers
and directories of every later stage are removed, since their inputs change. ``--force N`` redoes stage N from
scratch (and hence every later stage).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import torch

from ..errors import ConfigError
from ..io_utils import atomic_write_json, atomic_write_text, iter_json_lines
from .pcp_config import PCPConfig, load_cpt_config, load_pipeline_config, recipe_config  # noqa: F401 (re-exported)
from ..config import load_config, ModelConfig, to_dict, write_config
from ..engine import last_checkpoint, train
from ..generation import load_for_inference
from ..methods.objectives import OBJECTIVES, unlabelled_scorer
from ..methods.pcp_corpus import pcp_line, tapt_line, write_corpus
from ..methods.rank_classification import build_task_scorer
from ..tasks import get_task, label_words, read_split
from .continued_pretraining import continued_pretraining

STAGES = {1: "teacher", 2: "pseudo_labels", 3: "corpus", 4: "cpt", 5: "final"}
DIRS = {n: f"stage{n}_{name}" for n, name in STAGES.items()}
METHOD_STAGES = {"pcp": (1, 2, 3, 4, 5), "tapt": (3, 4, 5)}
_IGNORED_SETTINGS = {"progress", "label_batch_size"}  # do not change any output


# ---------------------------------------------------------------------------------------------------------------
# stage 2: the teacher's label distribution on the pool


def teacher_label_probs(run_dir, task, rows: list[dict], *, batch_size: int = 32,
                        progress: bool | str = "pseudo-labelling") -> torch.Tensor:
    """(N, C) p_teacher(y | x) for ``rows``: softmax over the teacher run's label-word scores (rank classification
    with the run's own form, max length and label-token setting; ``TaskScorer.label_scores``)."""
    run_cfg = load_config(Path(run_dir) / "config.yaml")
    if run_cfg.task.name and get_task(run_cfg.task.name).name != task.name:
        raise ConfigError(f"{run_dir}: the teacher was trained on {run_cfg.task.name}, not {task.name}")
    model, tokenizer, _ = load_for_inference(str(run_dir))
    if run_cfg.task.objective in OBJECTIVES:  # prompt-based FT (verbalizer) or CLS teachers: their own scores
        scorer = unlabelled_scorer(run_cfg, tokenizer, model, task, rows, batch_size=batch_size)
        return torch.softmax(scorer.label_scores(model, progress=progress).float(), dim=-1)
    scorer = build_task_scorer(tokenizer, task, rows, form=run_cfg.task.form, max_length=run_cfg.data.max_length,
                               label_tokens=run_cfg.task.label_tokens, batch_size=batch_size)
    return torch.softmax(scorer.label_scores(model, progress=progress).float(), dim=-1)


def prediction_records(task, rows: list[dict], probs: torch.Tensor) -> list[dict]:
    words = label_words(task)
    out = []
    for row, p in zip(rows, probs):
        j = int(p.argmax())
        out.append({"idx": row.get("idx"), "text_a": row.get("text_a"), "text_b": row.get("text_b"),
                    "label": row.get("label"), "pred": task.labels[j], "pred_word": words[j],
                    "confidence": float(p[j]), "probs": [float(x) for x in p]})
    return out


def pseudo_label_summary(task, records: list[dict]) -> dict:
    gold = [r for r in records if r["label"] is not None]
    return {
        "examples": len(records),
        "with_gold_label": len(gold),
        "accuracy_vs_gold": (sum(r["pred"] == r["label"] for r in gold) / len(gold)) if gold else None,
        "pred_counts": {y: sum(r["pred"] == y for r in records) for y in task.labels},
        "gold_counts": {y: sum(r["label"] == y for r in gold) for y in task.labels} if gold else None,
        "mean_confidence": sum(r["confidence"] for r in records) / max(len(records), 1),
    }


def pool_rows(cfg: PCPConfig, task, split: str) -> list[dict]:
    """The pool split, or a seeded subset of it (the same for PCP and TAPT, kept in file order)."""
    rows = read_split(task, "pool", split, root=cfg.data_root)
    cap = cfg.max_pool_train if split == "train" else cfg.max_pool_dev
    if cap and cap < len(rows):
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(cfg.pool_seed)).tolist()
        rows = [rows[i] for i in sorted(order[:cap])]
    return rows


# ---------------------------------------------------------------------------------------------------------------
# stages


def _forced(cfg: PCPConfig, run_dir: Path) -> list[str]:
    forced = [f"task.name={cfg.task}", f"task.seed={cfg.seed}", f"train.output_dir={run_dir}"]
    return forced + ([f"task.data_root={cfg.data_root}"] if cfg.data_root else [])


def _final_recipe(cfg: PCPConfig, out: Path):
    recipe = cfg.final_recipe or cfg.teacher_recipe
    best = out / DIRS[4] / "best"
    forced = _forced(cfg, out / DIRS[5]) + [f"model.name_or_path={best}", "model.gguf_file="]
    return recipe_config(recipe, cfg.final_overrides, forced, "final_recipe")


def _settings(cfg: PCPConfig, n: int, out: Path) -> dict:
    """What a stage's outputs depend on (besides earlier stages' files); compared with its marker."""
    if n == 1 and cfg.teacher_run:
        return {"teacher_run": str(Path(cfg.teacher_run).resolve()), "config": to_dict(_checked_teacher_run(cfg))}
    if n == 1:
        return to_dict(recipe_config(cfg.teacher_recipe, cfg.teacher_overrides, _forced(cfg, out / DIRS[1]),
                                     "teacher_recipe"))
    pool = {"task": cfg.task, "data_root": cfg.data_root, "max_pool_train": cfg.max_pool_train,
            "max_pool_dev": cfg.max_pool_dev, "pool_seed": cfg.pool_seed}
    if n == 2:
        return pool
    if n == 3:
        return {**pool, "layout": "raw" if cfg.method == "tapt" else cfg.corpus}
    if n == 4:
        cpt, model = _cpt_config(cfg, out)
        return {"cpt": dataclasses.asdict(cpt), "model": to_dict(model)}
    return to_dict(_final_recipe(cfg, out))


def _cpt_config(cfg: PCPConfig, out: Path):
    corpus = out / DIRS[3]
    cpt = dataclasses.replace(cfg.cpt, train_file=str(corpus / "train.txt"), eval_file=str(corpus / "dev.txt"),
                              output_dir=str(out / DIRS[4]))
    if cfg.cpt.model:
        model = ModelConfig(name_or_path=cfg.cpt.model, head=cfg.cpt.head)
    else:  # the model the final fine-tuning starts from, as an LM (a CLS-FT recipe's head is not the CPT head)
        recipe = cfg.final_recipe or cfg.teacher_recipe
        model = dataclasses.replace(recipe_config(recipe, cfg.final_overrides, [], "final_recipe").model,
                                    head=cfg.cpt.head)
    return cpt, model


def teacher_dir(cfg: PCPConfig, out: Path) -> Path:
    return Path(cfg.teacher_run) if cfg.teacher_run else out / DIRS[1]


def _checked_teacher_run(cfg: PCPConfig):
    """The RunConfig of ``teacher_run``, after checking it is finished and was trained on this task and seed."""
    run_dir = Path(cfg.teacher_run)
    for need in ("config.yaml", "final_metrics.json", "final"):
        if not (run_dir / need).exists():
            raise ConfigError(f"teacher_run: {run_dir / need} is missing (expected a finished posttrain run)")
    run_cfg = load_config(run_dir / "config.yaml")
    if not run_cfg.task.name or get_task(run_cfg.task.name).name != get_task(cfg.task).name:
        raise ConfigError(f"teacher_run: {run_dir} was trained on task {run_cfg.task.name}, not {cfg.task}")
    if run_cfg.task.seed != cfg.seed:
        raise ConfigError(f"teacher_run: {run_dir} was trained on k-shot seed {run_cfg.task.seed}, not {cfg.seed}")
    return run_cfg


def _run_outputs(run_dir: Path, final: dict) -> dict:
    """A training stage's marker outputs: the run, its final model and its eval/test metrics."""
    return {"run_dir": str(run_dir), "model": str(run_dir / "final"),
            "metrics": {k: v for k, v in final.items() if k.startswith("test_") or k.startswith("eval_")}}


def _trained_teacher(cfg: PCPConfig) -> dict:
    """Stage 1 with ``teacher_run``: nothing to train; the run's files are the stage's outputs (checked by
    ``_settings``, which ``run_pipeline`` computes before running the stage)."""
    run_dir = Path(cfg.teacher_run)
    final = json.loads((run_dir / "final_metrics.json").read_text(encoding="utf-8"))
    return _run_outputs(run_dir, final)


def stage_teacher(cfg: PCPConfig, out: Path) -> dict:
    if cfg.teacher_run:
        return _trained_teacher(cfg)
    run_dir = out / DIRS[1]
    run_cfg = recipe_config(cfg.teacher_recipe, cfg.teacher_overrides, _forced(cfg, run_dir), "teacher_recipe")
    resume = last_checkpoint(run_dir) is not None  # an unfinished stage: continue it, or start it over
    final = train(run_cfg, resume=resume, overwrite=not resume)
    return _run_outputs(run_dir, final)


def stage_pseudo_labels(cfg: PCPConfig, out: Path) -> dict:
    task = get_task(cfg.task)
    rows = {split: pool_rows(cfg, task, split) for split in ("train", "dev")}
    probs = teacher_label_probs(teacher_dir(cfg, out), task, rows["train"] + rows["dev"],
                                batch_size=cfg.label_batch_size,
                                progress="pseudo-labelling" if cfg.cpt.progress else False)
    folder = out / DIRS[2]
    summary, outputs, start = {}, {}, 0
    for split, split_rows in rows.items():
        records = prediction_records(task, split_rows, probs[start : start + len(split_rows)])
        start += len(split_rows)
        path = folder / f"predictions_{split}.jsonl"
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        summary[split] = pseudo_label_summary(task, records)
        outputs[f"predictions_{split}"] = str(path)
    atomic_write_json(folder / "summary.json", summary)
    return {**outputs, "summary": summary}


def stage_corpus(cfg: PCPConfig, out: Path) -> dict:
    task = get_task(cfg.task)
    folder = out / DIRS[3]
    meta = {"layout": "raw" if cfg.method == "tapt" else cfg.corpus, "task": task.name}
    for split in ("train", "dev"):
        if cfg.method == "tapt":
            lines = [tapt_line(task, row) for row in pool_rows(cfg, task, split)]
        else:
            records = [r for _, r in iter_json_lines(out / DIRS[2] / f"predictions_{split}.jsonl")]
            lines = [pcp_line(task, r, r["pred"], cfg.corpus) for r in records]
        meta[split] = write_corpus(folder / f"{split}.txt", lines)
    atomic_write_json(folder / "corpus_meta.json", meta)
    return meta


def stage_cpt(cfg: PCPConfig, out: Path) -> dict:
    cpt, model_cfg = _cpt_config(cfg, out)
    final = continued_pretraining(cpt, model_config=model_cfg)
    return {"run_dir": cpt.output_dir, "model": str(Path(cpt.output_dir) / "best"),
            "metrics": {k: final.get(k) for k in ("objective", "start_eval_loss", "eval_loss", "best_step",
                                                  "global_step")}}


def stage_final(cfg: PCPConfig, out: Path) -> dict:
    run_cfg = _final_recipe(cfg, out)
    run_dir = out / DIRS[5]
    resume = last_checkpoint(run_dir) is not None  # an unfinished stage: continue it, or start it over
    final = train(run_cfg, resume=resume, overwrite=not resume)
    return _run_outputs(run_dir, final)


RUNNERS = {1: stage_teacher, 2: stage_pseudo_labels, 3: stage_corpus, 4: stage_cpt, 5: stage_final}


# ---------------------------------------------------------------------------------------------------------------
# the pipeline


def marker_path(out: Path, n: int) -> Path:
    return Path(out) / f"stage{n}.done.json"


def _strip(settings):
    if isinstance(settings, dict):
        return {k: _strip(v) for k, v in settings.items() if k not in _IGNORED_SETTINGS}
    return settings


def _same_settings(old, new) -> bool:
    """Equal, except that keys only ``new`` has are ignored: config fields added by a later posttrain version,
    which a stage done before ran without (i.e. with the behaviour their defaults keep)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return all(key in new and _same_settings(old[key], new[key]) for key in old)
    return old == new


def _first_difference(old, new, prefix="") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            if key in old and not _same_settings(old.get(key), new.get(key)):
                return _first_difference(old.get(key), new.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.')}: {old!r} -> {new!r}"


def _clear(out: Path, n: int) -> None:
    marker_path(out, n).unlink(missing_ok=True)
    shutil.rmtree(out / DIRS[n], ignore_errors=True)


def parse_stages(text: str | None, method: str) -> list[int]:
    valid = METHOD_STAGES[method]
    if not text:
        return list(valid)
    chosen: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            chosen.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ConfigError(f"--stages {text!r}: expected stage numbers such as 1-5, 3 or 2,4-5") from None
    bad = sorted(chosen - set(valid))
    if bad:
        raise ConfigError(f"--stages: {method} has stages {valid[0]}-{valid[-1]}, not {bad[0]}")
    return sorted(chosen)


def run_pipeline(cfg: PCPConfig, *, stages: list[int] | None = None, force: int | None = None,
                 log=print) -> dict:
    """Run the selected stages of ``cfg.method`` in order, skipping those whose marker says they are done."""
    out = Path(cfg.output_dir)
    valid = METHOD_STAGES[cfg.method]
    stages = sorted(stages or valid)
    if force is not None:
        if force not in valid:
            raise ConfigError(f"--force: {cfg.method} has stages {valid[0]}-{valid[-1]}, not {force}")
        if force not in stages:
            raise ConfigError(f"--force {force}: stage {force} is not among the selected stages {stages}")
    out.mkdir(parents=True, exist_ok=True)
    write_config(cfg, out / "pipeline_config.yaml")
    if force is not None:
        _clear(out, force)
    for n in stages:
        settings = _strip(json.loads(json.dumps(_settings(cfg, n, out), default=str)))
        marker = marker_path(out, n)
        if marker.is_file():
            done = json.loads(marker.read_text(encoding="utf-8"))
            if not _same_settings(done.get("settings"), settings):
                raise ConfigError(f"stage {n} ({STAGES[n]}) in {out} was done with other settings "
                                  f"({_first_difference(done.get('settings'), settings)}); pass --force {n} or "
                                  "choose another output_dir")
            log(f"stage {n} ({STAGES[n]}): done before, skipped ({marker})")
            continue
        previous = [m for m in valid if m < n]
        if previous and not marker_path(out, previous[-1]).is_file():
            raise ConfigError(f"stage {n} ({STAGES[n]}) needs stage {previous[-1]} ({STAGES[previous[-1]]}) done "
                              f"first ({marker_path(out, previous[-1])} is missing); run --stages "
                              f"{previous[0]}-{n}")
        for later in (m for m in valid if m > n):  # their inputs are about to change
            _clear(out, later)
        log(f"stage {n} ({STAGES[n]}): running -> {out / DIRS[n]}")
        started = time.time()
        outputs = RUNNERS[n](cfg, out)
        atomic_write_json(marker, {
            "stage": n, "name": STAGES[n], "outputs": outputs, "settings": settings,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "seconds": round(time.time() - started, 1),
        })
        log(f"stage {n} ({STAGES[n]}): done in {time.time() - started:.0f} s")
    summary = collect_summary(out, cfg.method)
    atomic_write_json(out / "summary.json", summary)
    return summary


def collect_summary(out: Path, method: str) -> dict:
    """The headline numbers of every finished stage, read back from their files."""
    summary: dict = {"method": method, "output_dir": str(out)}
    for n in METHOD_STAGES[method]:
        marker = marker_path(out, n)
        if marker.is_file():
            done = json.loads(marker.read_text(encoding="utf-8"))
            summary[STAGES[n]] = {"seconds": done.get("seconds"), **{
                k: v for k, v in done["outputs"].items() if k in ("metrics", "summary", "train", "dev")}}
    return summary
