"""StepGame LM harness (Shi, Zhang, Lipani, AAAI 2022): answer normalisation, prompts, eval end to end on the tiny
model, the lm-evaluation-harness export and one-line errors for bad input."""

import json
import random

import pytest
import torch

from posttrain.cli import main
from posttrain.errors import ConfigError
from posttrain.stepgame import prompts
from posttrain.stepgame.formats import write_examples
from posttrain.stepgame.generator import generate
from posttrain.stepgame.harness import load_shot_pool


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """clean/noise qa{1,2}_valid.json (4 stories each) and a clean qa1_train.json pool."""
    root = tmp_path_factory.mktemp("stepgame")
    for kind, noise in (("clean", False), ("noise", True)):
        for k in (1, 2):
            write_examples(root / kind / f"qa{k}_valid.json", generate(k, 4, seed=k, noise=noise), "json")
    write_examples(root / "clean" / "qa1_train.json", generate(1, 12, seed=50, noise=False), "json")
    return root


def run(capsys, *argv):
    code = main(["stepgame", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


EXAMPLE = {"id": "0", "story": ["A is left of B.", " C is above A. "], "question": "What is the relation of the agent "
           "C to the agent B?", "label": "upper-left", "k_hop": 2}


@pytest.mark.parametrize("text, label", [
    ("left", "left"), (" Left.", "left"), ("upper left", "upper-left"), ("Upper-Left.", "upper-left"),
    ("the answer is lower right", "lower-right"), ("top-left", "upper-left"), ("Bottom right", "lower-right"),
    ("upper_right", "upper-right"), ("upper\u2013right", "upper-right"), ("UPPERLEFT", "upper-left"),
    ("overlapping", "overlap"), ("They overlap.", "overlap"), ("C is above B", "above"), ("below", "below"),
    ("Agent C is to the upper left of agent B. Upper-left.", "upper-left"),
    ("above and to the left", None), ("left or right", None), ("up", None), ("north", None), ("leftmost", None),
    ("", None), ("I don't know", None), ("upright", None),
])
def test_normalise_answer(text, label):
    assert prompts.normalise_answer(text) == label


def test_zero_shot_prompt_and_choices():
    text = prompts.build_context(EXAMPLE)
    assert text == (prompts.INSTRUCTION + "\n\nStory: A is left of B. C is above A.\nQuestion: What is the relation of "
                    "the agent C to the agent B?\nAnswer:")
    assert prompts.choice_texts(chat=False) == [" " + w for w in prompts.ANSWER_WORDS]
    assert prompts.choice_texts(chat=True) == list(prompts.ANSWER_WORDS)
    assert sorted(prompts.ANSWER_WORDS) == sorted(prompts.LABELS) and len(prompts.ANSWER_WORDS) == 9


def test_few_shot_plain_and_chat(tokenizer):
    shots = [dict(EXAMPLE, label="left"), dict(EXAMPLE, question=EXAMPLE["question"].replace("C to", "A to"))]
    plain = prompts.build_context(EXAMPLE, shots)
    blocks = plain.split("\n\n" + prompts.INSTRUCTION)
    assert len(blocks) == 3 and blocks[0].endswith("Answer: left") and blocks[1].endswith("Answer: upper-left")
    assert plain.endswith(prompts.example_prompt(EXAMPLE))
    messages = prompts.build_messages(EXAMPLE, shots)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert messages[1]["content"] == "left"
    chat = prompts.build_context(EXAMPLE, shots, tokenizer=tokenizer, chat_template=None)
    assert chat.startswith("<|im_start|>system") and chat.endswith("<|im_start|>assistant\n")
    assert chat.count("<|im_start|>user") == 3 and "Answer:<|im_end|>\n<|im_start|>assistant\nleft<|im_end|>" in chat


def test_few_shot_never_uses_the_evaluated_example(data):
    pool = [dict(EXAMPLE, id=str(i), question=EXAMPLE["question"].replace("C", "ABCDEFGH"[i])) for i in range(8)]
    target = pool[3]
    for seed in range(30):
        shots = prompts.sample_shots(pool, 7, random.Random(seed), exclude=target)
        assert len(shots) == 7 and target not in shots and len({s["id"] for s in shots}) == 7
    with pytest.raises(ConfigError, match="must not come from an evaluated file"):
        load_shot_pool([data / "clean" / "qa1_valid.json"], [data / "clean" / "qa1_valid.json"])


def test_lm_eval_doc_to_text_renders_the_harness_prompt():
    jinja2 = pytest.importorskip("jinja2")
    doc = {"story": prompts.story_text(EXAMPLE), "question": EXAMPLE["question"]}
    assert jinja2.Template(prompts.LM_EVAL_DOC_TO_TEXT).render(**doc) == prompts.example_prompt(EXAMPLE)


def direct_mc(model_dir, path, chat: bool):
    """Accuracy computed from scratch: full logits of context + choice, log-softmax, argmax over the 9 words."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from posttrain.stepgame.formats import read_examples

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    correct = 0
    examples = read_examples(path)
    for ex in examples:
        context = prompts.build_context(ex, tokenizer=tok, chat_template=None if chat else False)
        ctx = tok(context, add_special_tokens=False)["input_ids"]
        scores = []
        for choice in prompts.choice_texts(chat):
            cont = tok(context + choice, add_special_tokens=False)["input_ids"][len(ctx):]
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([ctx + cont])).logits[0].float(), -1)
            scores.append(sum(logp[len(ctx) - 1 + j, t].item() for j, t in enumerate(cont)))
        correct += prompts.ANSWER_WORDS[max(range(9), key=scores.__getitem__)] == ex["label"]
    return correct / len(examples)


@pytest.mark.parametrize("chat", ["on", "off"])
def test_eval_mc_end_to_end(capsys, tmp_path, data, tiny_model_dir, chat):
    out = tmp_path / "out"
    code, stdout, _ = run(capsys, "eval", "--model", tiny_model_dir, "--data", data, "--k", "1-2", "--chat", chat,
                          "--out", out, "--quiet")
    assert code == 0 and "| k |" in stdout
    results = json.loads((out / "results.json").read_text())
    s = results["settings"]
    assert s["mode"] == "mc" and s["shots"] == 0 and s["chat"] is (chat == "on") and s["model"] == str(tiny_model_dir)
    assert s["answer_words"] == list(prompts.ANSWER_WORDS) and s["prompt_template"] == prompts.PROMPT_TEMPLATE
    assert s["scorer"] == "prefix-cache"
    assert {(r["kind"], r["k"], r["n"]) for r in results["files"]} == {(kd, k, 4) for kd in ("clean", "noise")
                                                                       for k in (1, 2)}
    assert all({"accuracy", "acc_norm", "correct", "file"} <= set(r) for r in results["files"])
    assert (out / "accuracy_vs_k.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "results.md").read_text() in stdout
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 16
    for kind in ("clean", "noise"):
        for k in (1, 2):
            want = direct_mc(tiny_model_dir, data / kind / f"qa{k}_valid.json", chat == "on")
            assert results["by_kind"][kind][str(k)]["accuracy"] == pytest.approx(want)


def test_eval_gen_few_shot(capsys, tmp_path, data, tiny_model_dir):
    out = tmp_path / "gen"
    code, _, _ = run(capsys, "eval", "--model", tiny_model_dir, "--files", data / "clean" / "qa1_valid.json",
                     "--mode", "gen", "--shots", "2", "--shots-from", data / "clean" / "qa1_train.json",
                     "--max-new-tokens", "4", "--limit", "3", "--out", out, "--quiet")
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert results["settings"]["shots"] == 2 and results["overall"]["n"] == 3 == len(preds)
    assert results["files"][0]["unparseable"] == sum(p["prediction"] is None for p in preds)
    assert all(p["prediction"] == prompts.normalise_answer(p["generation"]) for p in preds)


def test_export_lm_eval(capsys, tmp_path, data):
    yaml = pytest.importorskip("yaml")
    jinja2 = pytest.importorskip("jinja2")
    out = tmp_path / "task"
    code, stdout, _ = run(capsys, "export-lm-eval", "--out", out, "--data", data, "--k", "1-2", "--limit", "3",
                          "--shots-from", data / "clean" / "qa1_train.json", "--fewshot-pool", "5")
    assert code == 0 and "--include_path" in stdout
    group = yaml.safe_load((out / "stepgame.yaml").read_text())
    assert group["group"] == "stepgame" and len(group["task"]) == 4
    template = yaml.safe_load((out / "_stepgame_template_yaml").read_text())
    assert template["output_type"] == "multiple_choice" and template["doc_to_choice"] == list(prompts.ANSWER_WORDS)
    assert template["doc_to_target"] == "gold" and template["target_delimiter"] == " "
    assert template["dataset_path"] == "json" and template["fewshot_split"] == "train"
    task = yaml.safe_load((out / "stepgame_noise_k2.yaml").read_text())
    assert task["include"] == "_stepgame_template_yaml" and task["task"] == "stepgame_noise_k2"
    files = task["dataset_kwargs"]["data_files"]
    docs = [json.loads(line) for line in open(files["test"])]
    assert len(docs) == 3 and len(open(files["train"]).readlines()) == 5
    from posttrain.stepgame.formats import read_examples

    for doc, ex in zip(docs, read_examples(data / "noise" / "qa2_valid.json")):
        assert jinja2.Template(template["doc_to_text"]).render(**doc) == prompts.example_prompt(ex)
        assert template["doc_to_choice"][doc["gold"]] == ex["label"]


@pytest.mark.parametrize("argv, message", [
    (["--files", "missing.json"], "missing.json: file not found"),
    (["--mode", "logits"], "--mode 'logits': expected one of mc, gen"),
    (["--k", "11"], "hops must be between 1 and 10"),
    (["--chat", "maybe"], "--chat 'maybe'"),
])
def test_bad_input_is_one_line(capsys, tmp_path, data, argv, message):
    code, _, err = run(capsys, "eval", "--data", data, "--out", tmp_path, *argv)
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1


def test_shots_from_the_evaluated_file_is_refused(capsys, tmp_path, data, tiny_model_dir):
    path = data / "clean" / "qa1_valid.json"
    code, _, err = run(capsys, "eval", "--model", tiny_model_dir, "--files", path, "--shots", "1", "--shots-from",
                       path, "--out", tmp_path, "--quiet")
    assert code == 2 and "must not come from an evaluated file" in err


@pytest.mark.parametrize("argv, message", [
    (["--k", "1-"], "--k '1-': expected a number"),
    (["--k", "3-1"], "--k '3-1': empty range 3-1"),
    (["--limit", "-1"], "--limit -1: must be >= 0"),
    (["--batch-size", "0"], "--batch-size 0: must be >= 1"),
    (["--shots", "-2"], "--shots -2: must be >= 0"),
    (["--max-new-tokens", "0"], "--max-new-tokens 0: must be >= 1"),
    (["--chat-template", "nope"], "--chat-template 'nope': expected tokenizer"),
    (["--data", "/nonexistent-stepgame"], "no StepGame valid files"),
])
def test_bad_settings_are_one_line_and_come_before_the_model(capsys, tmp_path, data, argv, message):
    # the model does not exist: these errors must come first (no model is loaded for a bad command line)
    code, _, err = run(capsys, "eval", "--model", tmp_path / "no-model", "--data", data, "--out", tmp_path, *argv)
    assert code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1


def test_bad_data_is_reported_before_the_model_loads(capsys, tmp_path):
    bad = tmp_path / "noise" / "qa3_valid.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps({"0": {"story": ["A is left of B."], "label": "north",
                               "question": "What is the relation of the agent A to the agent B?"}}))
    code, _, err = run(capsys, "eval", "--model", tmp_path / "no-model", "--files", bad, "--out", tmp_path)
    assert code == 2 and "unknown label" in err and "no-model" not in err and err.count("\n") == 1
    code, _, err = run(capsys, "export-sft", "--files", bad, "--out", tmp_path / "x.jsonl")
    assert code == 2 and "unknown label" in err and err.count("\n") == 1


def test_kind_of_keeps_generated_splits_apart():
    from posttrain.stepgame.harness import kind_of

    assert kind_of("../shared/data/stepgame/noise/qa7_valid.json") == "noise"
    assert kind_of("runs/stepgame/generated/noise/qa7_test.json") == "noise-test"
    assert kind_of("x/clean/qa1_train.json") == "clean-train"
    assert kind_of("somewhere/mine.jsonl") == "somewhere"


def test_answer_delimiter_follows_the_template(tokenizer):
    from posttrain.data.chat import NAMED_TEMPLATES
    from posttrain.stepgame.harness import answer_delimiter

    assert answer_delimiter(tokenizer, None) == ""                       # ChatML: answer right after the header
    assert answer_delimiter(tokenizer, NAMED_TEMPLATES["tulu"]) == ""
    assert answer_delimiter(tokenizer, NAMED_TEMPLATES["plain"]) == "\n"  # plain: prompt, newline, answer


def test_offset_length_check():
    from types import SimpleNamespace

    from posttrain.stepgame.harness import _check_offset_length

    _check_offset_length(SimpleNamespace(rank=2, max_length=10), [10, 3])
    _check_offset_length(SimpleNamespace(), [10_000])  # not a DePT model
    with pytest.raises(ConfigError, match="11 tokens but the DePT model's offset length is s=10"):
        _check_offset_length(SimpleNamespace(rank=2, max_length=10), [11])


def test_export_sft_rows_are_the_harness_prompt(capsys, tmp_path, data, tokenizer):
    from posttrain.data.chat import render_example
    from posttrain.data.instruction import load_examples
    from posttrain.stepgame.formats import read_examples
    from posttrain.stepgame.harness import encode_choices, encode_context

    out = tmp_path / "sft.jsonl"
    code, stdout, _ = run(capsys, "export-sft", "--data", data, "--k", "1", "--out", out, "--shuffle-seed", "-1")
    assert code == 0 and "wrote 12 prompt/completion rows" in stdout
    examples = read_examples(data / "clean" / "qa1_train.json")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [{"prompt": prompts.example_prompt(ex), "completion": ex["label"], "k_hop": 1} for ex in examples]
    # what posttrain train renders == what the harness scores: context ids + the label's choice ids
    for ex, conv in zip(examples, load_examples(out)):
        context = prompts.build_context(ex, tokenizer=tokenizer, chat_template=None)
        want = encode_context(tokenizer, context, True) + encode_choices(tokenizer, context, [ex["label"]])[0]
        assert render_example(tokenizer, conv, None).input_ids[: len(want)] == want
    shuffled = tmp_path / "shuffled.jsonl"
    run(capsys, "export-sft", "--data", data, "--k", "1", "--out", shuffled, "--limit", "10")
    again = tmp_path / "again.jsonl"
    run(capsys, "export-sft", "--data", data, "--k", "1", "--out", again, "--limit", "10")
    lines = shuffled.read_text().splitlines()
    assert len(lines) == 10 and lines == again.read_text().splitlines() and lines != out.read_text().splitlines()[:10]
    code, _, err = run(capsys, "export-sft", "--data", data, "--out", tmp_path / "y.jsonl")  # default --k 1-5
    assert code == 2 and "qa2_train.json: file not found (and 3 more)" in err and err.count("\n") == 1


def direct_mc_model(model, tokenizer, examples, template):
    """Accuracy from full logits of any model (PEFT, soft prompt) on the harness's chat prompt."""
    correct = 0
    for ex in examples:
        context = prompts.build_context(ex, tokenizer=tokenizer, chat_template=template)
        ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
        scores = []
        for choice in prompts.choice_texts(True):
            cont = tokenizer(context + choice, add_special_tokens=False)["input_ids"][len(ctx):]
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ctx + cont])).logits[0].float()
            logp = torch.log_softmax(logits[-len(ctx + cont):], -1)
            scores.append(sum(logp[len(ctx) - 1 + j, t].item() for j, t in enumerate(cont)))
        correct += prompts.ANSWER_WORDS[max(range(9), key=scores.__getitem__)] == ex["label"]
    return correct / len(examples)


