"""data/chat.py + data/instruction_loss.py: exact masks for each loss mode on hand-written examples."""

import pytest

from posttrain.config import LossConfig
from posttrain.data.chat import INSTRUCTION, NAMED_TEMPLATES, OUTPUT, TEMPLATE, render_example, resolve_template
from posttrain.errors import DataError
from posttrain.data.instruction_loss import labels_and_weights, token_weights

MULTI = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And?"},
        {"role": "assistant", "content": "Bonjour."},
    ]
}


def trained_runs(tokenizer, example, loss, template=None):
    """Decoded text of each maximal run of trained tokens (what the loss sees, in order)."""
    r = render_example(tokenizer, example, template)
    _, weights = labels_and_weights(r.input_ids, r.segments, loss)
    runs, current = [], []
    for tok, w in zip(r.input_ids, weights):
        if w > 0:
            current.append(tok)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs


def test_output_only_trains_answers_and_end_of_turn(tokenizer):
    assert trained_runs(tokenizer, MULTI, LossConfig(mode="output_only")) == ["Paris.<|im_end|>", "Bonjour.<|im_end|>"]


def test_im_paper_trains_instruction_and_output_content_not_template(tokenizer):
    runs = trained_runs(tokenizer, MULTI, LossConfig(mode="instruction_and_output"))
    assert runs == ["Be brief.", "What is the capital of France?", "Paris.<|im_end|>", "And?", "Bonjour.<|im_end|>"]


def test_im_reference_code_masks_only_leading_prefix(tokenizer):
    r = render_example(tokenizer, MULTI, None)
    runs = trained_runs(tokenizer, MULTI, LossConfig(mode="instruction_and_output", im_mask="reference_code"))
    assert len(runs) == 1
    assert r.text == "<|im_start|>system\n" + runs[0]  # everything after the leading role tag, later tags included
    assert "<|im_start|>user" in runs[0] and "<|im_start|>assistant" in runs[0]


def test_all_tokens_trains_everything_but_the_first(tokenizer):
    r = render_example(tokenizer, MULTI, None)
    labels, weights = labels_and_weights(r.input_ids, r.segments, LossConfig(mode="all_tokens"))
    assert weights == [0.0] + [1.0] * (len(r.input_ids) - 1)
    assert labels == [-100] + r.input_ids[1:]


def test_prompt_loss_weight_interpolates(tokenizer):
    r = render_example(tokenizer, MULTI, None)
    w = token_weights(r.segments, LossConfig(mode="instruction_and_output", prompt_loss_weight=0.25))
    expected = [{OUTPUT: 1.0, INSTRUCTION: 0.25, TEMPLATE: 0.0}[s] for s in r.segments]
    assert w == expected
    it = token_weights(r.segments, LossConfig(mode="output_only"))
    zero = token_weights(r.segments, LossConfig(mode="instruction_and_output", prompt_loss_weight=0.0))
    assert it == zero  # lambda = 0 is IT


def test_injected_default_system_prompt_is_template(tokenizer):
    example = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}
    r = render_example(tokenizer, example, None)
    assert "You are a test assistant" in r.text
    assert trained_runs(tokenizer, example, LossConfig(mode="instruction_and_output")) == ["Hi", "Hello.<|im_end|>"]


def test_tulu_template_matches_the_im_reference_format(tokenizer):
    template = NAMED_TEMPLATES["tulu"]
    r = render_example(tokenizer, MULTI, template)
    eos = tokenizer.eos_token
    assert r.text == (
        f"{tokenizer.bos_token}<|system|>\nBe brief.\n<|user|>\nWhat is the capital of France?\n<|assistant|>\n"
        f"Paris.{eos}\n<|user|>\nAnd?\n<|assistant|>\nBonjour.{eos}"
    )
    assert trained_runs(tokenizer, MULTI, LossConfig(mode="output_only"), template) == [f"Paris.{eos}", f"Bonjour.{eos}"]


def test_alpaca_and_prompt_completion_rows(tokenizer):
    from posttrain.data.instruction import normalise_row

    alpaca = normalise_row({"instruction": "Translate to French:", "input": "good morning", "output": "Bonjour."}, "alpaca")
    assert alpaca["messages"][0]["content"] == "Translate to French:\n\ngood morning"
    assert trained_runs(tokenizer, alpaca, LossConfig(mode="instruction_and_output")) == [
        "Translate to French:\n\ngood morning", "Bonjour.<|im_end|>"]
    pc = normalise_row({"prompt": "What is 2 + 2?", "completion": "4"}, "prompt_completion")
    assert trained_runs(tokenizer, pc, LossConfig(mode="output_only")) == ["4<|im_end|>"]


def test_plain_text_rows_are_all_output(tokenizer):
    r = render_example(tokenizer, {"text": "The quick brown fox."}, None)
    assert tokenizer.decode(r.input_ids) == "The quick brown fox." + tokenizer.eos_token
    assert set(r.segments) == {OUTPUT}
    for mode in ("output_only", "instruction_and_output", "all_tokens"):
        _, weights = labels_and_weights(r.input_ids, r.segments, LossConfig(mode=mode))
        assert weights == [0.0] + [1.0] * (len(r.input_ids) - 1)


def test_unknown_template_name_is_a_clear_error(tokenizer):
    with pytest.raises(DataError, match="unknown template 'tulip'"):
        resolve_template(tokenizer, "tulip")


def test_pieces_reassemble_the_rendered_text(tokenizer):
    for example in (MULTI, {"text": "The quick brown fox."}):
        r = render_example(tokenizer, example, None)
        assert len(r.pieces()) == len(r.input_ids)
        assert "".join(r.pieces()) == r.text


def test_inspect_data_plain_markers(tokenizer):
    import io

    from posttrain.config import load_config
    from posttrain.data.inspect_data import inspect

    out = io.StringIO()
    counts = inspect(load_config(None), tokenizer, [MULTI], n=1, all_modes=True, stream=out, colour=False)
    text = out.getvalue()
    assert "{+Paris.<|im_end|>+}" in text and "[-<|im_start|>system\nBe brief.<|im_end|>" in text
    it = counts["output_only (IT)"]
    r = render_example(tokenizer, MULTI, None)
    assert it["trained"] == sum(1 for s in r.segments if s == OUTPUT)
    assert it["trained"] + it["masked"] == it["tokens"] == len(r.input_ids)
