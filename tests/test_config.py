"""config.py: YAML + overrides, typed values, and the promised error messages."""

import pytest

from posttrain.config import describe, load_config, parse_overrides
from posttrain.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_yaml_and_overrides(tmp_path):
    path = write(tmp_path, "loss:\n  mode: instruction_and_output\ntrain:\n  max_steps: 3\n")
    cfg = load_config(path, ["train.learning_rate=1e-4", "loss.im_mask=reference_code", "adapter.lora_target_modules=[q_proj]"])
    assert cfg.loss.mode == "instruction_and_output" and cfg.loss.im_mask == "reference_code"
    assert cfg.train.max_steps == 3 and cfg.train.learning_rate == 1e-4
    assert cfg.adapter.lora_target_modules == ["q_proj"]
    assert cfg.train.adam_beta2 == 0.98 and cfg.train.adam_epsilon == 1e-6  # the IM paper's optimizer


@pytest.mark.parametrize(
    "text, overrides, message",
    [
        ("train:\n  learnig_rate: 1\n", [], r"run\.yaml: unknown key 'train\.learnig_rate'; did you mean 'train\.learning_rate'\?"),
        ("trian:\n  max_steps: 1\n", [], r"unknown section 'trian'; did you mean 'train"),
        ("loss:\n  mode: im\n", [], r"loss\.mode: expected one of output_only, instruction_and_output, all_tokens, got 'im'"),
        ("train:\n  max_steps: ten\n", [], r"train\.max_steps: expected an integer, got 'ten'"),
        ("train:\n  packing: maybe\n", [], r"train\.packing: expected one of auto, true, false, got 'maybe'"),
        ("loss:\n  prompt_loss_weight: 0.5\n", [], r"loss\.prompt_loss_weight: only applies to loss\.mode=instruction_and_output"),
        ("loss:\n  mode: instruction_and_output\n  prompt_loss_weight: 2\n", [], r"must be in \[0, 1\]"),
        ("data:\n  eval_file: x.jsonl\n  eval_size: 3\n", [], r"set either data\.eval_file or data\.eval_size"),
        ("train: [1, 2]\n", [], r"section 'train' must be a mapping"),
        ("train:\n  max_steps: 1\n", ["train.max_step=2"], r"unknown key 'train\.max_step'; did you mean 'train\.max_steps'"),
        ("train:\n  max_steps: 1\n", ["max_steps=2"], r"expected section\.key=value"),
        ("train:\n  max_steps: [1\n", [], r"run\.yaml:\d+: not valid YAML"),
    ],
)
def test_config_errors(tmp_path, text, overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text), overrides)


def test_missing_file():
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config("nope.yaml")


def test_overrides_parse_yaml_scalars():
    assert parse_overrides(["train.max_steps=5", "train.packing=true", "data.train_file=a b.jsonl"]) == {
        "train": {"max_steps": 5, "packing": True}, "data": {"train_file": "a b.jsonl"}}


def test_every_key_has_help():
    import dataclasses

    from posttrain.config import RunConfig, all_keys

    assert len(all_keys()) > 40
    for section in dataclasses.fields(RunConfig):
        for f in dataclasses.fields(section.default_factory):
            assert len(f.metadata.get("help", "")) >= 10, f"{section.name}.{f.name} has no help"
    assert "reference_code" in describe()


def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path):
    """YAML itself keeps the last of two equal keys; a recipe with a repeated key or section fails instead."""
    from posttrain.config import parse_yaml

    with pytest.raises(ConfigError, match=r"^r\.yaml:4: 'learning_rate' is given twice \(first at line 2\)"):
        parse_yaml("train:\n  learning_rate: 1e-4\n  max_steps: 3\n  learning_rate: 2e-4\n", "r.yaml")
    with pytest.raises(ConfigError, match=r"^r\.yaml:3: 'train' is given twice \(first at line 1\)"):
        parse_yaml("train: {seed: 1}\nmodel: {dtype: float32}\ntrain: {seed: 2}\n", "r.yaml")
    recipe = tmp_path / "dup.yaml"
    recipe.write_text("train:\n  seed: 1\n  seed: 2\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml:3: 'seed' is given twice"):
        load_config(recipe)


def test_merge_keys_may_be_overridden_once():
    """``<<: *anchor`` then an explicit key is YAML's override, not a repetition (builtin.yaml relies on it)."""
    from posttrain.config import parse_yaml

    assert parse_yaml("a: &x {b: 1, c: 2}\nd:\n  <<: *x\n  b: 3\n", "s") == {"a": {"b": 1, "c": 2},
                                                                          "d": {"b": 3, "c": 2}}
    with pytest.raises(ConfigError, match="'e' is given twice"):
        parse_yaml("a: &x {b: 1}\nd:\n  <<: *x\n  e: 3\n  e: 4\n", "s")


def test_every_scheduler_that_runs_from_its_name_is_accepted_and_the_rest_refused(tmp_path):
    """The scheduler names are transformers' own (SchedulerType), read from the installed version."""
    from transformers.trainer_utils import SchedulerType

    from posttrain.pipelines.continued_pretraining import ContinuedPretrainingConfig
    from posttrain.training_args import training_arguments

    for scheduler in SchedulerType:
        name = scheduler.value
        needs = name in ("cosine_with_min_lr", "cosine_warmup_with_min_lr", "warmup_stable_decay",
                         "reduce_lr_on_plateau", "greedy")
        overrides = ["data.train_file=x.jsonl", f"train.output_dir={tmp_path}", f"train.lr_scheduler={name}"]
        if needs:
            with pytest.raises(ConfigError, match=f"train.lr_scheduler: {name} needs"):
                load_config(None, overrides)
            with pytest.raises(ConfigError, match=f"lr_scheduler: {name} needs"):
                ContinuedPretrainingConfig(output_dir="x", lr_scheduler=name)
        else:  # accepted: transformers builds it from the name alone, as the Trainer will
            import torch
            from transformers import get_scheduler

            cfg = load_config(None, overrides)
            assert training_arguments(cfg, has_eval=False).lr_scheduler_type == name
            optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
            get_scheduler(name, optimizer, num_warmup_steps=1, num_training_steps=10).step()
