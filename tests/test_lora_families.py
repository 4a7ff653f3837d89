"""LoRA (methods/lora.py) on every model family: the PEFT class and task type, which modules are wrapped, the new
classification head trained and saved (modules_to_save), one optimizer step, and a save/reload round trip.

Parameter counts are computed here from the unwrapped model's module shapes, not read back from PEFT."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from posttrain.config.schema import AdapterConfig
from posttrain.errors import ConfigError
from posttrain.methods import lora

from tiny_models import ARCHITECTURES, MODEL_CLASS, SPECIALS, save_tiny

R = 4
LM_ARCHS = ["llama", "gpt2", "phi3", "t5", "bart", "roberta", "bert", "distilbert", "deberta_v2"]
# the modules each sequence-classification class creates afresh on top of its base model (the spec, written out)
HEADS = {"llama": ["score"], "gpt2": ["score"], "bart": ["classification_head"], "roberta": ["classifier"],
         "bert": ["bert.pooler", "classifier"], "distilbert": ["pre_classifier", "classifier"],
         "deberta_v2": ["pooler", "classifier"]}
PEFT_CLASS = {"causal": "PeftModelForCausalLM", "seq2seq": "PeftModelForSeq2SeqLM", "encoder": "PeftModel"}


def _cfg(**adapter):
    return types.SimpleNamespace(adapter=AdapterConfig(type="lora", lora_r=R, **adapter))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """name -> a saved tiny checkpoint (its family's LM head), loaded afresh by every test."""
    root = tmp_path_factory.mktemp("lora_ckpt")
    return {name: save_tiny(name, root / name) for name in ARCHITECTURES}


def _load(checkpoints, name, head, seed=0):
    import transformers

    family = ARCHITECTURES[name][0]
    cls = "AutoModelForSequenceClassification" if head == "cls" else MODEL_CLASS[family]
    torch.manual_seed(seed)  # the seed draws whatever the checkpoint lacks (a new head)
    kwargs = {"num_labels": 3} if head == "cls" else {}
    return getattr(transformers, cls).from_pretrained(checkpoints[name], **kwargs)


def _batch(model, head, family, seed=0):
    gen = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    ids = torch.randint(len(SPECIALS), vocab, (2, 7), generator=gen)
    if head == "cls" and family == "seq2seq":  # BART's head reads the last </s>, which every row must have
        ids[:, -1] = model.config.eos_token_id
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if head == "cls":
        batch["labels"] = torch.tensor([0, 2])
    elif family == "causal":
        batch["labels"] = ids.clone()
    elif family == "seq2seq":
        batch["labels"] = torch.randint(len(SPECIALS), vocab, (2, 4), generator=gen)
    else:  # masked LM: two predicted positions
        labels = torch.full_like(ids, -100)
        labels[:, 2:4] = ids[:, 2:4]
        batch["labels"] = labels
    return batch


def _expected_counts(model, heads, keep_default: bool):
    """(LoRA parameter count, head parameter count, wrapped leaf names) from the unwrapped model's shapes: every
    linear layer (all-linear) or the default names, outside the new head and the output embeddings."""
    from transformers.pytorch_utils import Conv1D

    output = model.get_output_embeddings()
    head_modules = [model.get_submodule(h) for h in heads]
    inside_head = {id(m) for h in head_modules for m in h.modules()}
    lora_count, leaves = 0, set()
    for name, module in model.named_modules():
        leaf = name.split(".")[-1]
        if not isinstance(module, (nn.Linear, Conv1D)) or module is output or id(module) in inside_head:
            continue
        if keep_default and leaf not in lora.DEFAULT_TARGETS:
            continue
        fan_in, fan_out = module.weight.shape[::-1] if isinstance(module, nn.Linear) else module.weight.shape
        lora_count += R * (fan_in + fan_out)
        leaves.add(leaf)
    head_count = sum(p.numel() for h in head_modules for p in h.parameters())
    return lora_count, head_count, sorted(leaves)


CASES = [(name, "lm") for name in LM_ARCHS] + [(name, "cls") for name in HEADS]


@pytest.mark.parametrize("name, head", CASES)
def test_lora_on_every_family_trains_the_right_parameters_and_round_trips(checkpoints, tmp_path, name, head):
    from peft import PeftModel

    family = ARCHITECTURES[name][0]
    base = _load(checkpoints, name, head)
    heads = HEADS[name] if head == "cls" else []
    keep_default = name == "llama"  # the only one here with every name of the schema's default list
    lora_count, head_count, leaves = _expected_counts(base, heads, keep_default)
    model = lora._wrap(base, _cfg())

    assert type(model).__name__ == ("PeftModelForSequenceClassification" if head == "cls" else PEFT_CLASS[family])
    assert model.posttrain_lora_targets == leaves
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    lora_params = sum(p.numel() for n, p in trainable.items() if "lora_A" in n or "lora_B" in n)
    assert lora_params == lora_count
    assert sum(p.numel() for p in trainable.values()) == lora_count + head_count
    for h in heads:  # every new head module is trained and saved in full, with no LoRA layer inside it
        assert type(model.base_model.model.get_submodule(h)).__name__ == "ModulesToSaveWrapper", h

    # one step: every trainable parameter moves, every frozen one stays bit-identical
    with torch.no_grad():  # B = 0 at init gives A no gradient; a non-zero B lets the step reach every parameter
        for n, p in trainable.items():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    opt = torch.optim.AdamW(trainable.values(), lr=1e-2, weight_decay=0.0)
    loss = model(**_batch(base, head, family)).loss
    loss.backward()
    opt.step()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p.detach(), before[n]), f"{n} did not move"
        else:
            assert torch.equal(p.detach(), before[n]), f"frozen {n} changed"

    # save_pretrained + PeftModel.from_pretrained on a fresh base (a new head drawn from another seed)
    model.eval()
    batch = _batch(base, head, family, seed=1)
    batch.pop("labels")
    if family == "seq2seq" and head != "cls":
        batch["decoder_input_ids"] = batch["input_ids"][:, :3]
    with torch.no_grad():
        trained = model(**batch).logits
    model.save_pretrained(tmp_path / "adapter")
    fresh = _load(checkpoints, name, head, seed=1)
    if head == "cls":
        with torch.no_grad():
            assert not torch.allclose(fresh(**batch).logits, trained)  # the fresh head really is another one
    reloaded = PeftModel.from_pretrained(fresh, str(tmp_path / "adapter")).eval()
    assert type(reloaded).__name__ == type(model).__name__
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, trained)


