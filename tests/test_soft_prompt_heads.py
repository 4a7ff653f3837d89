"""Soft prompts / DePT (methods/soft_prompt.py) on sequence-classification models: every module the new head
creates (classifier or score, and BERT's pooler, DistilBERT's pre_classifier, DeBERTa's pooler) trains, is saved
and comes back on reload; a decoder-only classifier scores an example the same alone and inside a padded batch."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from posttrain.errors import ModelLoadError
from posttrain.methods.soft_prompt import SoftPromptModel
from posttrain.methods.soft_prompt_io import CONFIG_NAME, WEIGHTS_NAME, export_peft_prompt_tuning
from posttrain.models.families import classification_head_names, model_kind

from tiny_models import ARCHITECTURES, MODEL_CLASS, SPECIALS, build_tiny, save_tiny

HEADS = {"llama": ["score"], "gpt2": ["score"], "bart": ["classification_head"], "t5": ["classification_head"],
         "roberta": ["classifier"], "bert": ["bert.pooler", "classifier"],
         "distilbert": ["pre_classifier", "classifier"], "deberta_v2": ["pooler", "classifier"]}
# BART/T5 classifiers find their </s> in input_ids, which soft prompts replace by embeddings: not covered here
SOFT_PROMPT_HEADS = ["llama", "gpt2", "roberta", "bert", "distilbert", "deberta_v2"]
M, R, S = 4, 2, 16


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("heads_ckpt")
    return {name: save_tiny(name, root / name) for name in HEADS}


def _classifier(checkpoints, name, seed=0):
    """A classification model on the saved LM checkpoint; ``seed`` draws the head the checkpoint lacks."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_pretrained(checkpoints[name], num_labels=3)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_head_names_are_the_modules_the_classifier_adds(checkpoints, name):
    model = _classifier(checkpoints, name)
    assert classification_head_names(model) == HEADS[name]
    missing = _missing_keys(checkpoints, name)  # the weights from_pretrained drew anew: exactly the head's
    assert all(any(k.startswith(f"{h}.") for h in HEADS[name]) for k in missing), missing
    assert all(any(k.startswith(f"{h}.") for k in missing) for h in HEADS[name]), missing
    family = ARCHITECTURES[name][0]
    assert model_kind(model) == family  # a decoder-only classifier stays causal, as config_kind says
    assert classification_head_names(build_tiny(name)[0]) == []  # an LM head has no new modules


def _missing_keys(checkpoints, name):
    from transformers import AutoModelForSequenceClassification

    _, info = AutoModelForSequenceClassification.from_pretrained(checkpoints[name], num_labels=3,
                                                                 output_loading_info=True)
    return info["missing_keys"]


def _ids(vocab, lengths, total, seed=0, left=False):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), total, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        row = torch.randint(len(SPECIALS), vocab, (n,), generator=gen)
        span = slice(total - n, total) if left else slice(0, n)
        ids[i, span], mask[i, span] = row, 1
    return ids, mask


@pytest.mark.parametrize("name", SOFT_PROMPT_HEADS)
@pytest.mark.parametrize("rank", [0, R])
def test_the_whole_new_head_trains_and_round_trips(checkpoints, tmp_path, name, rank):
    base = _classifier(checkpoints, name)
    model = SoftPromptModel(base, M, rank=rank, max_length=S if rank else 0)
    d = base.get_input_embeddings().embedding_dim
    head_params = {f"head.{h}.{n}": p for h in HEADS[name] for n, p in base.get_submodule(h).named_parameters()}
    trainable = model.trainable_parameters()
    assert set(head_params) <= set(trainable)
    assert all(p.requires_grad for p in head_params.values())
    count = M * d + (S * rank + rank * d) + sum(p.numel() for p in head_params.values())
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == count

    frozen = {n: p.detach().clone() for n, p in base.named_parameters() if not p.requires_grad}
    before = {n: p.detach().clone() for n, p in trainable.items()}
    if rank:
        with torch.no_grad():
            model.offset_b.normal_(0, 0.1)  # B = 0 gives A no gradient; a non-zero B lets one step reach it
    opt = torch.optim.AdamW(model.optimizer_groups(1e-2, 1e-2))
    ids, mask = _ids(base.config.vocab_size, [7, 5], 7)
    model.train()
    for _ in range(2):
        loss = model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 2])).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    for n, p in trainable.items():
        assert not torch.equal(p.detach(), before[n]), f"{n} did not train"
    for n, p in base.named_parameters():
        if n in frozen:
            assert torch.equal(p.detach(), frozen[n]), f"frozen {n} changed"

    model.eval()
    probe, probe_mask = _ids(base.config.vocab_size, [6, 3], 6, seed=1)
    with torch.no_grad():
        trained = model(input_ids=probe, attention_mask=probe_mask).logits
    model.posttrain_save(tmp_path / "adapter")
    meta = json.loads((tmp_path / "adapter" / CONFIG_NAME).read_text())
    assert meta["head_modules"] == HEADS[name]
    assert set(load_file(str(tmp_path / "adapter" / WEIGHTS_NAME))) == set(trainable)
    fresh = _classifier(checkpoints, name, seed=1)
    with torch.no_grad():  # the fresh base's head really is another draw
        assert not torch.allclose(SoftPromptModel(fresh, M, rank=rank, max_length=S if rank else 0).eval()(
            input_ids=probe, attention_mask=probe_mask).logits, trained)
    reloaded = SoftPromptModel.from_pretrained(_classifier(checkpoints, name, seed=2), tmp_path / "adapter")
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=probe, attention_mask=probe_mask).logits, trained)


