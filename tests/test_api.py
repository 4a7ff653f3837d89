"""api.py (re-exported by ``posttrain``): train / load_run, the soft-prompt wrappers, and the IM loss in a plain
transformers.Trainer giving what posttrain's engine gives."""

from __future__ import annotations

import json

import pytest
import torch

import posttrain
from test_classification import task_file  # noqa: F401  (fixture)
from test_engine import ROWS


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def _recipe(tmp_path, model_dir, data_file, name="run"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"model: {{name_or_path: '{model_dir}'}}\ndata: {{train_file: '{data_file}', max_length: 64}}\n"
                    f"train: {{output_dir: '{tmp_path / name}', max_steps: 3, per_device_batch_size: 4, "
                    "learning_rate: 1.0e-2, warmup_ratio: 0, progress: false, mixed_precision: none}\n")
    # fp32: the equality tests compare the loss itself (posttrain's fp32 full-vocabulary logits vs another
    # library's bf16 ones would differ by bf16 rounding, not by the loss)
    return path


def _assert_trained_alike(trainer, ours, engine_run) -> None:
    """Another library's Trainer against posttrain's engine run: the same 3 step losses (rel 1e-5), the same
    weights (1e-5)."""
    theirs_losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    engine_losses = [json.loads(line)["loss"] for line in (engine_run / "metrics.jsonl").read_text().splitlines()
                     if "loss" in json.loads(line)]
    assert theirs_losses == pytest.approx(engine_losses, rel=1e-5) and len(theirs_losses) == 3
    theirs = dict(trainer.model.named_parameters())
    for name, param in ours.trainer.model.named_parameters():
        assert torch.allclose(param, theirs[name], atol=1e-5), name


