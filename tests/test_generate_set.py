"""generate-set: AlpacaEval model outputs from a prompt set, resumable after a kill, order-preserving batches.

A tiny random Llama (conftest) with its weights scaled up so that greedy answers are varied text rather than one
repeated newline; everything is greedy and float32.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import sys
import types

import pytest
import torch

from conftest import make_tiny_llama, make_tokenizer
from posttrain.cli import main as cli_main
from posttrain.errors import ConfigError, DataError
from posttrain.evaluation.alpaca_format import read_model_outputs
from posttrain.evaluation.generate_set import (generate_set, length_sorted_batches, load_prompt_set,
                                              prompts_fingerprint, sidecar_path, summary_path)
from posttrain.generation import generate, render_prompts

PROMPTS = [
    {"dataset": "helpful_base", "instruction": "What is the capital of France?", "output": "Paris.",
     "generator": "reference"},
    {"dataset": "oasst", "instruction": "Hi", "output": "Hello!", "generator": "reference"},
    {"dataset": "koala", "instruction": "Translate to French: good morning. Then write a poem about the sea, please.",
     "output": "Bonjour.", "generator": "reference"},
    {"dataset": "selfinstruct", "instruction": "0 1 2 3", "output": "4 5", "generator": "reference"},
    {"dataset": "vicuna", "instruction": "Summarize the text below in one sentence.", "output": "Done.",
     "generator": "reference"},
    {"dataset": "oasst", "instruction": "Write a poem about the sea.", "output": "The sea is wide.",
     "generator": "reference"},
]
SETTINGS = dict(model_spec="tiny", max_new_tokens=6, batch_size=2, progress=False)


def chatty_llama(vocab_size: int):
    """conftest's tiny Llama with larger random weights: its greedy answers vary with the prompt."""
    model = make_tiny_llama(vocab_size)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=generator) * (1.0 if "embed" in name else 0.3))
    return model


@pytest.fixture(scope="module")
def model():
    return chatty_llama(len(make_tokenizer()))


@pytest.fixture
def prompt_file(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps(PROMPTS))
    return path


def run_cli(*argv) -> int:
    """The real ``posttrain`` entry point (one 'error:' line and status 2 on user errors)."""
    return cli_main([str(a) for a in argv])


class Killed(Exception):
    pass


def kill(_indices):
    raise Killed


def test_resume_after_kill_gives_the_uninterrupted_file_without_regenerating(model, tokenizer, prompt_file, tmp_path):
    rows = load_prompt_set(prompt_file)
    generate_set(model, tokenizer, rows, tmp_path / "whole.json", **SETTINGS)

    first_batch = []

    def kill_after_first_batch(indices):
        first_batch.extend(indices)
        raise Killed

    out = tmp_path / "resumed.json"
    with pytest.raises(Killed):
        generate_set(model, tokenizer, rows, out, **SETTINGS, on_batch=kill_after_first_batch)
    assert not out.exists() and len(sidecar_path(out).read_text().splitlines()) == 1 + len(first_batch)
    with open(sidecar_path(out), "a") as handle:  # a kill in the middle of writing a line
        handle.write('{"index": 5, "instruction": "Wri')

    regenerated = []
    generate_set(model, tokenizer, rows, out, **SETTINGS, on_batch=regenerated.extend)
    assert sorted(first_batch + regenerated) == list(range(len(PROMPTS)))
    assert not set(first_batch) & set(regenerated)
    assert out.read_bytes() == (tmp_path / "whole.json").read_bytes()
    assert not sidecar_path(out).exists()


def test_sampled_run_resumes_to_the_same_answers(model, tokenizer, prompt_file, tmp_path):
    rows, sampled = load_prompt_set(prompt_file), {**SETTINGS, "temperature": 1.0, "seed": 3}
    generate_set(model, tokenizer, rows, tmp_path / "whole.json", **sampled)
    out = tmp_path / "resumed.json"
    with pytest.raises(Killed):
        generate_set(model, tokenizer, rows, out, **sampled, on_batch=kill)
    generate_set(model, tokenizer, rows, out, **sampled)
    assert out.read_bytes() == (tmp_path / "whole.json").read_bytes()
    greedy = generate_set(model, tokenizer, rows, tmp_path / "greedy.json", **SETTINGS)
    assert greedy["settings"]["temperature"] == 0.0
    assert out.read_bytes() != (tmp_path / "greedy.json").read_bytes()


def test_limit_then_extend_generates_only_the_new_rows(model, tokenizer, prompt_file, tmp_path):
    rows, out = load_prompt_set(prompt_file), tmp_path / "out.json"
    generate_set(model, tokenizer, rows, out, **SETTINGS, limit=3)
    assert len(read_model_outputs(out)) == 3
    regenerated = []
    generate_set(model, tokenizer, rows, out, **SETTINGS, on_batch=regenerated.extend)
    assert sorted(regenerated) == [3, 4, 5]
    generate_set(model, tokenizer, rows, tmp_path / "whole.json", **SETTINGS)
    assert out.read_bytes() == (tmp_path / "whole.json").read_bytes()
    regenerated.clear()  # other settings: the finished file is not reused
    generate_set(model, tokenizer, rows, out, **{**SETTINGS, "max_new_tokens": 3}, on_batch=regenerated.extend)
    assert sorted(regenerated) == list(range(len(PROMPTS)))


