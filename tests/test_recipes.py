"""Every shipped YAML under configs/ loads with the loader of the command that runs it, names that command in its
header, and (where ../shared/data is present) the data it names can be read, so a recipe that drifted from the
config schema or from the data layout fails here rather than in a user's first run."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
DATA = ROOT / ".." / "shared" / "data"


def _train(path):
    from posttrain.config import load_config

    return load_config(path)


def _pcp(path):
    from posttrain.pipelines.pcp_config import load_pipeline_config

    return load_pipeline_config(path, method="pcp")


def _tapt(path):
    from posttrain.pipelines.pcp_config import load_pipeline_config

    return load_pipeline_config(path, method="tapt")


def _self_train(path):
    from posttrain.pipelines.self_training import load_self_training_config

    return load_self_training_config(path)


def _grid(path):
    from posttrain.pipelines.grid import load_grid

    return load_grid(path, check_data=False)


def _task(path):
    from posttrain.tasks.user import load_task_file

    return load_task_file(path)


# (command in the header, loader) per recipe; a new recipe must be added here (test_every_recipe_is_listed)
RECIPES = {
    **{f"{p.relative_to(ROOT)}": ("train", _train) for p in sorted(CONFIGS.glob("*.yaml"))},
    **{f"configs/{folder}/{p.name}": ("train", _train) for folder in ("dept", "prompt_ft", "stepgame")
       for p in sorted((CONFIGS / folder).glob("*.yaml"))},
    "configs/pcp/sst2_pcp.yaml": ("pcp", _pcp),
    "configs/pcp/sst2_tapt.yaml": ("tapt", _tapt),
    "configs/pcp/sst2_prompt_ft.yaml": ("train", _train),
    "configs/self_training/sst2_fixmatch.yaml": ("self-train", _self_train),
    "configs/self_training/sst2_pseudo_label.yaml": ("self-train", _self_train),
    "configs/self_training/sst2_prompt_ft.yaml": ("train", _train),
    "configs/grid/prompt_ft_cpu.yaml": ("grid", _grid),
    "configs/grid/sst2_rte_example.yaml": ("grid", _grid),
    **{f"configs/tasks/{p.name}": (None, _task) for p in sorted((CONFIGS / "tasks").glob("*.yaml"))},
}


def test_every_recipe_is_listed():
    shipped = {str(p.relative_to(ROOT)) for p in CONFIGS.rglob("*.yaml")}
    assert shipped == set(RECIPES), f"unlisted: {sorted(shipped - set(RECIPES))}"


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_loads_and_names_its_command(recipe):
    command, loader = RECIPES[recipe]
    loader(ROOT / recipe)
    text = (ROOT / recipe).read_text()
    assert text.startswith("#"), "a recipe starts with a comment saying what it is"
    if command:
        assert f"posttrain {command} {recipe}" in text


# recipes whose data ship in ../shared/data (StepGame's training file is made by `posttrain stepgame export-sft`)
SHARED_DATA_RECIPES = sorted(r for r, (c, _) in RECIPES.items()
                             if c == "train" and "runs/stepgame/" not in (ROOT / r).read_text())


@pytest.mark.skipif(not (DATA / "lm_bff_kshot").is_dir(), reason="../shared/data not present")
@pytest.mark.parametrize("recipe", SHARED_DATA_RECIPES)
def test_recipe_data_is_readable(recipe):
    from posttrain.run_data import read_rows

    cfg = _train(ROOT / recipe)
    assert cfg.task.name or cfg.data.train_file
    rows = read_rows(cfg)  # the same parsing a run does before its model loads
    assert rows["train"]
    if cfg.task.name:
        assert all(rows[which] for which in ("eval", "test") if getattr(cfg.task, which))


def test_the_dept_t5_recipe_trains_text_to_text_on_a_t5_model(tmp_path):
    """configs/dept/sst2_dept_t5.yaml (the DePT paper's setting) on a tiny T5 and a tiny SST-2 in the shared-data
    layout: the recipe's DePT shape (m=60, r=30, s=256) on the encoder, the label word on the decoder."""
    import json

    from posttrain.config import load_config
    from posttrain.engine import train
    from test_pcp import write_sst2_data
    from tiny_models import save_tiny

    root = write_sst2_data(tmp_path / "data")
    cfg = load_config(ROOT / "configs/dept/sst2_dept_t5.yaml", [
        f"model.name_or_path={save_tiny('t5', tmp_path / 't5')}", f"task.data_root={root}", "task.test=kshot:test",
        "train.max_steps=4", "train.eval_steps=2", "train.save_steps=2", "train.per_device_batch_size=4",
        "train.progress=false", f"train.output_dir={tmp_path / 'run'}"])
    final = train(cfg)
    meta = json.loads((tmp_path / "run" / "run_meta.json").read_text())
    assert meta["model"]["base_class"] == "T5ForConditionalGeneration" and meta["model"]["family"] == "seq2seq"
    assert meta["adapter"]["type"] == "dept" and meta["adapter"]["rank"] == 30
    d = 32  # the tiny T5's width
    assert meta["model"]["trainable"] == 60 * d + 30 * (256 + d)
    assert 0.0 <= final["test_accuracy"] <= 1.0 and final["eval_output_loss"] > 0
