"""engine.py: end-to-end training on a tiny local model; resume == uninterrupted; accumulation == big batch."""

import json

import pytest
import torch
from safetensors.torch import load_file

from posttrain.callbacks import StopAtStepCallback
from posttrain.config import load_config
from posttrain.engine import train
from posttrain.errors import ConfigError, DataError

ROWS = [
    {"messages": [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}]},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Write a poem about the sea."},
                  {"role": "assistant", "content": "The sea is wide and blue."}]},
    {"messages": [{"role": "user", "content": "Translate to French: good morning."}, {"role": "assistant", "content": "Bonjour."}]},
    {"messages": [{"role": "user", "content": "Summarize the text below in one sentence, please."},
                  {"role": "assistant", "content": "The quick brown fox jumps over the lazy dog."},
                  {"role": "user", "content": "And?"}, {"role": "assistant", "content": "0 1 2 3 4 5 6 7 8 9"}]},
] * 4


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def config(tmp_path, model_dir, data_file, name, *extra):
    return load_config(None, [
        f"model.name_or_path={model_dir}", f"data.train_file={data_file}", "data.eval_size=4", "data.max_length=64",
        "train.per_device_batch_size=4", "train.max_steps=4", "train.learning_rate=1e-2", "train.warmup_ratio=0.25",
        "train.progress=false", f"train.output_dir={tmp_path / name}", *extra,
    ])


def final_weights(run_dir):
    files = sorted((run_dir / "final").glob("*.safetensors"))
    assert files, f"no safetensors in {run_dir / 'final'}"
    return load_file(str(files[0]))


def assert_same_weights(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=atol, rtol=0), key


def test_run_directory_contents(tmp_path, tiny_model_dir, data_file):
    cfg = config(tmp_path, tiny_model_dir, data_file, "run", "loss.mode=instruction_and_output",
                 "loss.im_mask=reference_code", "train.eval_steps=2", "train.logging_steps=1")
    final = train(cfg)
    run = tmp_path / "run"
    for name in ("config.yaml", "run_meta.json", "metrics.jsonl", "loss_curve.png", "final_metrics.json"):
        assert (run / name).is_file(), name
    meta = json.loads((run / "run_meta.json").read_text())
    assert meta["loss"]["loss_mode"] == "instruction_and_output" and meta["loss"]["im_mask"] == "reference_code"
    assert meta["optimizer"]["betas"] == [0.9, 0.98]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert sum("eval_output_loss" in r for r in records) >= 2
    assert final["eval_output_loss"] > 0 and final["global_step"] == 4
    assert load_config(run / "config.yaml") == cfg


def test_resume_equals_uninterrupted(tmp_path, tiny_model_dir, data_file):
    extra = ("train.save_steps=2", "data.eval_size=0")
    full = config(tmp_path, tiny_model_dir, data_file, "full", *extra)
    cut = config(tmp_path, tiny_model_dir, data_file, "cut", *extra)
    full.data.eval_size = cut.data.eval_size = 0
    train(full)
    train(cut, callbacks=[StopAtStepCallback(2)])
    assert not (tmp_path / "cut" / "final").exists()
    assert (tmp_path / "cut" / "checkpoints" / "checkpoint-2").is_dir()
    train(cut, resume=True)
    assert_same_weights(final_weights(tmp_path / "full"), final_weights(tmp_path / "cut"))
    steps = [json.loads(l)["step"] for l in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(l)]
    assert steps == [1, 2, 3, 4]
    full_final = json.loads((tmp_path / "full" / "final_metrics.json").read_text())
    cut_final = json.loads((tmp_path / "cut" / "final_metrics.json").read_text())
    assert cut_final["train_loss"] == pytest.approx(full_final["train_loss"], rel=1e-5)  # all 4 steps, not 2


def test_resume_after_the_last_checkpoint_keeps_train_loss_and_no_duplicate_records(tmp_path, tiny_model_dir,
                                                                                   data_file):
    """Killed after its final records were logged (checkpoint-4 = the last step): resuming trains nothing (the
    Trainer would run a 5th step), reports
    the whole run's train loss (not 0 from zero steps) and logs the final evaluation once."""
    cfg = config(tmp_path, tiny_model_dir, data_file, "run", "train.save_steps=2", "train.eval_steps=2")
    first = train(cfg)
    import shutil

    shutil.rmtree(tmp_path / "run" / "final")
    (tmp_path / "run" / "final_metrics.json").unlink()
    again = train(cfg, resume=True)
    assert again["train_loss"] == pytest.approx(first["train_loss"], rel=1e-6)
    records = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sum("train_runtime" in r for r in records) <= 1  # the first run's end-of-training summary was dropped
    assert [r["step"] for r in records if "eval_output_loss" in r] == [2, 4, 4]  # periodic 2, 4 and the final one
    assert again["global_step"] == 4 and [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]