def test_length_sorted_batches_match_batch_size_one_and_keep_order(model, tokenizer, prompt_file, tmp_path):
    rows, out = load_prompt_set(prompt_file), tmp_path / "out.json"
    generate_set(model, tokenizer, rows, out, **{**SETTINGS, "batch_size": 4})
    written = read_model_outputs(out)
    one_by_one = generate(model, tokenizer, [p["instruction"] for p in PROMPTS], max_new_tokens=6, batch_size=1)
    assert [row["instruction"] for row in written] == [p["instruction"] for p in PROMPTS]
    assert [row["output"] for row in written] == one_by_one
    assert len(set(one_by_one)) > 3  # the answers differ between prompts, so a shuffled order would show


def test_length_sorted_batches_group_similar_lengths():
    lengths = {0: 5, 1: 50, 2: 7, 3: 49, 4: 5}
    assert length_sorted_batches(lengths, 2) == [[1, 3], [2, 0], [4]]


def test_instruction_file_prompts_end_before_the_last_assistant_turn(tokenizer, tmp_path):
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit."},
             {"role": "assistant", "content": "Apple."}, {"role": "user", "content": "Another one?"},
             {"role": "assistant", "content": "Pear."}]
    rows = []
    for fmt, line in [("messages", {"messages": turns}),
                      ("alpaca", {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}),
                      ("prompt_completion", {"prompt": "Say hi.", "completion": "Hi!"})]:
        path = tmp_path / f"{fmt}.jsonl"  # one row format per file
        path.write_text(json.dumps(line) + "\n")
        rows += load_prompt_set(path)
    assert rows[0]["prompt"] == turns[:4] and rows[0]["instruction"] == "Another one?"
    assert rows[1]["prompt"] == [{"role": "user", "content": "Add the numbers.\n\n2 and 3"}]
    assert rows[1]["instruction"] == "Add the numbers.\n\n2 and 3" and rows[2]["instruction"] == "Say hi."
    assert [row["dataset"] for row in rows] == ["messages", "alpaca", "prompt_completion"]
    text = render_prompts(tokenizer, [rows[0]["prompt"]])[0]
    assert "Apple." in text and "Pear." not in text and text.endswith("<|im_start|>assistant\n")
    assert text.count("<|im_start|>system") == 1  # the row's own system message, no injected one


def test_instruction_rows_without_a_prompt_are_refused(tmp_path):
    path = tmp_path / "lm.jsonl"
    path.write_text('{"text": "plain text"}\n')
    with pytest.raises(DataError, match=r"lm.jsonl:1: a plain 'text' row has no prompt"):
        load_prompt_set(path)
    path.write_text('{"messages": [{"role": "assistant", "content": "Hello"}]}\n')
    with pytest.raises(DataError, match=r"lm.jsonl:1: no user message before the last assistant turn"):
        load_prompt_set(path)


def test_written_file_is_alpaca_eval_model_outputs(model, tokenizer, prompt_file, tmp_path):
    out = tmp_path / "out.json"
    summary = generate_set(model, tokenizer, load_prompt_set(prompt_file), out, **SETTINGS)
    rows = read_model_outputs(out)
    assert all(set(row) == {"dataset", "instruction", "output", "generator"} for row in rows)
    assert [row["dataset"] for row in rows] == [p["dataset"] for p in PROMPTS]
    assert {row["generator"] for row in rows} == {"tiny"}
    assert json.loads(summary_path(out).read_text()) == summary
    assert summary["kind"] == "generation" and summary["model"] == "tiny"
    assert set(summary["metrics"]) == {"n", "avg_output_chars", "avg_output_words", "avg_output_tokens"}
    assert summary["metrics"]["n"] == len(PROMPTS) and summary["settings"]["temperature"] == 0.0


@pytest.mark.parametrize("change, message", [
    ({"max_new_tokens": 7}, "max_new_tokens was 6, now 7"),
    ({"model_spec": "other"}, "model was 'tiny', now 'other'"),
    ({"drop_first_prompt": True}, "the prompt set differs"),
])
def test_sidecar_of_another_run_is_refused_in_one_line(model, tokenizer, prompt_file, tmp_path, change, message):
    rows, out = load_prompt_set(prompt_file), tmp_path / "out.json"
    with pytest.raises(Killed):
        generate_set(model, tokenizer, rows, out, **SETTINGS, on_batch=kill)
    change = dict(change)
    if change.pop("drop_first_prompt", False):
        rows = rows[1:]
    with pytest.raises(ConfigError) as err:
        generate_set(model, tokenizer, rows, out, **{**SETTINGS, **change})
    text = str(err.value)
    assert len(text.splitlines()) == 1 and text.startswith(f"{sidecar_path(out)}: resume file belongs to another run")
    assert message in text


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("chatty-llama")
    model.save_pretrained(path)
    make_tokenizer().save_pretrained(path)
    return path


