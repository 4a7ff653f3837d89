"""The architecture matrix (issue 16): every method x data kind on one architecture per family, every other
architecture on some cells, kill-and-resume per family, and DePT's encoder input on T5 against the paper's formula.

Each cell is ``matrix_cells.run_cell``: train through ``engine.train``, check parameter counts, which parameters
move, padding and eval-mode invariance, no look-ahead, and reload through the CLI; or, for a pair the family does
not support, the one-line refusal before any weight loads. ``python benchmarks/model_matrix.py`` runs every
architecture on every cell and writes docs/model_support.md.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from matrix_cells import DATA, METHODS, cell_config, run_cell, write_data
from tiny_models import ONE_PER_FAMILY, save_tiny

# the other architectures, each on cells chosen so that every method and data kind is covered across them
SPREAD = {
    "qwen2": [("lora", "instruction")], "mistral": [("dept", "lm")], "gemma": [("prompt_tuning", "verbalizer")],
    "gemma2": [("full", "instruction"), ("dept", "verbalizer")], "gpt2": [("full", "instruction"), ("lora", "lm"),
                                                                      ("dept", "classifier")],
    "phi3": [("lora", "instruction")], "gpt_neox": [("full", "verbalizer")],
    "bart": [("dept", "instruction"), ("lora", "lm"), ("full", "classifier"), ("prompt_tuning", "classifier")],
    "bert": [("dept", "classifier"), ("lora", "verbalizer")], "deberta_v2": [("lora", "classifier")],
    "distilbert": [("prompt_tuning", "classifier"), ("full", "instruction")],
    "qwen3": [("dept", "instruction")], "phi": [("lora", "verbalizer")], "falcon": [("prompt_tuning", "classifier")],
    "opt": [("lora", "instruction")], "bloom": [("full", "lm")], "olmo": [("prompt_tuning", "instruction")],
    "mt5": [("dept", "lm")], "mbart": [("lora", "instruction")], "xlm_roberta": [("dept", "verbalizer")],
    "electra": [("full", "classifier")], "albert": [("lora", "verbalizer")],
}
CELLS = [(arch, m, d) for arch in ONE_PER_FAMILY.values() for m in METHODS for d in DATA]
CELLS += [(arch, m, d) for arch, cells in SPREAD.items() for m, d in cells]

# what each family must refuse (support.py); every other cell of CELLS must train
REFUSED = {("roberta", m, d) for m in METHODS for d in ("instruction", "lm")}
REFUSED |= {("t5", m, "classifier") for m in ("prompt_tuning", "dept")} | {("bart", "prompt_tuning", "classifier")}
REFUSED |= {("distilbert", "full", "instruction")}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("matrix")
    return root, write_data(root / "files"), {}


def _model_dir(workspace, arch):
    root, _, dirs = workspace
    if arch not in dirs:
        dirs[arch] = save_tiny(arch, root / "models" / arch)
    return dirs[arch]


@pytest.mark.parametrize("arch, method, data", CELLS, ids=["-".join(c) for c in CELLS])
def test_cell_trains_and_checks_or_is_refused_up_front(workspace, arch, method, data):
    root, files, _ = workspace
    status, info = run_cell(_model_dir(workspace, arch), method, data, files, root / "runs" / "-".join((arch, method,
                                                                                                         data)))
    assert status == ("refused" if (arch, method, data) in REFUSED else "ok"), info


RESUMED = [("llama", "lora", "instruction"), ("t5", "dept", "lm"), ("roberta", "full", "verbalizer")]


@pytest.mark.parametrize("arch, method, data", RESUMED, ids=["-".join(c) for c in RESUMED])
def test_kill_and_resume_equals_the_uninterrupted_run(workspace, arch, method, data):
    from posttrain.callbacks import StopAtStepCallback
    from posttrain.engine import train

    root, files, _ = workspace
    model_dir = _model_dir(workspace, arch)
    runs = {name: root / "resume" / f"{arch}-{method}-{name}" for name in ("whole", "cut")}
    extra = ("train.max_steps=4", "train.save_steps=2")
    # at the default precision (auto: bf16 autocast on bf16 hardware), which resume must also keep bitwise
    whole, cut = (cell_config(model_dir, method, data, files, runs[n], *extra, precision="auto")
                  for n in ("whole", "cut"))
    train(whole)
    train(cut, callbacks=[StopAtStepCallback(2)])
    assert not (runs["cut"] / "final").exists() and (runs["cut"] / "checkpoints" / "checkpoint-2").is_dir()
    train(cut, resume=True)
    for path in sorted((runs["whole"] / "final").glob("*.safetensors")):
        a, b = load_file(str(path)), load_file(str(runs["cut"] / "final" / path.name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), path.name
    scores = [json.loads((runs[n] / "final_metrics.json").read_text()) for n in ("whole", "cut")]
    assert scores[0]["eval_output_loss"] == scores[1]["eval_output_loss"]


BF16 = [("llama", "lora", "verbalizer"), ("llama", "full", "instruction"), ("t5", "dept", "lm"),
        ("roberta", "full", "classifier")]


@pytest.mark.parametrize("arch, method, data", BF16, ids=["-".join(c) for c in BF16])
def test_a_bf16_run_reloaded_scores_as_it_scored_itself(workspace, arch, method, data):
    """Trained under bf16 autocast, the run's own test scores (trainer.model, patched by accelerate) equal those
    of its reload by tasks eval, loss-eval and generate (run_meta.json's precision, models/precision.py)."""
    from matrix_cells import check_reload

    from posttrain.engine import train
    from posttrain.evaluation.task_split_eval import evaluate_split

    root, files, _ = workspace
    cfg = cell_config(_model_dir(workspace, arch), method, data, files, root / "bf16" / f"{arch}-{method}-{data}",
                      precision="bf16")
    trainer = train(cfg)["trainer"]
    model, tokenizer = trainer.model, trainer.processing_class
    meta = json.loads((root / "bf16" / f"{arch}-{method}-{data}" / "run_meta.json").read_text())
    assert meta["mixed_precision"]["used"] == "bf16"
    records = None if data == "instruction" else evaluate_split(cfg, model, tokenizer, "test", progress=False)[1]
    check_reload(cfg, data, model, tokenizer, records, files)


def test_dept_on_t5_feeds_the_encoder_the_papers_input(workspace):
    """DePT (Shi & Lipani 2024, Eq. 1-2) on T5: the encoder's input embeddings are [P ; E + (alpha / sqrt r) A B]
    for the first s real tokens, computed here by hand from the saved adapter; the decoder gets no prompt."""
    from posttrain.data.seq2seq import Seq2SeqCollator
    from posttrain.engine import train

    root, files, _ = workspace
    cfg = cell_config(_model_dir(workspace, "t5"), "dept", "lm", files, root / "dept-t5")
    model = train(cfg)["trainer"].model.eval()
    seen = {}
    hook = model.base.encoder.register_forward_pre_hook(
        lambda module, args, kwargs: seen.update(kwargs), with_kwargs=True)
    decoder_hook = model.base.decoder.register_forward_pre_hook(
        lambda module, args, kwargs: seen.update(decoder=kwargs), with_kwargs=True)
    ids = [5, 9, 13, 2]
    batch = Seq2SeqCollator(0, model.config.decoder_start_token_id)([{"input_ids": ids, "labels": [7, 1],
                                                                     "loss_weights": [1.0, 1.0]}])
    with torch.no_grad():
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
              decoder_input_ids=batch["decoder_input_ids"])
    hook.remove()
    decoder_hook.remove()
    weights = load_file(str(root / "dept-t5" / "final" / "soft_prompt.safetensors"))
    p, a, b = weights["prompt"], weights["offset_a"], weights["offset_b"]
    r, alpha = cfg.adapter.dept_rank, cfg.adapter.dept_alpha
    table = model.base.get_input_embeddings().weight
    expected = torch.cat([p, table[ids] + (alpha / r ** 0.5) * (a @ b)[: len(ids)]])
    assert torch.allclose(seen["inputs_embeds"][0], expected, atol=1e-6)
    assert seen["attention_mask"].tolist() == [[1] * (len(p) + len(ids))]
    assert seen["decoder"].get("inputs_embeds") is None  # the decoder reads its own token ids


