"""One cell of the architecture matrix: an architecture x method x data kind, trained and checked end to end.

``run_cell`` trains a tiny random model through ``engine.train`` (the code path of ``posttrain train``) and checks
what issue 16 asks of every pair that runs, raising AssertionError on the first failure:

- the trainable-parameter count equals the method's formula for that model (full: every parameter; LoRA: r (in +
  out) per wrapped linear layer, plus the head; prompt tuning: m d; DePT: m d + r (s + d); plus any new head);
- every parameter meant to train moved, every frozen one is bit-identical;
- scores are the same alone and inside a padded batch (instruction data: right and left padding), and two
  evaluations of the same weights are bit-identical (eval mode);
- no loss position sees a later target (perturb target k: the losses of the targets before it are unchanged);
- the saved run, reloaded by ``posttrain tasks eval`` / ``loss-eval`` / ``generate``, scores as the trained model did.

A pair that the family does not support must be refused by ``engine.train`` before any weight loads, with
``support.refusal``'s line; ``run_cell`` returns ``("refused", reason)`` then, else ``("ok", details)``.
Used by tests/test_model_matrix.py (a subset) and benchmarks/model_matrix.py (every cell, docs/model_support.md).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import torch
from transformers import TrainerCallback

from test_classification import BAD, GOOD, TASK_YAML
from test_engine import ROWS

METHODS = {
    "full": ["train.learning_rate=1e-2"],
    "lora": ["adapter.type=lora", "adapter.lora_r=2", "adapter.lora_dropout=0", "train.learning_rate=1e-2"],
    "prompt_tuning": ["adapter.type=prompt_tuning", "adapter.num_virtual_tokens=3"],
    "dept": ["adapter.type=dept", "adapter.num_virtual_tokens=3", "adapter.dept_rank=2"],
}
DATA = ("instruction", "lm", "verbalizer", "classifier")
MAX_LENGTH = {"instruction": 64, "lm": 32, "verbalizer": 32, "classifier": 32}  # tokens (DePT's s for its cells)


def write_data(root: Path) -> dict:
    """The instruction files and the toy task (tests/test_classification.py) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    train, evals = root / "train.jsonl", root / "eval.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    evals.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:4]))
    (root / "data").mkdir(exist_ok=True)
    rows = [{"text": t, "label": "pos"} for t in GOOD] + [{"text": t, "label": "neg"} for t in BAD]
    for split, n in (("train", 2), ("dev", 1), ("test", 1)):
        (root / "data" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * n))
    (root / "task.yaml").write_text(TASK_YAML)
    return {"train": train, "eval": evals, "task": root / "task.yaml"}


def cell_config(model_dir: Path, method: str, data: str, files: dict, out: Path, *extra: str,
                precision: str = "none"):
    """The cell's run config. fp32 by default: the padding, eval-mode and look-ahead checks compare scores at fp32
    tolerances, which bf16 autocast (the default ``auto`` on bf16 hardware) does not keep across batch shapes."""
    from posttrain.config import load_config

    if data == "instruction":
        source = [f"data.train_file={files['train']}", f"data.eval_file={files['eval']}"]
    else:
        form = "template" if data == "verbalizer" else "text_to_text"
        source = [f"task.name={files['task']}", "task.train=files:train", "task.eval=files:dev",
                  "task.test=files:test", f"task.objective={data}", f"task.form={form}"]
    return load_config(None, [f"model.name_or_path={model_dir}", *source, f"data.max_length={MAX_LENGTH[data]}",
                              "train.per_device_batch_size=4", "train.max_steps=3", "train.warmup_ratio=0",
                              "train.progress=false", f"train.output_dir={out}", f"train.mixed_precision={precision}",
                              *METHODS[method], *extra])


class Snapshot(TrainerCallback):
    """Every parameter's value (and whether it trains) when training starts."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()}


def expected_trainable(cfg, model) -> int:
    """The method's formula for this model (see the module docstring), computed from module shapes."""
    from posttrain.models.families import classification_head_names, wrapper_chain

    base = wrapper_chain(model)[-1]
    # a new head counts once (PEFT's modules_to_save keeps the frozen original beside the trained copy)
    heads = sum(p.numel() for name in classification_head_names(base)
                for p in getattr(base.get_submodule(name), "original_module", base.get_submodule(name)).parameters())
    kind = cfg.adapter.type
    if kind == "full":
        return sum(p.numel() for p in base.parameters())
    if kind == "lora":
        total = 0
        for module in base.modules():
            if hasattr(module, "lora_A") and "default" in module.lora_A:
                layer = module.get_base_layer()
                total += cfg.adapter.lora_r * sum(layer.weight.shape[:2])  # Linear (out, in); GPT-2 Conv1D (in, out)
        return total + heads
    d = base.get_input_embeddings().embedding_dim
    m = cfg.adapter.num_virtual_tokens
    if kind == "prompt_tuning":
        return m * d + heads
    r, s = cfg.adapter.dept_rank, cfg.adapter.dept_max_length or cfg.data.max_length
    return m * d + r * (s + d) + heads


