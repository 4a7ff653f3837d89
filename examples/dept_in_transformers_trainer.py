"""DePT inside a plain transformers.Trainer, checked against posttrain's own engine.

    python examples/dept_in_transformers_trainer.py [--model default] [--steps 3]

posttrain.dept wraps the model; its optimizer groups carry DePT's two learning rates (prompt, offset) into an
AdamW handed to the Trainer; posttrain.sft_dataset and LabelsCollator give the rows with standard keys only, and the
Trainer's own loss trains them. The same recipe then runs through posttrain.train, and the script asserts that
both give the same step losses (relative 1e-4) and the same soft prompt and offset at the end (within 1% of how far
each moved: Adam at the prompt's learning rate 0.3 makes each update about lr in size, so float rounding shows, by
an amount that depends on the CPU's kernels). Both sides run in fp32 (train.mixed_precision=none).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from transformers import Trainer

import posttrain
from posttrain.config import ModelConfig
from posttrain.models import load_model_and_tokenizer
from posttrain.training_args import training_arguments

ROWS = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in [("Name a colour.", "Blue."), ("Say hi.", "Hi!"), ("Two plus two?", "Four."),
                     ("Capital of France?", "Paris.")]] * 2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="dept-trainer-"))
    data = work / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    recipe = [f"model.name_or_path={args.model}", f"data.train_file={data}", "data.max_length=48",
              "adapter.type=dept", "adapter.num_virtual_tokens=4", "adapter.dept_rank=2",
              "adapter.prompt_learning_rate=0.3", "adapter.offset_learning_rate=0.001", f"train.max_steps={args.steps}",
              "train.per_device_batch_size=4", "train.logging_steps=1", "train.warmup_ratio=0", "train.progress=false",
              "train.mixed_precision=none"]  # both sides fp32: the comparison is of the method, not of bf16 rounding
    ours = posttrain.train(None, *recipe, f"train.output_dir={work / 'engine'}")

    cfg = posttrain.load_config(None, [*recipe, f"train.output_dir={work / 'plain'}"])
    torch.manual_seed(cfg.train.seed)
    base, tokenizer = load_model_and_tokenizer(ModelConfig(name_or_path=args.model))
    model = posttrain.dept(base, num_virtual_tokens=4, rank=2, max_length=48, init=cfg.adapter.prompt_init,
                           tokenizer=tokenizer, init_text=cfg.adapter.prompt_init_text, seed=cfg.train.seed)
    start = {name: getattr(model, name).detach().clone() for name in ("prompt", "offset_a", "offset_b")}
    train_args = training_arguments(cfg, has_eval=False)
    optimizer = torch.optim.AdamW(model.optimizer_groups(0.3, 0.001), betas=(train_args.adam_beta1,
                                  train_args.adam_beta2), eps=train_args.adam_epsilon)
    trainer = Trainer(model=model, args=train_args, train_dataset=posttrain.sft_dataset(tokenizer, data, max_length=48),
                      data_collator=posttrain.LabelsCollator(tokenizer.pad_token_id), optimizers=(optimizer, None))
    trainer.train()

    plain = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    engine = [json.loads(line)["loss"] for line in (work / "engine" / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    print(f"step losses, plain Trainer: {plain}\nstep losses, posttrain:      {engine}")
    assert len(plain) == args.steps and all(abs(a - b) <= 1e-4 * abs(b) for a, b in zip(plain, engine)), "losses"
    trained = ours.trainer.model
    for name, before in start.items():
        gap = (getattr(model, name) - getattr(trained, name)).abs().max().item()
        moved = (getattr(trained, name) - before).abs().max().item()
        print(f"{name}: largest difference {gap:.2e}, largest move in training {moved:.2e}")
        # Adam scales each update to about lr whatever the gradient's size, so the float rounding of two loss
        # implementations (posttrain's fused cross-entropy, the model's own) shows in proportion to the move, at
        # a size that depends on the CPU's kernels: 1% of the move is far below a real difference (a wrong loss
        # or learning rate moves the weights elsewhere altogether)
        assert moved > 0 and gap <= 1e-2 * moved, name
    print("same losses and the same P, A, B as posttrain's engine")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