@pytest.mark.parametrize("argv, arch, message", [
    (["generate", "--model", "{model}", "--prompt", "hi"], "roberta",
     "RobertaForMaskedLM is an encoder model; generation and output-token losses need decoder-only or "
     "encoder-decoder models (score an encoder's task runs with posttrain tasks eval)"),
    (["loss-eval", "--model", "{model}", "--test", "{eval}"], "bert",
     "BertForMaskedLM is an encoder model; generation and output-token losses need decoder-only or "
     "encoder-decoder models (score an encoder's task runs with posttrain tasks eval)"),
    (["stepgame", "eval", "--model", "{model}", "--limit", "1", "--out", "{out}"], "t5",
     "T5ForConditionalGeneration is an encoder-decoder model; the StepGame harness's scores need decoder-only "
     "models"),
])
def test_commands_refuse_a_family_they_cannot_serve_before_loading(workspace, monkeypatch, capsys, argv, arch,
                                                                   message):
    import posttrain.generation
    from posttrain.cli import main

    root, files, _ = workspace
    model = _model_dir(workspace, arch)
    capsys.readouterr()  # the progress bars of saving the tiny model
    monkeypatch.setattr(posttrain.generation, "load_model_and_tokenizer",
                        lambda *a, **k: pytest.fail("the model loaded before the refusal"))
    argv = [a.format(model=model, eval=files["eval"], out=root / "refused") for a in argv]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"error: {model}: {message}"