# Scoring a verbalizer on an encoder-decoder runs the decoder at one position, where self-attention is a softmax over
# one key: its query and key projections (and T5's position bias) get no gradient by construction (T5 "SelfAttention.q/k", BART
# "self_attn.q_proj/k_proj", and LoRA factors on them).
_ONE_POSITION_DEAD = ("SelfAttention.q.", "SelfAttention.k.", "SelfAttention.relative_attention_bias", "self_attn.q_proj.", "self_attn.k_proj.")


def _dead_by_construction(name: str, data: str, kind: str) -> bool:
    return data == "verbalizer" and kind == "seq2seq" and "decoder" in name and any(p in name for p in
                                                                                     _ONE_POSITION_DEAD)


def check_parameters(cfg, model, snapshot: Snapshot, data: str) -> None:
    from posttrain.models.families import model_kind

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == expected_trainable(cfg, model), (trainable, expected_trainable(cfg, model))
    after = dict(model.named_parameters())
    kind = model_kind(model)
    for name, (before, trains) in snapshot.before.items():
        if trains and before.numel() and not _dead_by_construction(name, data, kind):  # (PT's offset: empty)
            assert not torch.equal(before, after[name].detach()), f"{name} should train but did not move"
        else:
            assert torch.equal(before, after[name].detach()), f"{name} is frozen but changed"


def _position_nll(model, batch) -> torch.Tensor:
    """(B, T) NLL of each target position (the decoder's for seq2seq, the next token's for decoder-only)."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask")
              if k in batch}
    logits = model(**inputs, use_cache=False).logits.float()
    if "decoder_input_ids" in batch:
        labels = batch["labels"]
    else:
        logits, labels = logits[:, :-1], batch["labels"][:, 1:]
        logits = torch.cat([logits.new_zeros(logits.shape[0], 1, logits.shape[-1]), logits], 1)
        labels = torch.cat([labels.new_full((labels.shape[0], 1), -100), labels], 1)
    return torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none") * (
        labels >= 0)


@torch.no_grad()
def check_no_lookahead(model, data, collate) -> None:
    """Perturb one trained target token of a training row: the losses of the targets before it do not change."""
    row = dict(data.train[0])
    trained = [j for j, w in enumerate(row["loss_weights"]) if w > 0]
    if len(trained) < 2:  # one label token: nothing comes after it
        return
    k = trained[len(trained) // 2]
    changed = dict(row, labels=list(row["labels"]))
    if "decoder_input_ids" not in collate([row]):  # decoder-only: the target is also the next input
        changed["input_ids"] = list(row["input_ids"])
        changed["input_ids"][k] = (row["input_ids"][k] + 7) % model.config.vocab_size
        changed["labels"][k] = changed["input_ids"][k]
    else:
        changed["labels"][k] = (row["labels"][k] + 7) % model.config.vocab_size
    model.eval()
    before, after = _position_nll(model, collate([row])), _position_nll(model, collate([changed]))
    assert torch.allclose(before[0, :k], after[0, :k], atol=1e-6), "a loss position sees a later target"
    assert not torch.allclose(before[0, k], after[0, k]), "the perturbed target's own loss did not change"


@torch.no_grad()
def check_instruction_scores(model, tokenizer, data, collate) -> None:
    """Per-example output NLL alone == inside right- and left-padded batches; two passes bit-identical."""
    from posttrain.engine import per_example_nll

    model.eval()
    rows = [data.eval[i] for i in range(len(data.eval))]
    alone = torch.cat([per_example_nll(model, _strip(collate([r])))[0] for r in rows])
    sides = ("right",) if "decoder_input_ids" in collate(rows[:1]) else ("right", "left")  # support.py: seq2seq
    for side in sides:
        old = collate.padding_side
        collate.padding_side = side
        try:
            batch = _strip(collate(rows))
        finally:
            collate.padding_side = old
        together = per_example_nll(model, batch)[0]
        assert torch.allclose(alone, together, rtol=1e-5, atol=1e-5), (side, alone, together)
        assert torch.equal(together, per_example_nll(model, batch)[0]), "two evaluations differ"


def _strip(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k != "loss_normalizer"}


def check_task_scores(cfg, model, tokenizer) -> list:
    """Label scores alone == in a batch; two evaluations bit-identical; returns the test split's records."""
    from posttrain.evaluation.task_split_eval import evaluate_split, scored_examples, split_scorer

    examples = scored_examples(cfg, "test")
    scorer = split_scorer(cfg, tokenizer, model, "test", examples)
    batched = scorer.label_scores(model)
    assert torch.equal(batched, scorer.label_scores(model)), "two evaluations differ (dropout on?)"
    scorer.batch_size = 1
    assert torch.allclose(batched, scorer.label_scores(model), atol=1e-5), "scores depend on the batch's padding"
    return evaluate_split(cfg, model, tokenizer, "test", progress=False, examples=examples)[1]


