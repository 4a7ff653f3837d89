"""dry_run.py (``posttrain train --dry-run``): what a run would train, with nothing trained or written."""

from __future__ import annotations

import json

import pytest

from posttrain.config import load_config
from posttrain.dry_run import format_plan, plan
from test_engine import ROWS


def _cfg(tmp_path, model_dir, *extra):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return load_config(None, [f"model.name_or_path={model_dir}", f"data.train_file={data}", "data.eval_size=4",
                              "data.max_length=64", f"train.output_dir={tmp_path / 'run'}", "train.max_steps=0",
                              "train.num_epochs=2", "train.per_device_batch_size=4", *extra])


def test_plan_reports_groups_lengths_and_steps_and_writes_nothing(tmp_path, tiny_model_dir):
    cfg = _cfg(tmp_path, tiny_model_dir, "adapter.type=dept", "adapter.num_virtual_tokens=4", "adapter.dept_rank=2")
    result = plan(cfg)
    d, s = 32, 64  # the tiny Llama's width; the offset length defaults to data.max_length
    assert [(g["name"], g["parameters"]) for g in result["groups"]] == [("prompt", 4 * d), ("offset", 2 * (s + d))]
    assert result["trainable"] == 4 * d + 2 * (s + d)
    assert result["train"]["rows"] == len(ROWS) - 4 and result["eval"]["rows"] == 4
    assert result["train"]["min"] <= result["train"]["median"] <= result["train"]["max"] <= 64
    assert result["optimizer_steps"] == 2 * 3  # 12 rows / 4 per step, 2 epochs
    assert result["memory_mib"]["gradients_and_adamw"] == round(result["trainable"] * 12 / 2**20, 1)
    assert not (tmp_path / "run").exists()
    text = format_plan(result)
    assert "group offset: 192 parameters at lr 0.0001" in text and text.endswith("nothing trained, nothing written")
    assert "batches: padded (adapter.type dept: each example needs its own soft prompt in front of it)" in text


def test_full_fine_tuning_is_one_group_of_every_parameter(tmp_path, tiny_model_dir):
    cfg = _cfg(tmp_path, tiny_model_dir)
    result = plan(cfg)
    assert result["groups"] == [{"name": "all trainable", "lr": cfg.train.learning_rate,
                                 "parameters": result["parameters"]}]
    assert result["packing"] == {"configured": "auto", "used": True}
    assert "batches: packed (padding-free)" in format_plan(result)


def test_the_cli_dry_run_refuses_what_a_run_refuses(tmp_path, capsys):
    from tiny_models import save_tiny

    from posttrain.cli import main

    model = save_tiny("roberta", tmp_path / "roberta")
    recipe = tmp_path / "r.yaml"
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(ROWS[0]) + "\n")
    recipe.write_text(f"model: {{name_or_path: '{model}'}}\ndata: {{train_file: '{data}'}}\n")
    capsys.readouterr()
    assert main(["train", str(recipe), "--dry-run"]) == 2
    assert "error: data.train_file: instruction data trains a model to generate" in capsys.readouterr().err
