"""``posttrain self-train``: self-training baselines on the prompt-based classifier (methods/self_training.py)."""

from __future__ import annotations

import argparse


def _cmd_self_train(args) -> int:
    from ..pipelines.self_training import load_self_training_config, self_train

    st = load_self_training_config(args.config, args.overrides)
    final = self_train(st, resume=args.resume, overwrite=args.overwrite)
    final.pop("trainer", None)
    shown = {k: v for k, v in final.items() if k in ("train_loss", "global_step", "train_mask_ratio",
                                                       "train_pseudo_label_acc", "run_dir") or k.startswith("test_")}
    print("done: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()))
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``self-train`` to a parser's subparsers."""
    p = subparsers.add_parser(
        "self-train", help="self-training baselines on the prompt-based classifier (pseudo-labelling, FixMatch)",
        description="Train the recipe's classifier on its labelled split plus an unlabelled split with confidence-"
        "thresholded pseudo-labels (algorithm: pseudo_label | fixmatch). Docs: docs/self_training.md.")
    p.add_argument("config", help="self-training YAML (configs/self_training/sst2_fixmatch.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value overrides: self-training keys (p_cutoff=0.9, "
                   "augment.strong_swap=0.2) or recipe keys (train.max_steps=10)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint of the run directory")
    p.add_argument("--overwrite", action="store_true", help="replace the run the directory holds")
    p.set_defaults(func=_cmd_self_train)
    return p
