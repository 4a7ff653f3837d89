"""Prompt-based fine-tuning of a masked LM (PCP / LM-BFF's verbalizer head) in a hand-written PyTorch loop,
checked against posttrain's own engine.

    python examples/verbalizer_mlm_hand_loop.py [--steps 3]

A tiny random RoBERTa (dropout off) and a byte-level BPE tokenizer are built offline; a toy sentiment task is
declared as data (template "{text_a} It was {mask} .", verbalizer neg -> wide, pos -> sea). posttrain.label_scorer
encodes the examples into the template and reads the LM head's verbalizer logits at <mask>; the loop is the user's
own: cross-entropy over the two label logits, torch AdamW with a linear decay, every example in each step. The
same recipe then runs through posttrain.train, and the script asserts the same step-1 loss (relative 1e-5) and the
same weights after the last step (within 1% of each tensor's move in training, + 1e-6). Both run in fp32
(train.mixed_precision=none).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import posttrain

TASK = """
name: toy-sentiment
kind: single
labels: [neg, pos]
verbalizer: {neg: wide, pos: sea}
template: "{text_a} It was {mask} ."
text_to_text: "sentence: {text_a}"
metrics: [accuracy]
data:
  files:
    dir: data
    files: {train: train.jsonl}
    format: jsonl
    columns: {text_a: text, label: label}
"""
GOOD = ["the quick brown fox !", "write a poem !", "good morning !", "what a view !"]
BAD = ["the lazy dog ?", "summarize the text ?", "translate to french ?", "one sentence please ?"]


def tiny_roberta(folder: Path) -> None:
    """A 2-layer RoBERTa masked LM (hidden size 32, no dropout) and its tokenizer, saved to ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaForMaskedLM

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [f"{t} It was {w} ." for t in GOOD + BAD for w in ("wide", "sea")] * 20
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>", mask_token="<mask>", cls_token="<s>", sep_token="</s>")
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, max_position_embeddings=66, pad_token_id=tokenizer.pad_token_id,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    RobertaForMaskedLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def main(argv=None) -> int:
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="mlm-loop-"))
    tiny_roberta(work / "model")
    (work / "data").mkdir()
    rows = [{"text": t, "label": "pos"} for t in GOOD] + [{"text": t, "label": "neg"} for t in BAD]
    (work / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (work / "task.yaml").write_text(TASK)
    lr = 1e-3

    # posttrain's engine: full fine-tuning with the verbalizer objective, all 8 examples in each step
    ours = posttrain.train(None, f"model.name_or_path={work / 'model'}", f"task.name={work / 'task.yaml'}",
                           "task.train=files:train", "task.eval=", "task.test=", "task.objective=verbalizer",
                           "task.form=template",
                           "data.max_length=32", f"train.max_steps={args.steps}", "train.per_device_batch_size=8",
                           f"train.learning_rate={lr}", "train.warmup_ratio=0", "train.logging_steps=1",
                           "train.progress=false", "train.mixed_precision=none", f"train.output_dir={work / 'run'}")

    # the same in a hand-written loop
    model = AutoModelForMaskedLM.from_pretrained(work / "model").train()
    tokenizer = AutoTokenizer.from_pretrained(work / "model")
    task = posttrain.get_task(work / "task.yaml")
    examples = posttrain.read_split(task, "files", "train")
    scorer = posttrain.label_scorer(model, tokenizer, task, examples, max_length=32)
    batch = scorer.collate(scorer.rows)
    gold = torch.tensor([task.labels.index(ex["label"]) for ex in examples])
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / args.steps)
    losses = []
    for _ in range(args.steps):
        loss = F.cross_entropy(scorer.scores(model, batch).float(), gold)  # (B, C) verbalizer logits at <mask>
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(loss.item())

    engine = [json.loads(line)["loss"] for line in (work / "run" / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    print(f"step losses, hand-written loop: {losses}\nstep losses, posttrain:         {engine}")
    assert len(engine) == args.steps and abs(losses[0] - engine[0]) <= 1e-5 * abs(engine[0]), "step-1 loss"
    trained = load_file(str(ours.run_dir / "final" / "model.safetensors"))
    mine = dict(model.named_parameters())
    worst = 0.0
    for name, value in trained.items():
        key = name if name in mine else next((n for n in mine if n.endswith(name)), None)
        if key is None:  # a tied weight saved once (the LM head's decoder is the word embeddings)
            continue
        moved = (mine[key].detach() - start[key]).abs().max().item()
        gap = (mine[key].detach() - value).abs().max().item()
        worst = max(worst, gap)
        # the Trainer shuffles the 8 rows, so sums run in another order: float rounding, which Adam's normalised
        # update carries into the weights in proportion to the move (1% of it, plus 1e-6 for tensors whose true
        # gradient is 0, e.g. attention key biases, and which move by rounding alone; an update moves by ~lr 1e-3)
        assert gap <= 1e-2 * moved + 1e-6, (name, gap, moved)
    print(f"weights after {args.steps} steps: largest difference {worst:.2e}")
    print("same loss and the same weights as posttrain's engine")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
