"""Soft (DART-lite) prompts (methods/dart_lite.py): template rewriting, new tokens initialised from the words'
embeddings, reuse on a second call, and a soft-prompt run that trains, saves and reloads."""

from __future__ import annotations

import json

import pytest
import torch
from test_classification import task_file  # noqa: F401  (fixture)
from test_prompt_ft import toy_task  # noqa: F401  (fixture)

from conftest import make_tiny_llama, make_tokenizer
from posttrain.config import load_config
from posttrain.errors import ConfigError
from posttrain.methods import dart_lite, prompt_ft
from posttrain.tasks import get_task, render_template


def test_templates_become_pattern_tokens():
    assert dart_lite.soft_template_string("{text_a} It was {mask} .", ["<a>", "<b>", "<c>"]) == "{text_a}<a><b>{mask}<c>"
    assert dart_lite.soft_template_string("{text_a} ? {mask} , {text_b}", ["<a>", "<b>"]) == "{text_a}<a>{mask}<b> {text_b}"
    assert dart_lite.soft_template_string("{mask} : {text_a}", ["<a>"]) == "{mask}<a> {text_a}"
    assert dart_lite.literal_words("{text_a} . {mask} , I think that {text_b}") == [".", ",", "I", "think", "that"]


def test_new_tokens_start_as_the_words_embeddings_and_are_reused():
    tok = make_tokenizer()
    model = make_tiny_llama(len(tok))
    before = len(tok)
    sst2 = get_task("SST-2")
    soft = dart_lite.make_soft(sst2, tok, model)
    assert len(tok) == before + 3 + 2 and model.get_input_embeddings().weight.shape[0] == len(tok)
    table = model.get_input_embeddings().weight
    for token, word in [("<|sst2_p0|>", "It"), ("<|sst2_p2|>", "."), ("<|sst2_l1|>", "great")]:
        ids = tok(" " + word, add_special_tokens=False)["input_ids"]
        torch.testing.assert_close(table[tok.convert_tokens_to_ids(token)], table[ids].mean(0))
    text = render_template(soft, {"text_a": "a gem"}, soft.verbalizer["1"][0])
    assert text == "a gem<|sst2_p0|><|sst2_p1|><|sst2_l1|><|sst2_p2|>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids[-4:] == tok.convert_tokens_to_ids(["<|sst2_p0|>", "<|sst2_p1|>", "<|sst2_l1|>", "<|sst2_p2|>"])
    enc = prompt_ft.encode_example(tok, soft, {"text_a": "a gem", "label": "1"}, kind="causal", form="template",
                                   max_length=32, label_tokens="first", causal_scoring="slot")
    assert enc.candidates == [[tok.convert_tokens_to_ids("<|sst2_l0|>")], [tok.convert_tokens_to_ids("<|sst2_l1|>")]]
    with torch.no_grad():  # a second call (resume, a reloaded model) keeps trained rows
        table[-1].fill_(7.0)
    dart_lite.make_soft(sst2, tok, model)
    assert len(tok) == before + 5 and bool((model.get_input_embeddings().weight[-1] == 7.0).all())


def test_soft_prompts_need_full_fine_tuning():
    with pytest.raises(ConfigError, match="task.prompt_style: soft prompts train new embedding rows"):
        load_config(None, ["task.name=SST-2", "task.objective=verbalizer", "task.form=template",
                           "task.prompt_style=soft", "adapter.type=lora"])
    with pytest.raises(ConfigError, match="task.prompt_style: soft prompts replace the template's words"):
        load_config(None, ["task.name=SST-2", "task.prompt_style=soft"])


def test_a_soft_prompt_run_trains_saves_and_reloads(tmp_path, tiny_model_dir, toy_task):  # noqa: F811
    from posttrain.engine import train
    from posttrain.generation import load_for_inference
    from posttrain.methods.objectives import LabelScorer, task_for
    from posttrain.tasks import load_task_file

    cfg = load_config(None, [
        f"model.name_or_path={tiny_model_dir}", f"task.name={toy_task}", "task.train=files:train",
        "task.eval=files:dev", "task.test=files:test", "data.max_length=32", "train.per_device_batch_size=8",
        "train.max_steps=12", "train.warmup_ratio=0", "train.progress=false", "train.eval_steps=12",
        "task.form=template", "task.objective=verbalizer", "task.prompt_style=soft", "adapter.type=full",
        "train.learning_rate=1e-2", f"train.output_dir={tmp_path / 'run'}",
    ])
    final = train(cfg)
    assert final["test_accuracy"] == 1.0
    meta = json.loads((tmp_path / "run" / "run_meta.json").read_text())
    assert meta["task"]["prompt_style"] == "soft"
    model, tokenizer, _ = load_for_inference(str(tmp_path / "run"))
    assert "<|toysentiment_l1|>" in tokenizer.get_vocab()
    task = task_for(cfg, tokenizer, model)
    assert task.verbalizer["pos"] == ["<|toysentiment_l1|>"]
    rows = [{"text_a": "write a poem !", "label": "pos"}, {"text_a": "the lazy dog ?", "label": "neg"}]
    encoded, _ = prompt_ft.build_rows(tokenizer, task, rows, kind="causal", form="template", max_length=32,
                                      label_tokens="all", causal_scoring="slot", source="t")
    scorer = LabelScorer(task, encoded, ["pos", "neg"], 2, prompt_ft.PromptCollator(tokenizer.pad_token_id),
                         lambda m, b: prompt_ft.candidate_scores(m, b, "causal"))
    assert scorer.predict(model) == ["pos", "neg"]
    assert load_task_file(toy_task).name == "toy-sentiment"