@pytest.mark.parametrize("adapter", ["lora", "dept"])
def test_eval_a_fine_tuned_run_directory(capsys, tmp_path, data, tiny_model_dir, adapter):
    """export-sft -> posttrain train -> stepgame eval --model RUN_DIR (LoRA merged; DePT through its wrapper)."""
    from posttrain.config import load_config
    from posttrain.engine import train
    from posttrain.generation import load_for_inference
    from posttrain.stepgame.formats import read_examples

    sft = tmp_path / "sft.jsonl"
    run(capsys, "export-sft", "--data", data, "--k", "1", "--out", sft)
    extra = {"lora": ["adapter.type=lora", "adapter.lora_r=4"],
             "dept": ["adapter.type=dept", "adapter.num_virtual_tokens=4", "adapter.dept_rank=2",
                      "adapter.dept_max_length=320", "adapter.prompt_init=random"]}[adapter]
    run_dir = tmp_path / adapter
    train(load_config(None, [f"model.name_or_path={tiny_model_dir}", f"data.train_file={sft}", "data.max_length=320",
                             "train.per_device_batch_size=4", "train.max_steps=2", "train.learning_rate=1e-2",
                             "train.progress=false", f"train.output_dir={run_dir}", *extra]))
    target = data / "clean" / "qa1_valid.json"
    code, _, _ = run(capsys, "eval", "--model", run_dir, "--files", target, "--out", tmp_path / "eval", "--quiet")
    assert code == 0
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["settings"]["chat"] is True and results["settings"]["chat_template"] == "tokenizer"
    assert results["settings"]["scorer"] == ("prefix-cache" if adapter == "lora" else "full-sequence")
    model, tokenizer, _ = load_for_inference(str(run_dir))  # unmerged LoRA / the soft-prompt wrapper
    want = direct_mc_model(model.eval(), tokenizer, read_examples(target), None)
    assert results["overall"]["accuracy"] == pytest.approx(want)
    if adapter == "dept":  # noisy k=2 prompts (~375 tokens here) exceed the offset length s=320: one line
        code, _, err = run(capsys, "eval", "--model", run_dir, "--files", data / "noise" / "qa2_valid.json",
                           "--out", tmp_path / "eval2", "--quiet")
        last = err.rstrip("\n").split("\n")[-1]  # after the weight-loading bar: the model says what s is
        assert code == 2 and last.startswith("error: ") and "offset length is s=320" in last
        assert "Traceback" not in err
