"""attention.choose / models.loading: ``attn_implementation: auto`` follows what the model class supports (SDPA
where it can, eager for Gemma 2 and DeBERTa-v2, posttrain_varlen only for packed causal classes that dispatch
through AttentionInterface), decided before any weight loads; an explicit choice the class cannot run is one
ModelLoadError line; run metadata reports the implementation really loaded; ``posttrain cpt`` has the same key."""

from __future__ import annotations

import json

import pytest

from posttrain.attention import NAME, choose, supported, unsupported
from posttrain.config import ModelConfig
from posttrain.errors import ConfigError, ModelLoadError
from posttrain.models import describe_model, load_model_and_tokenizer

from test_engine import ROWS, config
from tiny_models import save_tiny

LINES = ["the quick brown fox jumps over the lazy dog .", "what is the capital of france ? paris is .",
         "write a poem about the sea . the sea is wide and blue .", "translate to french : good morning ."]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {name: save_tiny(name, root / name) for name in ("gemma2", "deberta_v2", "t5", "llama", "gpt2")}


def _classes():
    from transformers import (DebertaV2ForMaskedLM, Gemma2ForCausalLM, LlamaForCausalLM,
                              T5ForConditionalGeneration)

    return Gemma2ForCausalLM, DebertaV2ForMaskedLM, LlamaForCausalLM, T5ForConditionalGeneration


def test_choose_follows_the_class_flags():
    gemma2, deberta, llama, t5 = _classes()
    assert [choose("auto", packed, gemma2) for packed in (False, True)] == ["eager", "eager"]
    assert choose("auto", True, deberta, causal=False) == "eager"
    assert [choose("auto", packed, llama) for packed in (False, True)] == ["sdpa", NAME]
    assert choose("auto", True, t5, causal=False) == "sdpa"  # varlen is for causal attention only
    assert choose("eager", True, llama) == "eager" and choose("sdpa", False, gemma2) == "sdpa"  # explicit: kept
    assert "sdpa" not in supported(gemma2) and NAME not in supported(gemma2)
    assert unsupported("sdpa", gemma2) == supported(gemma2) and unsupported("eager", gemma2) is None
    assert unsupported("kernels-community/flash-attn", t5) is None  # names transformers resolves itself pass


def test_without_a_class_auto_is_the_packed_or_padded_default():
    assert choose("auto", True) == NAME and choose("auto", False) == "sdpa"


@pytest.mark.parametrize("name, expected", [("gemma2", "eager"), ("deberta_v2", "eager"), ("t5", "sdpa"),
                                            ("llama", "sdpa")])
def test_auto_loads_every_family_and_metadata_reports_the_real_one(tiny_dirs, name, expected):
    model, _ = load_model_and_tokenizer(ModelConfig(name_or_path=str(tiny_dirs[name])))
    assert describe_model(model)["attention"] == expected == model.config._attn_implementation


@pytest.mark.parametrize("name, requested, cls", [("gemma2", "sdpa", "Gemma2ForCausalLM"),
                                                  ("deberta_v2", "sdpa", "DebertaV2ForMaskedLM"),
                                                  ("t5", NAME, "T5ForConditionalGeneration"),
                                                  ("t5", "flash_attention_2", "T5ForConditionalGeneration")])
def test_an_explicit_choice_the_class_cannot_run_fails_before_weights_load(tiny_dirs, monkeypatch, name, requested,
                                                                          cls):
    import transformers

    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded before the attention check")

    for auto in ("AutoModelForCausalLM", "AutoModelForMaskedLM", "AutoModelForSeq2SeqLM"):
        monkeypatch.setattr(getattr(transformers, auto), "from_pretrained", no_weights)
    with pytest.raises(ModelLoadError) as info:
        load_model_and_tokenizer(ModelConfig(name_or_path=str(tiny_dirs[name]), attn_implementation=requested))
    message = str(info.value)
    assert "\n" not in message and str(tiny_dirs[name]) in message and cls in message
    assert f"attn_implementation {requested} is not supported" in message and "it supports eager" in message


def test_explicit_choices_the_class_supports_are_kept(tiny_dirs):
    for name, requested in (("gemma2", "eager"), ("llama", NAME), ("gpt2", "eager")):
        model, _ = load_model_and_tokenizer(ModelConfig(name_or_path=str(tiny_dirs[name]),
                                                        attn_implementation=requested))
        assert describe_model(model)["attention"] == requested


def test_packed_training_on_a_class_without_sdpa_runs_eager(tmp_path, tiny_dirs):
    """The engine's packed ``auto`` pick (posttrain_varlen) falls back to eager for Gemma 2 instead of failing."""
    from posttrain.engine import train

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    for name, expected in (("gemma2", "eager"), ("llama", NAME)):
        train(config(tmp_path, tiny_dirs[name], data, name, "train.packing=true", "train.max_steps=1"))
        meta = json.loads((tmp_path / name / "run_meta.json").read_text())
        assert meta["model"]["attention"] == expected, name
    with pytest.raises(ModelLoadError, match="sdpa is not supported by Gemma2ForCausalLM"):
        train(config(tmp_path, tiny_dirs["gemma2"], data, "explicit", "model.attn_implementation=sdpa"))


# ---------------------------------------------------------------------------------------------------------------
# posttrain cpt


def _cpt(tmp_path, model_dir, name, **kw):
    from posttrain.pipelines.continued_pretraining import ContinuedPretrainingConfig

    train, dev = tmp_path / "train.txt", tmp_path / "dev.txt"
    train.write_text("\n".join(LINES * 2) + "\n")
    dev.write_text("\n".join(LINES[:2]) + "\n")
    return ContinuedPretrainingConfig(model=str(model_dir), train_file=str(train), eval_file=str(dev),
                                      output_dir=str(tmp_path / name), max_length=32, per_device_batch_size=4,
                                      gradient_accumulation_steps=1, max_steps=2, eval_steps=2, progress=False,
                                      **kw)


@pytest.mark.parametrize("name, objective", [("gemma2", "clm"), ("deberta_v2", "mlm")])
def test_cpt_runs_on_classes_without_sdpa(tmp_path, tiny_dirs, name, objective):
    from posttrain.pipelines.continued_pretraining import continued_pretraining

    final = continued_pretraining(_cpt(tmp_path, tiny_dirs[name], "run"))
    assert final["objective"] == objective
    meta = json.loads((tmp_path / "run" / "run_meta.json").read_text())
    assert meta["model"]["attention"] == "eager"
    assert "attn_implementation: auto" in (tmp_path / "run" / "cpt_config.yaml").read_text()


def test_cpt_attn_implementation_is_applied_and_checked(tmp_path, tiny_dirs):
    from posttrain.pipelines.continued_pretraining import ContinuedPretrainingConfig, continued_pretraining

    continued_pretraining(_cpt(tmp_path, tiny_dirs["llama"], "eager", attn_implementation="eager"),
                          model_config=ModelConfig(name_or_path=str(tiny_dirs["llama"])))  # a pipeline's settings
    assert json.loads((tmp_path / "eager" / "run_meta.json").read_text())["model"]["attention"] == "eager"
    with pytest.raises(ModelLoadError, match="sdpa is not supported by Gemma2ForCausalLM"):
        continued_pretraining(_cpt(tmp_path, tiny_dirs["gemma2"], "sdpa", attn_implementation="sdpa"))
    with pytest.raises(ConfigError, match="attn_implementation: must name"):
        ContinuedPretrainingConfig(attn_implementation=" ")