def test_the_api_is_exported_without_importing_the_engine_at_import_time():
    import subprocess
    import sys

    code = ("import sys, posttrain; assert 'posttrain.engine' not in sys.modules; "
            "assert callable(posttrain.train) and 'posttrain.engine' not in sys.modules; "
            "import posttrain.api as api; print(all(getattr(posttrain, n) is getattr(api, n) for n in posttrain._API))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"
    assert set(posttrain._API) <= set(posttrain.__all__)


def test_train_with_overrides_and_load_run_reproduce_the_trained_model(tmp_path, tiny_model_dir, data_file):
    recipe = _recipe(tmp_path, tiny_model_dir, data_file)
    result = posttrain.train(recipe, "adapter.type=dept", "adapter.num_virtual_tokens=3", train__max_steps=2,
                             adapter__dept_rank=2)
    assert result.run_dir == tmp_path / "run" and result.metrics["global_step"] == 2
    assert "trainer" not in result.metrics and (result.run_dir / "final" / "soft_prompt.safetensors").is_file()
    trained = result.trainer.model.eval()
    model, tokenizer = posttrain.load_run(result.run_dir)
    assert isinstance(model, posttrain.SoftPromptModel) and not model.training
    ids = tokenizer(["What is the capital of France?"], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(trained(**ids).logits, model(**ids).logits)
    with pytest.raises(posttrain.ConfigError, match="section__key"):
        posttrain.train(recipe, maxsteps=3)
    config = posttrain.load_config(recipe, [f"train.output_dir={tmp_path / 'again'}", "train.max_steps=1"])
    assert posttrain.train(config, train__learning_rate=0.001).trainer.args.learning_rate == 0.001


def test_dept_wrapper_counts_groups_and_round_trips(tiny_llama, tokenizer, tmp_path):
    d = tiny_llama.get_input_embeddings().embedding_dim
    wrapped = posttrain.dept(tiny_llama, num_virtual_tokens=4, rank=2, max_length=16)
    assert sum(p.numel() for p in wrapped.parameters() if p.requires_grad) == 4 * d + 2 * (16 + d)
    groups = wrapped.optimizer_groups(0.3, 1e-3)
    assert [(g["name"], g["lr"], sum(p.numel() for p in g["params"])) for g in groups] == [
        ("prompt", 0.3, 4 * d), ("offset", 1e-3, 2 * (16 + d))]
    torch.optim.AdamW(groups).step()  # the groups are what an optimizer takes
    with torch.no_grad():
        wrapped.offset_b.normal_()
    wrapped.save_pretrained(tmp_path / "adapter")
    from conftest import make_tiny_llama

    again = posttrain.SoftPromptModel.from_pretrained(make_tiny_llama(len(tokenizer)), tmp_path / "adapter")
    ids = tokenizer(["Write a poem about the sea."], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(wrapped.eval()(**ids).logits, again(**ids).logits)
    prompt_only = posttrain.prompt_tuning(make_tiny_llama(len(tokenizer)), 5)
    assert sum(p.numel() for p in prompt_only.parameters() if p.requires_grad) == 5 * d


def test_the_im_loss_in_a_plain_transformers_trainer_equals_posttrains_engine(tmp_path, tiny_model_dir, data_file):
    """sft_dataset + LabelsCollator (standard keys only) in transformers.Trainer, with its own loss: the same
    losses and weights as posttrain.train with loss.mode=instruction_and_output on the same seed and data."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer

    from posttrain.training_args import training_arguments

    recipe = _recipe(tmp_path, tiny_model_dir, data_file, "engine")
    ours = posttrain.train(recipe, "loss.mode=instruction_and_output", "train.logging_steps=1")
    cfg = posttrain.load_config(tmp_path / "engine" / "config.yaml",
                                [f"train.output_dir={tmp_path / 'plain'}"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    dataset = posttrain.sft_dataset(tokenizer, data_file, mode="instruction_and_output", max_length=64)
    assert dataset.column_names == ["input_ids", "labels"]
    batch = posttrain.LabelsCollator(tokenizer.pad_token_id)([dataset[0], dataset[1]])
    assert sorted(batch) == ["attention_mask", "input_ids", "labels"]
    torch.manual_seed(cfg.train.seed)
    trainer = Trainer(model=model, args=training_arguments(cfg, has_eval=False), train_dataset=dataset,
                      data_collator=posttrain.LabelsCollator(tokenizer.pad_token_id))
    trainer.train()
    _assert_trained_alike(trainer, ours, tmp_path / "engine")


def test_labels_collator_refuses_weights_it_cannot_express():
    with pytest.raises(posttrain.ConfigError, match="other than 0 or 1"):
        posttrain.LabelsCollator(0)([{"input_ids": [1, 2, 3], "labels": [-100, 2, 3], "loss_weights": [0, 0.5, 1]}])


def test_the_im_loss_in_trls_sft_trainer_equals_posttrains_engine(tmp_path, tiny_model_dir, data_file):
    """The same rows and collator in TRL's SFTTrainer (dataset preparation skipped: the rows are tokenised and
    labelled already) give the engine's step losses and weights."""
    import dataclasses

    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments
    from trl import SFTConfig, SFTTrainer

    from posttrain.training_args import training_arguments

    ours = posttrain.train(_recipe(tmp_path, tiny_model_dir, data_file, "engine"), "loss.mode=instruction_and_output",
                           "train.logging_steps=1")
    cfg = posttrain.load_config(tmp_path / "engine" / "config.yaml", [f"train.output_dir={tmp_path / 'trl'}"])
    args = training_arguments(cfg, has_eval=False)
    same = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
    sft_args = SFTConfig(**same, dataset_kwargs={"skip_prepare_dataset": True}, max_length=None)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    dataset = posttrain.sft_dataset(tokenizer, data_file, mode="instruction_and_output", max_length=64)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=sft_args,
                         train_dataset=dataset, processing_class=tokenizer,
                         data_collator=posttrain.LabelsCollator(tokenizer.pad_token_id))
    trainer.train()
    _assert_trained_alike(trainer, ours, tmp_path / "engine")


def test_label_scorer_scores_a_run_as_tasks_eval_does(tmp_path, tiny_model_dir, task_file):  # noqa: F811
    from posttrain.cli import main

    run = posttrain.train(None, f"model.name_or_path={tiny_model_dir}", f"task.name={task_file}",
                          "task.train=files:train", "task.eval=files:dev", "task.test=files:test",
                          "task.objective=verbalizer",
                          "task.form=template", "data.max_length=32", "train.max_steps=2", "train.progress=false",
                          f"train.output_dir={tmp_path / 'run'}").run_dir
    assert main(["tasks", "eval", str(run), "--predictions", str(tmp_path / "p.jsonl")]) == 0
    records = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    task = posttrain.get_task(task_file)
    examples = posttrain.read_split(task, "files", "test")
    model, tokenizer = posttrain.load_run(run)
    scorer = posttrain.label_scorer(model, tokenizer, task, examples, max_length=32)
    probs = scorer.label_scores(model).exp()
    assert len(records) == len(examples) == probs.shape[0] and probs.shape[1] == len(task.labels)
    for row, record in zip(probs.tolist(), records):
        assert row == pytest.approx([record["probabilities"][label] for label in task.labels], abs=1e-6)
    assert scorer.predict(model) == [r["prediction"] for r in records]
    final = json.loads((run / "final_metrics.json").read_text())
    assert scorer(model)["accuracy"] == pytest.approx(final["test_accuracy"])
    with pytest.raises(posttrain.ConfigError, match="objective: expected verbalizer or classifier"):
        posttrain.label_scorer(model, tokenizer, task, examples, objective="lm")