@pytest.mark.parametrize("name", ["llama", "gpt2"])
@pytest.mark.parametrize("rank", [0, R])
def test_decoder_classifier_scores_an_example_alone_as_in_a_padded_batch(checkpoints, name, rank):
    """The score is read at the last position: right padding is moved in front, so it is the last real token."""
    model = SoftPromptModel(_classifier(checkpoints, name), M, rank=rank, max_length=S if rank else 0).eval()
    assert model.kind == "causal"
    if rank:
        with torch.no_grad():
            model.offset_b.normal_(0, 0.5)
    vocab = model.base.config.vocab_size
    lengths = [6, 3, 5]
    with torch.no_grad():
        right = model(**dict(zip(("input_ids", "attention_mask"), _ids(vocab, lengths, 8)))).logits
        left = model(**dict(zip(("input_ids", "attention_mask"), _ids(vocab, lengths, 8, left=True)))).logits
        ids, _ = _ids(vocab, lengths, 8)
        for i, n in enumerate(lengths):
            alone = model(input_ids=ids[i:i + 1, :n]).logits[0]
            assert torch.allclose(right[i], alone, atol=1e-5), (i, right[i], alone)
            assert torch.allclose(left[i], alone, atol=1e-5), (i, left[i], alone)


def test_an_adapter_saved_before_the_pooler_was_saved_keeps_the_base_pooler(checkpoints, tmp_path):
    """Older adapters record no ``head_modules`` and hold only classifier/score: the pooler stays the base's."""
    model = SoftPromptModel(_classifier(checkpoints, "bert"), M)
    with torch.no_grad():
        model.base.classifier.weight.normal_()
    model.posttrain_save(tmp_path / "old")
    tensors = load_file(str(tmp_path / "old" / WEIGHTS_NAME))
    save_file({k: v for k, v in tensors.items() if not k.startswith("head.bert.pooler.")},
              str(tmp_path / "old" / WEIGHTS_NAME))
    meta = json.loads((tmp_path / "old" / CONFIG_NAME).read_text())
    (tmp_path / "old" / CONFIG_NAME).write_text(json.dumps({k: v for k, v in meta.items() if k != "head_modules"}))
    fresh = _classifier(checkpoints, "bert", seed=3)
    pooler = fresh.bert.pooler.dense.weight.detach().clone()
    loaded = SoftPromptModel.from_pretrained(fresh, tmp_path / "old")
    assert torch.equal(loaded.base.bert.pooler.dense.weight, pooler)
    assert torch.equal(loaded.base.classifier.weight, model.base.classifier.weight)
    # a current adapter that lacks a head tensor it says it saved is damaged
    (tmp_path / "old" / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="head.bert.pooler.dense"):
        SoftPromptModel.from_pretrained(_classifier(checkpoints, "bert"), tmp_path / "old")


def test_peft_export_refuses_to_drop_a_trained_head(checkpoints, tmp_path):
    model = SoftPromptModel(_classifier(checkpoints, "roberta"), M)
    with pytest.raises(ModelLoadError, match="classification head"):
        export_peft_prompt_tuning(model, tmp_path / "peft")


def test_mlm_and_lm_bases_have_no_head_to_train(checkpoints):
    import transformers

    for name in ("bert", "llama"):
        base = getattr(transformers, MODEL_CLASS[ARCHITECTURES[name][0]]).from_pretrained(checkpoints[name])
        model = SoftPromptModel(base, M)
        assert model.head_names == [] and set(model.trainable_parameters()) == {"prompt"}
