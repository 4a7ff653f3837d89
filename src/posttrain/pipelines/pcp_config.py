"""The PCP/TAPT pipeline's config (``PCPConfig``) and its loading from YAML + ``key=value`` overrides.

Recipe paths are resolved against the current directory, else the config file's folder; every error is one line
naming the file and the key. The stages that use it: pipelines/pcp.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from ..config import build_dataclass as _build, help_field as _f, load_config, read_yaml_file, set_dotted
from ..config.fields import check_bounds
from ..errors import ConfigError
from .continued_pretraining import ContinuedPretrainingConfig


@dataclass
class PCPConfig:
    method: Literal["pcp", "tapt"] = _f("pcp", "pcp: stages 1-5 (teacher, pseudo-labels, templated corpus, CPT, "
                                        "final FT); tapt: stages 3-5 on the raw text. Set by the command.")
    task: str = _f("SST-2", "Declared task (`posttrain tasks list`) or a task YAML; forced into both recipes.")
    data_root: Optional[str] = _f(None, "Data root ($POSTTRAIN_DATA or ../shared/data when empty); forced into "
                                  "both recipes.")
    seed: int = _f(13, "LM-BFF k-shot seed (13, 21, 42, 87, 100); forced into both recipes as task.seed.",
                   bounds="[0, 4294967295]")
    output_dir: str = _f("runs/pcp", "Pipeline directory: stage<N>_*/ folders, stage<N>.done.json, summary.json.")
    teacher_recipe: Optional[str] = _f(None, "Stage 1: RunConfig YAML of the prompt-FT teacher on the k-shot set "
                                       "(relative to the current directory, else to this file). PCP only.")
    teacher_overrides: list = _f([], "Stage 1: section.key=value overrides applied to the teacher recipe.")
    teacher_run: Optional[str] = _f(None, "Stage 1: a finished prompt-FT run directory (config.yaml, final/, "
                                    "final_metrics.json) of the same task and seed to use as the teacher instead of "
                                    "training one from teacher_recipe (e.g. the prompt-FT baseline you already ran).")
    final_recipe: Optional[str] = _f(None, "Stage 5: RunConfig YAML of the final fine-tuning (prompt-FT or CLS-FT); "
                                     "empty = the teacher recipe. Its model is also the CPT model by default.")
    final_overrides: list = _f([], "Stage 5: section.key=value overrides (model.name_or_path is set to stage 4).")
    max_pool_train: Optional[int] = _f(None, "Use a seeded subset of at most N texts of the train pool (CPU runs).",
                                       bounds="[1, inf)")
    max_pool_dev: Optional[int] = _f(None, "Use a seeded subset of at most N texts of the dev pool (CPU runs).",
                                     bounds="[1, inf)")
    pool_seed: int = _f(42, "Seed of the pool subsets (the same texts for PCP and TAPT).", bounds="[0, 4294967295]")
    corpus: Literal["hard", "soft"] = _f("hard", "PCP corpus layout: hard = the task's template with the pseudo-"
                                         "label word; soft = '<x> It was <word>' / '<x1> <word> , <x2>' (DART).")
    label_batch_size: int = _f(32, "Stage 2: texts per scoring batch.", bounds="[1, inf)")
    cpt: ContinuedPretrainingConfig = field(
        default_factory=ContinuedPretrainingConfig,
        metadata={"help": "Stage 4: continued pre-training (pipelines/continued_pretraining.py); train_file, eval_file "
                  "and output_dir are set by the pipeline."})

    def __post_init__(self):
        check_bounds(self)
        if self.method == "pcp" and not (self.teacher_recipe or self.teacher_run):
            raise ConfigError("teacher_recipe: required for PCP (the prompt-FT recipe of stage 1), unless "
                              "teacher_run names a trained teacher")
        if self.method == "tapt" and self.teacher_run:
            raise ConfigError("teacher_run: TAPT has no teacher; remove it")
        if self.method == "tapt" and self.teacher_recipe and not self.final_recipe:
            raise ConfigError("final_recipe: TAPT has no teacher; name the fine-tuning recipe as final_recipe")
        if not (self.final_recipe or self.teacher_recipe):
            raise ConfigError("final_recipe: required (the fine-tuning recipe of stage 5)")
        for key in ("train_file", "eval_file"):
            if getattr(self.cpt, key):
                raise ConfigError(f"cpt.{key}: set by the pipeline (stage3_corpus/); remove it")


# ---------------------------------------------------------------------------------------------------------------
# config loading: YAML + key=value overrides, one-line errors naming the file and the key




def load_pipeline_config(path, overrides: list[str] | None = None, method: str | None = None) -> PCPConfig:
    """A PCP/TAPT config from YAML + overrides; recipe paths resolved against the cwd, else the file's folder."""
    raw = read_yaml_file(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys (task, teacher_recipe, cpt, ...)")
    if method is not None:
        if raw.get("method", method) != method:
            raise ConfigError(f"{path}: method is {raw['method']}; run `posttrain {raw['method']} {path}`")
        raw["method"] = method
    raw = set_dotted(raw, overrides, 'e.g. cpt.max_steps=10')
    for key in ("teacher_recipe", "final_recipe"):
        value = raw.get(key)
        if isinstance(value, str) and value and not Path(value).is_file() and (Path(path).parent / value).is_file():
            raw[key] = str(Path(path).parent / value)
    return _build(PCPConfig, raw, str(path))


def load_cpt_config(path, overrides: list[str] | None = None) -> ContinuedPretrainingConfig:
    return _build(ContinuedPretrainingConfig, set_dotted(read_yaml_file(path), overrides, 'e.g. cpt.max_steps=10'), str(path))


def recipe_config(recipe: str, user: list[str], forced: list[str], where: str):
    """A stage's RunConfig: the recipe, then the user's overrides, then the pipeline's (which win)."""
    try:
        return load_config(recipe, [*user, *forced])
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