def test_accumulation_and_packing_match_one_big_batch(tmp_path, tiny_model_dir, data_file):
    # fp32: the three batch shapes agree to float rounding (bf16 autocast rounds each shape differently)
    base = ("data.eval_size=0", "train.max_steps=2", "loss.mode=instruction_and_output", "train.mixed_precision=none")
    big = config(tmp_path, tiny_model_dir, data_file, "big", *base)
    acc = config(tmp_path, tiny_model_dir, data_file, "acc", *base, "train.per_device_batch_size=2",
                 "train.gradient_accumulation_steps=2")
    packed = config(tmp_path, tiny_model_dir, data_file, "packed", *base, "train.packing=true")
    for cfg in (big, acc, packed):
        train(cfg)
    ref = final_weights(tmp_path / "big")
    assert_same_weights(ref, final_weights(tmp_path / "acc"), atol=1e-5)
    assert_same_weights(ref, final_weights(tmp_path / "packed"), atol=1e-5)


def test_loss_modes_train_differently(tmp_path, tiny_model_dir, data_file):
    it = config(tmp_path, tiny_model_dir, data_file, "it", "data.eval_size=0", "train.max_steps=1", "train.warmup_ratio=0")
    im = config(tmp_path, tiny_model_dir, data_file, "im", "data.eval_size=0", "train.max_steps=1", "train.warmup_ratio=0",
                "loss.mode=instruction_and_output")
    train(it)
    train(im)
    a, b = final_weights(tmp_path / "it"), final_weights(tmp_path / "im")
    assert any(not torch.allclose(a[k], b[k]) for k in a)


def test_lora_trains_only_the_adapter(tmp_path, tiny_model_dir, data_file):
    cfg = config(tmp_path, tiny_model_dir, data_file, "lora", "adapter.type=lora", "adapter.lora_r=4",
                 "data.eval_size=0")
    final = train(cfg)
    model = final["trainer"].model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert (tmp_path / "lora" / "final" / "adapter_model.safetensors").is_file()
    adapter = load_file(str(tmp_path / "lora" / "final" / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapter.items())  # B moved away from its zero init
    meta = json.loads((tmp_path / "lora" / "run_meta.json").read_text())
    wrapped = {n.split(".")[-2] for n, _ in model.named_modules() if n.endswith(".lora_A")}
    assert sorted(wrapped) == sorted(set(meta["adapter"]["resolved_target_modules"]))  # what LoRA really wrapped
    assert meta["model"]["family"] == "causal" and meta["model"]["base_class"] == "LlamaForCausalLM"


def test_refuses_to_overwrite_and_resume_without_checkpoint(tmp_path, tiny_model_dir, data_file):
    cfg = config(tmp_path, tiny_model_dir, data_file, "again", "data.eval_size=0", "train.save_steps=2")
    with pytest.raises(ConfigError, match="no checkpoint under"):
        train(cfg, resume=True)
    train(cfg)
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train(cfg)


def test_bad_data_file_fails_before_the_model_loads(tmp_path, monkeypatch):
    """The data are read first: a broken file is reported without loading weights (none exist here)."""
    import posttrain.models

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the data were checked")

    monkeypatch.setattr(posttrain.models, "load_model_and_tokenizer", no_load)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ROWS[0]) + "\n{not json\n")
    cfg = config(tmp_path, tmp_path / "no-model", bad, "bad")
    with pytest.raises(DataError, match=r"bad\.jsonl:2"):
        train(cfg)
    assert not (tmp_path / "bad").exists()  # nothing half-written


def test_a_finished_run_is_never_overwritten_without_overwrite(tmp_path, tiny_model_dir, data_file, monkeypatch):
    """Training again into a finished run's directory is refused before the model loads, and nothing of the run
    changes; ``overwrite=True`` replaces it with a run of its own (issue: data loss with save_steps 0)."""
    import posttrain.models

    cfg = config(tmp_path, tiny_model_dir, data_file, "done", "train.max_steps=2")
    train(cfg)
    run = tmp_path / "done"
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    real_loader = posttrain.models.load_model_and_tokenizer

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded before the run directory was checked")

    monkeypatch.setattr(posttrain.models, "load_model_and_tokenizer", no_load)
    with pytest.raises(ConfigError, match=r"train.output_dir: .*done holds a finished run; pass --overwrite"):
        train(config(tmp_path, tiny_model_dir, data_file, "done", "train.max_steps=3"))
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before

    monkeypatch.setattr(posttrain.models, "load_model_and_tokenizer", real_loader)
    final = train(config(tmp_path, tiny_model_dir, data_file, "done", "train.max_steps=3"), overwrite=True)
    assert final["global_step"] == 3
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[0] <= 1 and max(steps) == 3  # the old run's records are gone
    assert "max_steps: 3" in (run / "config.yaml").read_text()


def test_an_unfinished_run_without_checkpoints_is_refused_too(tmp_path, tiny_model_dir, data_file):
    run = tmp_path / "partial"
    run.mkdir()
    (run / "config.yaml").write_text("train: {}\n")
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    with pytest.raises(ConfigError, match=r"holds an earlier run \(config.yaml, metrics.jsonl\); pass --overwrite"):
        train(config(tmp_path, tiny_model_dir, data_file, "partial"))
    assert (run / "metrics.jsonl").read_text() == '{"step": 1, "loss": 1.0}\n'
