"""callbacks.py: the NaN/inf guard stops a run at the bad step and keeps the last good checkpoint."""

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from posttrain.callbacks import NonFiniteGuardCallback
from posttrain.config import load_config
from posttrain.engine import train
from posttrain.errors import PosttrainError, TrainingError

from conftest import make_tiny_llama
from test_engine import ROWS


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def config(tmp_path, data_file, *extra):
    return load_config(None, [
        f"data.train_file={data_file}", "data.max_length=64", "train.per_device_batch_size=4", "train.max_steps=4",
        "train.learning_rate=1e-3", "train.warmup_ratio=0", "train.progress=false", "train.save_steps=2",
        "train.save_total_limit=5", f"train.output_dir={tmp_path / 'run'}", *extra,
    ])


def poisoned_model(tokenizer, bad_step: int):
    """A tiny Llama whose embedding output becomes NaN on the ``bad_step``-th training forward pass (1-based)."""
    model = make_tiny_llama(len(tokenizer))
    calls = {"n": 0}

    def hook(module, inputs, output):
        if not module.training:
            return output
        calls["n"] += 1
        return output * float("nan") if calls["n"] == bad_step else output

    model.model.embed_tokens.register_forward_hook(hook)
    return model


def checkpoints(tmp_path):
    folder = tmp_path / "run" / "checkpoints"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_nan_loss_stops_at_its_step_and_keeps_the_previous_checkpoint(tmp_path, tokenizer, data_file):
    cfg = config(tmp_path, data_file)
    with pytest.raises(TrainingError) as info:
        train(cfg, callbacks=[NonFiniteGuardCallback()], model=poisoned_model(tokenizer, 3), tokenizer=tokenizer)
    message = str(info.value)
    assert isinstance(info.value, PosttrainError) and "\n" not in message
    assert message.startswith("training stopped at step 3: training loss is nan")
    assert "checkpoint-2 is kept" in message
    assert checkpoints(tmp_path) == ["checkpoint-2"]  # no checkpoint of the bad step (nor later ones)
    assert not (tmp_path / "run" / "final").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "checkpoints" / "checkpoint-2")
    assert all(torch.isfinite(p).all() for p in reloaded.parameters())
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "loss" in r] == [1, 2, 3] and logged[-1]["loss"] == "nan"


def test_nan_between_log_steps_is_not_checkpointed(tmp_path, tokenizer, data_file):
    # logged every 5 steps only: the NaN of step 3 is first seen when checkpoint-4 is about to be written
    cfg = config(tmp_path, data_file, "train.logging_steps=5", "train.max_steps=6")
    with pytest.raises(TrainingError, match=r"^training stopped at steps 3-4: trainable weights are not finite") as info:
        train(cfg, callbacks=[NonFiniteGuardCallback()], model=poisoned_model(tokenizer, 3), tokenizer=tokenizer)
    assert "checkpoint-2 is kept" in str(info.value)
    assert checkpoints(tmp_path) == ["checkpoint-2"]


def test_without_checkpoints_the_message_says_so(tmp_path, tokenizer, data_file):
    cfg = config(tmp_path, data_file, "train.save_steps=0")
    with pytest.raises(TrainingError, match=r"at step 1: training loss is nan.*no checkpoint was saved before it"):
        train(cfg, callbacks=[NonFiniteGuardCallback()], model=poisoned_model(tokenizer, 1), tokenizer=tokenizer)


def test_finite_run_is_untouched(tmp_path, tokenizer, data_file):
    cfg = config(tmp_path, data_file, "train.max_steps=2")
    final = train(cfg, callbacks=[NonFiniteGuardCallback()], model=make_tiny_llama(len(tokenizer)), tokenizer=tokenizer)
    assert final["global_step"] == 2 and math.isfinite(final["train_loss"])
    assert (tmp_path / "run" / "final").is_dir() and checkpoints(tmp_path) == ["checkpoint-2"]


def test_sample_generations_at_each_evaluation_survive_a_resume(tmp_path, tiny_model_dir, capsys):
    import json as _json

    from posttrain.callbacks import StopAtStepCallback
    from posttrain.config import load_config
    from posttrain.engine import train
    from posttrain.generation import generate
    from test_engine import ROWS

    data = tmp_path / "train.jsonl"
    data.write_text("".join(_json.dumps(r) + "\n" for r in ROWS))

    def cfg(name):
        return load_config(None, [f"model.name_or_path={tiny_model_dir}", f"data.train_file={data}",
                                  "data.eval_size=4", "data.max_length=64", "train.max_steps=4", "train.eval_steps=2",
                                  "train.save_steps=2", "train.per_device_batch_size=4", "train.learning_rate=1e-2",
                                  "train.progress=false", "train.sample_prompts=[Say hi., Name a colour.]",
                                  "train.sample_max_new_tokens=5", f"train.output_dir={tmp_path / name}"])

    whole = train(cfg("whole"))
    records = [_json.loads(line) for line in (tmp_path / "whole" / "samples.jsonl").read_text().splitlines()]
    assert [(r["step"], r["prompt"]) for r in records] == [(2, "Say hi."), (2, "Name a colour."), (4, "Say hi."),
                                                          (4, "Name a colour.")]
    model, tokenizer = whole["trainer"].model, whole["trainer"].processing_class
    assert [r["answer"] for r in records[2:]] == generate(model, tokenizer, ["Say hi.", "Name a colour."],
                                                          max_new_tokens=5)
    assert "[sample, step 4] 'Say hi.' -> " in capsys.readouterr().out
    train(cfg("cut"), callbacks=[StopAtStepCallback(2)])
    train(cfg("cut"), resume=True)
    assert (tmp_path / "cut" / "samples.jsonl").read_text() == (tmp_path / "whole" / "samples.jsonl").read_text()
