"""The IM loss (Shi et al., NeurIPS 2024: loss on instruction and output tokens, template tokens masked) inside
TRL's SFTTrainer, checked against posttrain's own engine.

    python examples/im_loss_in_trl_sft_trainer.py [--model default] [--steps 3]

posttrain.sft_dataset renders and labels the rows (template tokens -100); TRL takes them as they are
(``dataset_kwargs={"skip_prepare_dataset": True}``) with posttrain.LabelsCollator, and its own loss trains them.
The script asserts the same step losses (relative 1e-4) and weights (1e-4) as posttrain.train with
``loss.mode: instruction_and_output``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import torch
from transformers import TrainingArguments
from trl import SFTConfig, SFTTrainer

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
    work = Path(tempfile.mkdtemp(prefix="im-trl-"))
    data = work / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    recipe = [f"model.name_or_path={args.model}", f"data.train_file={data}", "data.max_length=64",
              "loss.mode=instruction_and_output", f"train.max_steps={args.steps}", "train.per_device_batch_size=4",
              "train.learning_rate=1e-5", "train.logging_steps=1", "train.warmup_ratio=0", "train.progress=false",
              "train.mixed_precision=none"]  # both sides fp32: the comparison is of the method, not of bf16 rounding
    ours = posttrain.train(None, *recipe, f"train.output_dir={work / 'engine'}")

    cfg = posttrain.load_config(None, [*recipe, f"train.output_dir={work / 'trl'}"])
    same = training_arguments(cfg, has_eval=False)
    sft_args = SFTConfig(**{f.name: getattr(same, f.name) for f in dataclasses.fields(TrainingArguments) if f.init},
                         dataset_kwargs={"skip_prepare_dataset": True}, max_length=None)
    model, tokenizer = load_model_and_tokenizer(ModelConfig(name_or_path=args.model))
    dataset = posttrain.sft_dataset(tokenizer, data, mode="instruction_and_output", max_length=64)
    trainer = SFTTrainer(model=model, args=sft_args, train_dataset=dataset, processing_class=tokenizer,
                         data_collator=posttrain.LabelsCollator(tokenizer.pad_token_id))
    trainer.train()

    trl = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    engine = [json.loads(line)["loss"] for line in (work / "engine" / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    print(f"step losses, TRL SFTTrainer: {trl}\nstep losses, posttrain:      {engine}")
    assert len(trl) == args.steps and all(abs(a - b) <= 1e-4 * abs(b) for a, b in zip(trl, engine)), "losses"
    theirs = dict(trainer.model.named_parameters())
    gap = max((p - theirs[n]).abs().max().item() for n, p in ours.trainer.model.named_parameters())
    print(f"largest weight difference: {gap:.2e}")
    assert gap <= 1e-4, "weights"
    print("same losses and weights as posttrain's engine")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
