"""registry.py + methods/__init__.py: the four methods registered once, in order; method_named's one-line error
with a did-you-mean; double registration; settings are AdapterConfig fields; DePT's checks and its exact trainable
parameter count on a tiny Llama."""

from __future__ import annotations

import dataclasses

import pytest

import posttrain.methods  # noqa: F401  (registers the methods)
from posttrain.config import AdapterConfig, load_config
from posttrain.errors import ConfigError
from posttrain.methods import dept
from posttrain.methods.soft_prompt import SoftPromptModel
from posttrain.registry import FAMILIES, METHODS, Method, method_named, register


def test_the_four_methods_are_registered_in_order():
    assert list(METHODS) == ["full", "lora", "prompt_tuning", "dept"]
    for name, method in METHODS.items():
        assert isinstance(method, Method) and method.name == name
        assert method_named(name) is method
        assert set(method.families) <= set(FAMILIES)
        assert method.summary and "\n" not in method.summary


@pytest.mark.parametrize("typo, nearest", [("lroa", "lora"), ("Dept", "dept"), ("prompt-tuning", "prompt_tuning"),
                                           ("ful", "full")])
def test_method_named_suggests_the_nearest_method(typo, nearest):
    with pytest.raises(ConfigError) as err:
        method_named(typo)
    text = str(err.value)
    assert text == (f"adapter.type: expected one of full, lora, prompt_tuning, dept, got {typo!r}; "
                    f"did you mean '{nearest}'?")
    assert "\n" not in text


def test_method_named_without_a_close_name_and_with_another_key():
    with pytest.raises(ConfigError) as err:
        method_named("zzzzzzzz", key="grid.methods")
    assert str(err.value) == "grid.methods: expected one of full, lora, prompt_tuning, dept, got 'zzzzzzzz'"


def test_the_config_refuses_an_unknown_method():
    with pytest.raises(ConfigError, match=r"adapter\.type: expected one of .*; did you mean 'lora'\?"):
        load_config(None, ["adapter.type=lroa"])


def test_registering_twice_or_a_bad_family_raises():
    before = dict(METHODS)
    with pytest.raises(ValueError, match="method 'dept' is registered twice"):
        register(METHODS["dept"])
    odd = dataclasses.replace(METHODS["full"], name="odd-test-method", families=("causal", "vision"))
    with pytest.raises(ValueError, match="method 'odd-test-method': families must be among"):
        register(odd)
    assert METHODS == before  # a refused registration changes nothing


def test_every_setting_is_an_adapter_config_field():
    fields = {f.name for f in dataclasses.fields(AdapterConfig)}
    assert "type" in fields
    for method in METHODS.values():
        assert set(method.settings) <= fields, method.name
        assert "type" not in method.settings
    assert METHODS["full"].settings == ()
    assert set(METHODS["lora"].settings) == {"lora_r", "lora_alpha", "lora_dropout", "lora_target_modules"}
    assert set(METHODS["prompt_tuning"].settings) < set(METHODS["dept"].settings)  # DePT = PT's prompt + offset
    # every adapter field is read by some method (no orphan key)
    assert fields - {"type"} == set().union(*(m.settings for m in METHODS.values()))


def test_dept_refuses_rank_zero():
    cfg = load_config(None, ["adapter.type=dept", "adapter.dept_rank=3"])
    cfg.adapter.dept_rank = 0
    with pytest.raises(ConfigError, match=r"^adapter\.dept_rank: must be >= 1 for dept"):
        METHODS["dept"].validate(cfg)
    with pytest.raises(ConfigError, match=r"adapter\.dept_rank: must be >= 1 for dept"):
        load_config(None, ["adapter.type=dept", "adapter.dept_rank=0"])
    # prompt tuning does not read dept_rank
    load_config(None, ["adapter.type=prompt_tuning", "adapter.dept_rank=0"])


def test_dept_refuses_an_offset_shorter_than_the_inputs():
    with pytest.raises(ConfigError, match=r"adapter\.dept_max_length: s=8 is shorter than data\.max_length=16"):
        load_config(None, ["adapter.type=dept", "adapter.dept_max_length=8", "data.max_length=16"])


@pytest.mark.parametrize("m, r, s, overrides", [(6, 3, 16, []), (4, 2, 24, ["adapter.dept_max_length=24"])])
def test_dept_wrap_trains_exactly_p_a_and_b(tokenizer, tiny_llama, m, r, s, overrides):
    cfg = load_config(None, ["adapter.type=dept", f"adapter.num_virtual_tokens={m}", f"adapter.dept_rank={r}",
                             "data.max_length=16", *overrides])
    d = tiny_llama.config.hidden_size
    model = METHODS["dept"].wrap(tiny_llama, cfg, tokenizer)
    assert isinstance(model, SoftPromptModel)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"prompt": m * d, "offset_a": s * r, "offset_b": r * d}
    assert sum(trainable.values()) == m * d + s * r + r * d == dept.trainable_count(m, r, s, d)
    assert not any(p.requires_grad for p in tiny_llama.parameters())  # the backbone is frozen
    # prompt_init=text: P holds the init text's token embeddings, repeated to m rows
    ids = tokenizer(cfg.adapter.prompt_init_text)["input_ids"]
    table = tiny_llama.get_input_embeddings().weight
    assert (model.prompt.detach() == table[(ids * m)[:m]]).all()
    # two optimizer groups at the two learning rates
    groups = METHODS["dept"].optimizer_groups(model, cfg)
    assert [(g["name"], g["lr"]) for g in groups] == [("prompt", cfg.adapter.prompt_learning_rate),
                                                      ("offset", cfg.adapter.offset_learning_rate)]