def test_default_targets_stay_llamas_list_where_the_model_has_all_of_them(checkpoints):
    model = lora._wrap(_load(checkpoints, "llama", "lm"), _cfg())
    assert model.posttrain_lora_targets == sorted(lora.DEFAULT_TARGETS)


def test_default_targets_become_all_linear_where_they_match_only_in_part(checkpoints):
    """Phi-3 has o_proj and down_proj of the default list but fuses q/k/v and gate/up: every projection wraps."""
    base = _load(checkpoints, "phi3", "lm")
    assert lora.resolve_targets(base, lora.DEFAULT_TARGETS) == "all-linear"
    model = lora._wrap(base, _cfg())
    assert model.posttrain_lora_targets == ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]
    bart = lora._wrap(_load(checkpoints, "bart", "lm"), _cfg())
    assert bart.posttrain_lora_targets == ["fc1", "fc2", "k_proj", "out_proj", "q_proj", "v_proj"]


def test_a_list_the_user_wrote_is_taken_as_written(checkpoints):
    model = lora._wrap(_load(checkpoints, "llama", "lm"), _cfg(lora_target_modules=["q_proj", "v_proj"]))
    assert model.posttrain_lora_targets == ["q_proj", "v_proj"]
    with pytest.raises(ConfigError, match="lora_target_modules"):
        lora._wrap(_load(checkpoints, "bert", "lm"), _cfg(lora_target_modules=["q_proj"]))


def test_a_user_list_never_wraps_inside_the_new_head(checkpoints):
    """'dense' names BERT's attention/FFN outputs and also its new pooler's layer: the pooler trains in full."""
    model = lora._wrap(_load(checkpoints, "bert", "cls"), _cfg(lora_target_modules=["dense"]))
    pooler = model.base_model.model.bert.pooler
    assert type(pooler).__name__ == "ModulesToSaveWrapper"
    assert not any("lora_" in n for n, _ in pooler.named_parameters())
    assert all(p.requires_grad for p in pooler.modules_to_save.parameters())


def test_restore_loads_the_head_with_the_adapter(checkpoints, tmp_path):
    """``_restore`` (what ``load_run`` calls) gives the trained head back, not a new random one."""
    from posttrain.config.schema import ModelConfig

    model = lora._wrap(_load(checkpoints, "distilbert", "cls"), _cfg()).eval()
    with torch.no_grad():
        model.base_model.model.pre_classifier.modules_to_save.default.weight.normal_()
    batch = _batch(model, "cls", "encoder")
    batch.pop("labels")
    with torch.no_grad():
        expected = model(**batch).logits
    model.save_pretrained(tmp_path / "final")
    cfg = ModelConfig(name_or_path=str(checkpoints["distilbert"]), head="sequence_classification")
    restored, _ = lora._restore(tmp_path / "final", cfg, for_training=False, num_labels=3)
    assert restored.posttrain_lora_targets == model.posttrain_lora_targets
    with torch.no_grad():
        assert torch.equal(restored(**batch).logits, expected)