def test_cli_generate_set(model_dir, prompt_file, tmp_path, capsys):
    out = tmp_path / "out.json"
    code = run_cli("generate-set", "--model", model_dir, "--prompts", prompt_file, "--limit", 4, "--out", out,
                   "--generator", "chatty", "--max-new-tokens", 5, "--batch-size", 3)
    assert code == 0 and capsys.readouterr().out.startswith(f"wrote {out}: 4 outputs of chatty")
    rows = read_model_outputs(out)
    assert len(rows) == 4 and {row["generator"] for row in rows} == {"chatty"}
    assert json.loads(summary_path(out).read_text())["limit"] == 4
    before = out.read_bytes()
    again = ("generate-set", "--model", "missing-model-dir", "--prompts", prompt_file, "--limit", 2, "--out", out)
    assert run_cli(*again) == 2  # a finished set is never replaced without a word (before any model loads)
    assert capsys.readouterr().err == (f"error: --out: {out} holds a finished generation set; pass --overwrite to "
                                       "replace it or choose another --out\n") and out.read_bytes() == before
    assert run_cli("generate-set", "--model", model_dir, "--prompts", prompt_file, "--limit", 2, "--out", out,
                   "--generator", "chatty", "--max-new-tokens", 5, "--overwrite") == 0
    assert len(read_model_outputs(out)) == 2


def test_cli_refuses_another_runs_resume_file_before_loading_the_model(prompt_file, tmp_path, capsys):
    out = tmp_path / "out.json"
    header = {"prompts_sha256": prompts_fingerprint(load_prompt_set(prompt_file)), "model": "missing-model-dir",
              "dtype": "float32", "chat_template": "tulu", "system": None, "max_new_tokens": 6, "temperature": 0.0,
              "top_p": 1.0, "seed": 0}
    sidecar_path(out).write_text(json.dumps({"header": header}) + "\n")
    # the model does not exist: the resume check must come first, or the error would be about the model
    assert run_cli("generate-set", "--model", "missing-model-dir", "--prompts", prompt_file, "--out", out,
                   "--max-new-tokens", 7) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {sidecar_path(out)}: resume file belongs to another run") and \
        "max_new_tokens was 6, now 7" in err and len(err.splitlines()) == 1


def test_cli_generate_set_bad_prompt_file_is_one_error_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"instruction": 3}]')
    assert run_cli("generate-set", "--prompts", bad, "--out", tmp_path / "o.json") == 2
    err = capsys.readouterr().err
    assert err == f"error: {bad}: row 0: field 'instruction' must be a string, got int\n"


def _shim_pkg_resources(monkeypatch):
    """alpaca_eval 0.6.6 imports pkg_resources, which setuptools >= 82 no longer ships; it uses two functions."""
    if importlib.util.find_spec("pkg_resources") is None:
        from packaging.version import parse

        shim = types.ModuleType("pkg_resources")
        shim.parse_version = parse
        shim.get_distribution = lambda name: types.SimpleNamespace(version=importlib.metadata.version(name))
        monkeypatch.setitem(sys.modules, "pkg_resources", shim)


def test_alpaca_eval_loads_and_merges_the_output(model, tokenizer, prompt_file, tmp_path, monkeypatch):
    """The checks alpaca_eval.main.evaluate runs before it calls a judge: load the file, name the generator, merge
    with the reference outputs on 'instruction', preprocess the pairs. The judge call itself is replaced."""
    _shim_pkg_resources(monkeypatch)
    pytest.importorskip("alpaca_eval")
    from alpaca_eval import constants, utils
    from alpaca_eval.annotators import PairwiseAnnotator

    out = tmp_path / "out.json"
    generate_set(model, tokenizer, load_prompt_set(prompt_file), out, **SETTINGS)
    model_outputs = utils.load_or_convert_to_dataframe(out)
    reference_outputs = utils.load_or_convert_to_dataframe(prompt_file)
    assert utils.get_generator_name(None, model_outputs) == "tiny"
    assert int(model_outputs["output"].str.len().mean()) >= 0  # evaluate's avg_length: every output a string

    annotator = PairwiseAnnotator(annotators_config=constants.DEFAULT_ANNOTATOR_CONFIG)
    judged = {}
    annotator.__call__ = lambda pairs, **_: judged.setdefault("pairs", pairs)  # instead of the judge's API call
    annotator.annotate_head2head(outputs_1=reference_outputs, outputs_2=model_outputs)
    pairs = judged["pairs"]
    assert len(pairs) == len(PROMPTS)
    assert list(pairs["output_2"]) == [row["output"] for row in read_model_outputs(out)]
    assert set(pairs["generator_2"]) == {"tiny"}
    assert len(PairwiseAnnotator._preprocess(annotator, pairs)) == len(PROMPTS)
