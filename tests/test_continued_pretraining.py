"""pipelines/continued_pretraining.py: MLM masking from the real collator, the CLM path, best checkpoint by held-out
loss, resume == uninterrupted, run directory, config errors. Tiny random BERT (WordPiece tokenizer with a [MASK]
token, built here) and the conftest tiny Llama."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from posttrain.callbacks import StopAtStepCallback
from posttrain.config import ModelConfig
from posttrain.errors import ConfigError, DataError
from posttrain.pipelines.continued_pretraining import (
    ContinuedPretrainingConfig, build_lm_collator, continued_pretraining, read_corpus,
)
from posttrain.models import load_model_and_tokenizer

from conftest import CORPUS

BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LINES = [
    "the quick brown fox jumps over the lazy dog . It was great .",
    "what is the capital of france ? paris is the capital . It was terrible .",
    "write a poem about the sea . the sea is wide and blue . It was great .",
    "translate to french : good morning . bonjour . It was terrible .",
]


def make_wordpiece_tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(CORPUS + LINES, trainers.WordPieceTrainer(vocab_size=300, special_tokens=BERT_SPECIALS,
                                                                      show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    from transformers import BertConfig, BertForMaskedLM

    path = tmp_path_factory.mktemp("tiny-bert")
    tok = make_wordpiece_tokenizer()
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, max_position_embeddings=128)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture
def corpus(tmp_path):
    train, dev = tmp_path / "train.txt", tmp_path / "dev.txt"
    train.write_text("\n".join(LINES * 4) + "\n\n   \n")  # blank lines are skipped
    dev.write_text("\n".join(LINES[:2]) + "\n")
    return train, dev


def cpt_config(tmp_path, model_dir, corpus, name, **kw):
    defaults = dict(model=str(model_dir), train_file=str(corpus[0]), eval_file=str(corpus[1]),
                    output_dir=str(tmp_path / name), max_length=64, per_device_batch_size=4,
                    gradient_accumulation_steps=1, max_steps=4, eval_steps=2, learning_rate=1e-2, logging_steps=1,
                    progress=False, seed=3)
    return ContinuedPretrainingConfig(**{**defaults, **kw})


def weights(path):
    return load_file(str(next(path.glob("*.safetensors"))))


def same(a, b, atol=0.0):
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=atol, rtol=0) for k in a)


def test_mlm_masking_statistics_from_the_real_collator():
    tok = make_wordpiece_tokenizer()
    collator = build_lm_collator(tok, "mlm", ContinuedPretrainingConfig(), seed=0)
    texts = [" ".join(CORPUS[i % 7].split()[: 3 + i % 9]) for i in range(600)]  # varied lengths -> padding
    features = [tok(t, return_special_tokens_mask=True) for t in texts]
    original = tok.pad(features, return_tensors="pt")["input_ids"]
    batch = collator([dict(f) for f in features])
    selected = batch["labels"] != -100
    special = torch.isin(original, torch.tensor(tok.all_special_ids))  # CLS, SEP and PAD positions
    assert not selected[special].any(), "a special or padding token was selected for MLM"
    assert torch.equal(batch["labels"][selected], original[selected])  # labels hold the original tokens
    assert torch.equal(batch["input_ids"][~selected], original[~selected])  # unselected tokens untouched
    rate = selected.sum().item() / (~special).sum().item()
    assert abs(rate - 0.15) < 0.02, rate
    inputs = batch["input_ids"][selected]
    n = selected.sum().item()
    masked = (inputs == tok.mask_token_id).sum().item() / n
    kept = (inputs == original[selected]).sum().item() / n
    assert abs(masked - 0.8) < 0.04, masked
    assert abs(kept - 0.1) < 0.03, kept  # 10% kept (+ random draws that hit the original, ~0.05%)
    assert abs(1 - masked - kept - 0.1) < 0.03  # 10% random tokens


def test_clm_collator_labels_are_the_inputs_without_padding(tokenizer):
    collator = build_lm_collator(tokenizer, "clm", ContinuedPretrainingConfig())
    batch = collator([tokenizer("The quick brown fox."), tokenizer("Paris.")])
    real = batch["attention_mask"].bool()
    assert torch.equal(batch["labels"][real], batch["input_ids"][real])
    assert (batch["labels"][~real] == -100).all()


def test_mlm_run_on_tiny_bert(tmp_path, bert_dir, corpus):
    cfg = cpt_config(tmp_path, bert_dir, corpus, "mlm")
    final = continued_pretraining(cfg)
    run = tmp_path / "mlm"
    assert final["objective"] == "mlm"
    meta = json.loads((run / "run_meta.json").read_text())
    assert meta["masking"]["mlm_probability"] == 0.15 and meta["masking"]["always_mask_label_token"] is False
    assert meta["data"]["train"]["lines"] == 16  # the two blank lines of train.txt are skipped
    assert meta["optimizer"]["betas"] == [0.9, 0.98] and meta["optimizer"]["eps"] == 1e-6
    model, tok = load_model_and_tokenizer(ModelConfig(name_or_path=str(run / "best")))
    assert type(model).__name__ == "BertForMaskedLM" and tok.mask_token == "[MASK]"
    # the held-out masks are drawn once: two evaluations of the same weights give the same loss
    trainer = final["trainer"]
    assert trainer.evaluate()["eval_loss"] == pytest.approx(trainer.evaluate()["eval_loss"], abs=0)


def test_clm_run_directory_and_best_checkpoint(tmp_path, tiny_model_dir, tokenizer):
    # a corpus unlike the held-out text at a high learning rate: held-out loss rises after the first steps,
    # so the best checkpoint is an early one, not the last
    train, dev = tmp_path / "train.txt", tmp_path / "dev.txt"
    train.write_text("0 1 2 3 4 5 6 7 8 9\n" * 16)
    dev.write_text("\n".join(CORPUS[:5]) + "\n")
    cfg = cpt_config(tmp_path, tiny_model_dir, (train, dev), "clm", max_steps=6, eval_steps=1, learning_rate=5e-2,
                     warmup_ratio=0.0, save_total_limit=2)
    final = continued_pretraining(cfg)
    run = tmp_path / "clm"
    for name in ("cpt_config.yaml", "run_meta.json", "metrics.jsonl", "loss_curve.png", "final_metrics.json"):
        assert (run / name).is_file(), name
    assert final["objective"] == "clm"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = {r["step"]: r["eval_loss"] for r in records if "eval_loss" in r}
    assert sorted(evals) == [0, 1, 2, 3, 4, 5, 6] and final["start_eval_loss"] == evals[0]
    trained = {s: v for s, v in evals.items() if s > 0}  # the starting model does not compete
    best_step = min(trained, key=trained.get)
    assert best_step != 6, f"precondition: held-out loss should not be lowest at the last step: {evals}"
    assert final["best_step"] == best_step and final["eval_loss"] == pytest.approx(trained[best_step])
    # best/ holds the best checkpoint's weights (kept by the checkpoint rotation), not the last step's
    assert same(weights(run / "best"), weights(run / "checkpoints" / f"checkpoint-{best_step}"))
    assert not same(weights(run / "best"), weights(run / "checkpoints" / "checkpoint-6"))
    saved = json.loads((run / "final_metrics.json").read_text())
    assert saved["best_step"] == best_step
    model, _ = load_model_and_tokenizer(ModelConfig(name_or_path=str(run / "best")))
    assert type(model).__name__ == "LlamaForCausalLM"


@pytest.mark.parametrize("which", ["clm", "mlm"])
def test_resume_equals_uninterrupted(tmp_path, tiny_model_dir, bert_dir, corpus, which):
    model_dir = tiny_model_dir if which == "clm" else bert_dir
    full = cpt_config(tmp_path, model_dir, corpus, "full", max_steps=4, eval_steps=2)
    cut = cpt_config(tmp_path, model_dir, corpus, "cut", max_steps=4, eval_steps=2)
    continued_pretraining(full)
    continued_pretraining(cut, callbacks=[StopAtStepCallback(2)])
    assert not (tmp_path / "cut" / "best").exists()
    final = continued_pretraining(cut)  # a checkpoint exists: continues from it
    assert final["global_step"] == 4
    assert same(weights(tmp_path / "full" / "best"), weights(tmp_path / "cut" / "best"), atol=1e-6)
    steps = [json.loads(l)["step"] for l in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(l)]
    assert steps == [1, 2, 3, 4]
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        continued_pretraining(cut, resume=False)


def test_errors(tmp_path, tiny_model_dir, tokenizer, corpus):
    with pytest.raises(ConfigError, match="mlm_probability"):
        ContinuedPretrainingConfig(mlm_probability=1.5)
    with pytest.raises(ConfigError, match="random_replace_prob"):
        ContinuedPretrainingConfig(mask_replace_prob=0.9, random_replace_prob=0.2)
    with pytest.raises(ConfigError, match="mask token"):
        build_lm_collator(tokenizer, "mlm", ContinuedPretrainingConfig())
    with pytest.raises(ConfigError, match="objective: mlm does not fit LlamaForCausalLM"):
        continued_pretraining(cpt_config(tmp_path, tiny_model_dir, corpus, "bad", objective="mlm"))
    with pytest.raises(ConfigError, match="eval_file"):
        continued_pretraining(cpt_config(tmp_path, tiny_model_dir, corpus, "bad", eval_file=None))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(DataError, match="no non-blank lines"):
        read_corpus(str(empty), tokenizer, 32, "clm")
    _, stats = read_corpus(str(corpus[0]), tokenizer, 8, "clm")
    assert stats["lines"] == 16 and stats["max_tokens"] == 8 and stats["truncated_at_max_length"] == 16


def test_the_objective_is_decided_from_the_config_before_any_weight_loads(tmp_path, corpus, monkeypatch):
    """An encoder-decoder is refused, an ELECTRA discriminator (architectures ElectraForPreTraining) continues
    pre-training as the masked LM it is, both decided without loading weights."""
    import posttrain.pipelines.continued_pretraining as cpt
    from transformers import ElectraConfig

    from tiny_models import save_tiny

    loaded = []
    monkeypatch.setattr(cpt, "load_model_and_tokenizer", lambda *a, **k: loaded.append(a) or (_ for _ in ()).throw(
        RuntimeError("stop after the check")))
    t5 = save_tiny("t5", tmp_path / "t5")
    with pytest.raises(ConfigError, match=r"^cpt.head: continued pre-training needs a masked or causal LM, "
                                          r"T5ForConditionalGeneration is seq2seq_lm$"):
        continued_pretraining(cpt_config(tmp_path, t5, corpus, "t5"))
    assert loaded == []
    electra = ElectraConfig(architectures=["ElectraForPreTraining"])
    assert cpt.resolve_objective(ContinuedPretrainingConfig(), electra) == "mlm"
    with pytest.raises(ConfigError, match="objective: clm does not fit ElectraForPreTraining"):
        cpt.resolve_objective(ContinuedPretrainingConfig(objective="clm"), electra)


def test_the_cpt_command_never_replaces_a_finished_run_without_overwrite(tmp_path, tiny_model_dir, corpus, capsys):
    from posttrain.cli import main

    recipe = tmp_path / "cpt.yaml"
    recipe.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in dict(
        model=str(tiny_model_dir), train_file=str(corpus[0]), eval_file=str(corpus[1]), output_dir=str(tmp_path / "c"),
        max_length=64, per_device_batch_size=4, max_steps=2, eval_steps=2, progress=False).items()))
    assert main(["cpt", str(recipe)]) == 0
    best = tmp_path / "c" / "best" / "model.safetensors"
    before = best.read_bytes()
    capsys.readouterr()
    assert main(["cpt", str(recipe)]) == 2
    assert capsys.readouterr().err == (f"error: cpt.output_dir: {tmp_path / 'c'} holds a finished continued "
                                       "pre-training run (best/); pass --overwrite to replace it or choose a new dir\n")
    assert best.read_bytes() == before
    assert main(["cpt", str(recipe), "--resume", "--overwrite"]) == 2
    (tmp_path / "c" / "notes.txt").write_text("mine")
    assert main(["cpt", str(recipe), "max_steps=3", "--overwrite"]) == 0  # a fresh run, not a continuation
    lines = [json.loads(line) for line in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "eval_loss" in r] == [0, 2, 3]  # only the new run's evaluations
    assert (tmp_path / "c" / "notes.txt").is_file()  # files the run did not write stay
    from posttrain.models.precision import resolve_precision

    meta = json.loads((tmp_path / "c" / "run_meta.json").read_text())
    assert meta["mixed_precision"] == {"configured": "auto", "used": resolve_precision("auto")}