def _cli(*argv: str) -> str:
    from posttrain.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(argv)) == 0
    return out.getvalue()


def check_reload(cfg, data: str, model, tokenizer, records, files: dict) -> None:
    run = Path(cfg.train.output_dir)
    if data != "instruction":
        path = run / "reloaded.jsonl"
        _cli("tasks", "eval", str(run), "--predictions", str(path))
        reloaded = [json.loads(line) for line in path.read_text().splitlines()]
        for a, b in zip(records, reloaded, strict=True):
            for label, p in a["probabilities"].items():
                assert math.isclose(p, b["probabilities"][label], abs_tol=1e-6), (a, b)
        return
    from posttrain.data.chat import resolve_template
    from posttrain.data.instruction import load_examples
    from posttrain.evaluation.loss_eval import output_loss
    from posttrain.generation import generate
    from posttrain.models.families import model_kind

    rows = load_examples(files["eval"])
    template = resolve_template(tokenizer, cfg.data.chat_template, model_kind(model))
    here = output_loss(model, tokenizer, rows, template, max_length=MAX_LENGTH[data], progress=False)["token_mean"]
    out = run / "loss_eval.json"
    _cli("loss-eval", "--model", str(run), "--test", str(files["eval"]), "--max-length", str(MAX_LENGTH[data]),
         "--out", str(out))
    assert math.isclose(json.loads(out.read_text())["metrics"]["test_output_loss"], here, rel_tol=1e-6)
    prompt = "What is the capital of France?"
    answer = generate(model, tokenizer, [prompt], chat_template=cfg.data.chat_template, max_new_tokens=4)[0]
    printed = _cli("generate", "--model", str(run), "--prompt", prompt, "--max-new-tokens", "4")
    assert printed == f">>> {prompt}\n{answer}\n\n", (printed, answer)


def run_cell(model_dir: Path, method: str, data: str, files: dict, out: Path) -> tuple[str, object]:
    """Train and check one cell (see the module docstring): ("ok", final metrics) or ("refused", reason)."""
    import posttrain.models
    from posttrain import support
    from posttrain.engine import objective_model_config, train
    from posttrain.errors import ConfigError

    cfg = cell_config(model_dir, method, data, files, out)
    reason = support.refusal(cfg, support.planned_kind(cfg, objective_model_config(cfg)[0].head))
    if reason:
        loader = posttrain.models.load_model_and_tokenizer

        def no_load(*args, **kwargs):
            raise AssertionError("the model loaded before the refusal")

        posttrain.models.load_model_and_tokenizer = no_load
        try:
            train(cfg)
        except ConfigError as err:
            assert str(err) == reason, (str(err), reason)
        else:
            raise AssertionError(f"refused by support.refusal but trained: {reason}")
        finally:
            posttrain.models.load_model_and_tokenizer = loader
        return "refused", reason
    snapshot = Snapshot()
    final = train(cfg, callbacks=[snapshot])
    trainer = final.pop("trainer")
    model, tokenizer = trainer.model, trainer.processing_class
    check_parameters(cfg, model, snapshot, data)
    from posttrain.run_data import prepare_data

    prepared = prepare_data(cfg, tokenizer, model)
    collate = trainer.data_collator
    if data in ("instruction", "lm"):
        check_no_lookahead(model, prepared, collate)
    records = None
    if data == "instruction":
        check_instruction_scores(model, tokenizer, prepared, collate)
    else:
        records = check_task_scores(cfg, model, tokenizer)
    check_reload(cfg, data, model, tokenizer, records, files)
    return "ok", final
