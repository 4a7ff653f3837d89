"""``posttrain pcp``, ``tapt`` and ``cpt``: the PCP / TAPT pipelines and continued pre-training alone."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError


def _cmd_pipeline(args, method: str) -> int:
    from ..pipelines.pcp import load_pipeline_config, parse_stages, run_pipeline

    cfg = load_pipeline_config(args.config, args.overrides, method=method)
    summary = run_pipeline(cfg, stages=parse_stages(args.stages, method), force=args.force)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _cmd_cpt(args) -> int:
    from ..checkpointing import RUN_FILES, clear_run
    from ..pipelines.continued_pretraining import continued_pretraining

    from ..pipelines.pcp_config import load_cpt_config

    cfg = load_cpt_config(args.config, args.overrides)
    if args.resume and args.overwrite:
        raise ConfigError("--resume and --overwrite: give one (continue the run, or replace it)")
    run_dir = Path(cfg.output_dir)
    if (run_dir / "best").is_dir() and not args.overwrite:  # a finished run (an unfinished one continues)
        raise ConfigError(f"cpt.output_dir: {run_dir} holds a finished continued pre-training run (best/); pass "
                          "--overwrite to replace it or choose a new dir")
    if args.overwrite:
        clear_run(run_dir, ("best", "checkpoints"), (*RUN_FILES, "cpt_config.yaml"))
    final = continued_pretraining(cfg, resume=True if args.resume else None)
    final.pop("trainer", None)
    final.pop("eval_losses", None)
    print("done: " + ", ".join(f"{k}={v}" for k, v in final.items()))
    return 0


def register(subparsers) -> None:
    """Add ``pcp``, ``tapt`` and ``cpt`` to a parser's subparsers."""
    for method, text in (("pcp", "prompt-based continued pre-training: teacher -> pseudo-labels -> templated corpus "
                                 "-> continued pre-training -> final prompt-FT (stages 1-5)"),
                         ("tapt", "task-adaptive pre-training: raw pool text -> continued pre-training -> final "
                                  "fine-tuning (stages 3-5)")):
        p = subparsers.add_parser(method, help=text.split(":")[0], description=f"{method.upper()}, {text}. Stages "
                                  "whose stage<N>.done.json exists are skipped; an interrupted stage continues.")
        p.add_argument("config", help=f"pipeline YAML (configs/pcp/sst2_{method}.yaml)")
        p.add_argument("overrides", nargs="*", help="key=value overrides (max_pool_train=500, cpt.max_steps=50, ...)")
        p.add_argument("--stages", help=f"which stages to run, e.g. {'1-5' if method == 'pcp' else '3-5'} "
                       "(default: all)")
        p.add_argument("--force", type=int, metavar="N", help="redo stage N from scratch (and every later stage)")
        p.set_defaults(func=lambda args, m=method: _cmd_pipeline(args, m))
    p = subparsers.add_parser("cpt", help="continued pre-training (MLM or causal LM) on a one-line-per-example corpus",
                              description="Continued pre-training from a YAML of ContinuedPretrainingConfig keys "
                              "(model, train_file, eval_file, output_dir, ...); best checkpoint by held-out loss.")
    p.add_argument("config", help="YAML with continued pre-training keys")
    p.add_argument("overrides", nargs="*", help="key=value overrides")
    p.add_argument("--resume", action="store_true", help="require a checkpoint to continue from (default: continue "
                   "when there is one)")
    p.add_argument("--overwrite", action="store_true", help="replace the run output_dir holds (a finished one is "
                   "refused without it)")
    p.set_defaults(func=_cmd_cpt)
