"""Soft-prompt adapters: save/load round trip, PEFT export, bad adapter files, and training through the engine
(two optimizer groups, small checkpoints, resume == uninterrupted)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from posttrain.callbacks import StopAtStepCallback
from posttrain.errors import ConfigError, ModelLoadError
from posttrain.methods.soft_prompt import SoftPromptModel, load_soft_prompt
from posttrain.methods.soft_prompt_io import (
    CONFIG_NAME, WEIGHTS_NAME, export_peft_prompt_tuning, save_soft_prompt,
)

from conftest import make_tiny_llama
from test_engine import ROWS, config


def _trained_like(base, m=4, r=3, s=16):
    model = SoftPromptModel(base, m, rank=r, max_length=s)
    with torch.no_grad():
        for p in model.trainable_parameters().values():
            p.normal_()
    return model


def test_round_trip_into_a_fresh_base_model(tmp_path, tokenizer):
    model = _trained_like(make_tiny_llama(len(tokenizer)))
    save_soft_prompt(model, tmp_path / "adapter")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == sorted([CONFIG_NAME, WEIGHTS_NAME])
    loaded = load_soft_prompt(make_tiny_llama(len(tokenizer)), tmp_path / "adapter")
    ids = torch.randint(3, 300, (2, 9))
    assert torch.equal(model(input_ids=ids).logits, loaded(input_ids=ids).logits)
    meta = json.loads((tmp_path / "adapter" / CONFIG_NAME).read_text())
    assert (meta["method"], meta["num_virtual_tokens"], meta["dept_rank"], meta["dept_max_length"]) == ("dept", 4, 3, 16)


def test_bad_adapter_files_fail_with_one_line(tmp_path, tokenizer):
    model = _trained_like(make_tiny_llama(len(tokenizer)))
    save_soft_prompt(model, tmp_path / "a")
    weights = load_file(str(tmp_path / "a" / WEIGHTS_NAME))
    fresh = make_tiny_llama(len(tokenizer))

    save_file({**weights, "offset_a": torch.zeros(5, 3)}, str(tmp_path / "a" / WEIGHTS_NAME))
    with pytest.raises(ModelLoadError, match=r"tensor 'offset_a' has shape \(5, 3\), expected \(16, 3\)"):
        load_soft_prompt(fresh, tmp_path / "a")
    save_file({k: v for k, v in weights.items() if k != "offset_b"}, str(tmp_path / "a" / WEIGHTS_NAME))
    with pytest.raises(ModelLoadError, match="missing tensor 'offset_b'"):
        load_soft_prompt(fresh, tmp_path / "a")
    (tmp_path / "a" / WEIGHTS_NAME).write_bytes(b"\x00garbage")
    with pytest.raises(ModelLoadError, match="not a valid safetensors file"):
        load_soft_prompt(fresh, tmp_path / "a")
    (tmp_path / "a" / WEIGHTS_NAME).unlink()
    torch.save(weights, tmp_path / "a" / "soft_prompt.bin")
    with pytest.raises(ModelLoadError, match="pickle files are not loaded"):
        load_soft_prompt(fresh, tmp_path / "a")
    from transformers import LlamaConfig, LlamaForCausalLM

    wide = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=64,
                                        num_hidden_layers=1, num_attention_heads=4))
    save_soft_prompt(model, tmp_path / "b")
    with pytest.raises(ModelLoadError, match="hidden size 32, the base model has 64"):
        load_soft_prompt(wide, tmp_path / "b")


def test_prompt_tuning_exports_to_peft_and_peft_gives_the_same_logits(tmp_path, tokenizer):
    from peft import PeftModel

    model = _trained_like(make_tiny_llama(len(tokenizer)), m=6, r=0)
    export_peft_prompt_tuning(model, tmp_path / "peft")
    peft_model = PeftModel.from_pretrained(make_tiny_llama(len(tokenizer)), str(tmp_path / "peft")).eval()
    ids = torch.randint(3, 300, (2, 7))
    ours = model(input_ids=ids).logits
    theirs = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, 6:]  # PEFT keeps virtual rows
    assert torch.allclose(ours, theirs, atol=1e-5)
    with pytest.raises(ModelLoadError, match="only prompt_tuning exports"):
        export_peft_prompt_tuning(_trained_like(make_tiny_llama(len(tokenizer))), tmp_path / "x")


# --- through the engine ------------------------------------------------------------------------------------------


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


DEPT = ("adapter.type=dept", "adapter.num_virtual_tokens=4", "adapter.dept_rank=2", "adapter.prompt_init=vocab",
        "adapter.prompt_learning_rate=0.3", "adapter.offset_learning_rate=0.01")


def test_dept_trains_with_two_learning_rates_and_saves_only_the_adapter(tmp_path, tiny_model_dir, data_file):
    cfg = config(tmp_path, tiny_model_dir, data_file, "dept", *DEPT, "train.warmup_ratio=0", "train.lr_scheduler=constant")
    final = train_run(cfg)
    groups = final["trainer"].optimizer.param_groups
    assert [(g["name"], g["lr"], g["weight_decay"]) for g in groups] == [("prompt", 0.3, 0.0), ("offset", 0.01, 0.0)]
    run = tmp_path / "dept"
    assert sorted(p.name for p in (run / "final").glob("*.safetensors")) == [WEIGHTS_NAME]
    assert (run / "final" / CONFIG_NAME).is_file() and (run / "final" / "tokenizer_config.json").is_file()
    assert (run / "final" / WEIGHTS_NAME).stat().st_size < 20_000  # P, A, B only: no copy of the frozen model
    meta = json.loads((run / "run_meta.json").read_text())["adapter"]
    assert meta["type"] == "dept" and meta["rank"] == 2 and meta["offset_length"] == 64
    assert meta["trainable_parameters"] == 4 * 32 + 64 * 2 + 2 * 32
    assert meta["offset_positions"] == "real_tokens"


def train_run(cfg, **kw):
    from posttrain.engine import train

    return train(cfg, **kw)


def test_dept_resume_equals_uninterrupted(tmp_path, tiny_model_dir, data_file):
    extra = (*DEPT, "train.save_steps=2", "data.eval_size=0")
    full = config(tmp_path, tiny_model_dir, data_file, "full", *extra)
    cut = config(tmp_path, tiny_model_dir, data_file, "cut", *extra)
    train_run(full)
    train_run(cut, callbacks=[StopAtStepCallback(2)])
    assert (tmp_path / "cut" / "checkpoints" / "checkpoint-2" / WEIGHTS_NAME).is_file()
    train_run(cut, resume=True)
    a = load_file(str(tmp_path / "full" / "final" / WEIGHTS_NAME))
    b = load_file(str(tmp_path / "cut" / "final" / WEIGHTS_NAME))
    assert a.keys() == b.keys() == {"prompt", "offset_a", "offset_b"}
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    assert not torch.equal(a["offset_b"], torch.zeros_like(a["offset_b"]))


def test_fixed_length_left_padding_reproduces_the_reference_setup(tmp_path, tiny_model_dir, data_file):
    cfg = config(tmp_path, tiny_model_dir, data_file, "ref", *DEPT, "adapter.offset_positions=absolute",
                 "data.pad_to_max_length=true", "data.padding_side=left", "train.max_steps=2")
    final = train_run(cfg)
    assert final["global_step"] == 2 and final["eval_output_loss"] > 0


def test_soft_prompt_config_conflicts(tmp_path, tiny_model_dir, data_file):
    with pytest.raises(ConfigError, match="train.packing: not supported with adapter.type=dept"):
        config(tmp_path, tiny_model_dir, data_file, "x", *DEPT, "train.packing=true")
    with pytest.raises(ConfigError, match="adapter.dept_max_length: s=32 is shorter than data.max_length=64"):
        config(tmp_path, tiny_model_dir, data_file, "x", *DEPT, "adapter.dept_max_length=32")
    with pytest.raises(ConfigError, match="adapter.offset_positions: absolute offsets with left padding"):
        config(tmp_path, tiny_model_dir, data_file, "x", *DEPT, "adapter.offset_positions=absolute",
               "data.padding_side=left")
    with pytest.raises(ConfigError, match="adapter.dept_rank: must be >= 1"):
        config(tmp_path, tiny_model_dir, data_file, "x", *DEPT, "adapter.dept_rank=0")


def test_a_dept_run_directory_loads_for_inference(tmp_path, tiny_model_dir, data_file):
    from posttrain.generation import generate, load_for_inference

    cfg = config(tmp_path, tiny_model_dir, data_file, "inf", *DEPT, "train.max_steps=2")
    trained = train_run(cfg)["trainer"].model.eval()
    model, tokenizer, _ = load_for_inference(str(tmp_path / "inf"))
    assert isinstance(model, SoftPromptModel) and model.rank == 2
    ids = torch.randint(3, 300, (2, 6))
    assert torch.equal(model(input_ids=ids).logits, trained(input_ids=ids).logits)
    answers = generate(model, tokenizer, ["What is the capital of France?"], max_new_tokens=4)
    assert len(answers) == 1 and isinstance(answers[0], str)
