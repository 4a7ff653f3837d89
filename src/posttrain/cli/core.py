"""Commands over training and models: train, inspect-data, generate, quickstart, dept-budget, config."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import PosttrainError
from .parser import EPILOG


def _cmd_train(args) -> int:
    from ..config import load_config
    from ..engine import train

    if args.resume and args.overwrite:
        raise PosttrainError("--resume and --overwrite: give one (continue the run, or replace it)")
    cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        from ..dry_run import format_plan, plan

        print(format_plan(plan(cfg)))
        return 0
    if args.accelerate_config or args.num_processes is not None or args.launch_args:
        return _relaunch_train(args)
    final = train(cfg, resume=args.resume, overwrite=args.overwrite)
    final.pop("trainer", None)
    shown = {k: v for k, v in final.items()
             if k in ("train_loss", "eval_output_loss", "global_step", "run_dir") or k.startswith("test_")}
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun / accelerate launch: one summary line, from rank 0
        return 0
    print("done: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()))
    return 0


def _relaunch_train(args) -> int:
    """``posttrain train CONFIG --accelerate-config NAME`` = ``accelerate launch --config_file PRESET -m posttrain
    train CONFIG ...`` (the config was loaded once here, so that its errors show before any process starts)."""
    import shlex

    from ..distributed import relaunch, relaunch_command

    if not args.accelerate_config:
        raise PosttrainError("--num-processes and --launch-args need --accelerate-config NAME_OR_PATH")
    try:
        extra = shlex.split(args.launch_args or "")
    except ValueError as err:
        raise PosttrainError(f"--launch-args: {err}") from None
    train_argv = [args.config, *args.overrides, *(["--resume"] if args.resume else []),
                  *(["--overwrite"] if args.overwrite else [])]
    return relaunch(relaunch_command(args.accelerate_config, train_argv, args.num_processes, extra))


def _cmd_inspect(args) -> int:
    from ..config import load_config
    from ..data.inspect_data import inspect
    from ..run_data import split_examples
    from ..models import load_tokenizer

    cfg = load_config(args.config, args.overrides)
    tokenizer = load_tokenizer(cfg.model)
    examples, _ = split_examples(cfg)
    if args.max_rows:
        examples = examples[: args.max_rows]
    colour = None if args.color == "auto" else args.color == "always"
    inspect(cfg, tokenizer, examples, n=args.n, all_modes=args.all_modes, colour=colour)
    return 0


def _cmd_generate(args) -> int:
    from .. import support
    from ..generation import generate, load_for_inference

    prompts = list(args.prompt or [])
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise PosttrainError(f"{path}: prompts file not found")
        prompts += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise PosttrainError("generate: give at least one --prompt or --prompts-file")
    model, tokenizer, template = load_for_inference(args.model, args.dtype, families=support.DECODING)
    answers = generate(
        model, tokenizer, prompts, chat_template=args.chat_template or template, system=args.system,
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
    )
    for prompt, answer in zip(prompts, answers):
        print(f">>> {prompt}\n{answer}\n")
    return 0


def _cmd_quickstart(args) -> int:
    from ..quickstart import run_quickstart

    run_quickstart(args.out, args.steps, args.data, args.model, args.overrides)
    return 0


def _cmd_config(args) -> int:
    from ..config import describe, load_config, to_dict

    if args.config:
        import yaml

        print(yaml.safe_dump(to_dict(load_config(args.config, args.overrides)), sort_keys=False), end="")
    else:
        print(describe())
    return 0


def _cmd_dept_budget(args) -> int:
    from ..methods.dept import budget_table

    if args.hidden_size:
        d, where = args.hidden_size, "--hidden-size"
    else:
        from ..models import load_model_config

        config = load_model_config(args.model)
        d, where = config.hidden_size, f"{args.model} ({type(config).__name__})"
    try:
        ms = [int(x) for x in args.m.split(",")] if args.m else None
    except ValueError:
        raise PosttrainError(f"--m {args.m!r}: expected comma-separated integers, e.g. 100,80,60,40") from None
    rows = budget_table(args.length, args.max_length, d, ms)
    print(f"DePT budget matching prompt tuning with L={args.length} tokens: d={d} from {where}, s={args.max_length}")
    print("m\tr\tparameters\tof PT budget")
    for row in rows:
        print(f"{row['m']}\t{row['r']}\t{row['parameters']:,}\t{row['ratio']:.4f}")
    return 0


def register(sub) -> None:
    """Add train, inspect-data, generate, quickstart, dept-budget and config to a parser's subparsers."""
    p = sub.add_parser("train", help="train a model from a YAML recipe", epilog=EPILOG,
                       description="Train from CONFIG.yaml; key=value arguments override it (e.g. train.max_steps=10).")
    p.add_argument("config", help="YAML recipe (see configs/)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint of train.output_dir")
    p.add_argument("--dry-run", action="store_true", help="check the config, data and model family, load and wrap the "
                   "model, print trainable parameters per group, token lengths and a memory estimate; train nothing")
    p.add_argument("--overwrite", action="store_true", help="replace the run train.output_dir holds (its final/, "
                   "checkpoints and files); without it an earlier run there is refused")
    p.add_argument("--accelerate-config", metavar="NAME_OR_PATH",
                   help="re-launch through 'accelerate launch' with a preset (single_gpu, multi_gpu, fsdp, zero2, "
                   "zero3) or an accelerate config file (docs/distributed.md)")
    p.add_argument("--num-processes", type=int, metavar="N", help="processes in all (overrides the preset's)")
    p.add_argument("--launch-args", metavar="'ARGS'",
                   help="more 'accelerate launch' options, quoted, e.g. '--num_machines 2 --machine_rank 0 "
                   "--main_process_ip 10.0.0.1 --main_process_port 29500'")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("inspect-data", help="show rendered tokens with trained/masked highlighting and counts",
                       description="Render the first N training examples of CONFIG and show which tokens carry loss.")
    p.add_argument("config", help="YAML recipe")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    p.add_argument("-n", type=int, default=2, help="examples to show (default 2)")
    p.add_argument("--all-modes", action="store_true", help="show every loss mode, not just the configured one")
    p.add_argument("--max-rows", type=int, default=0, help="count masks over the first M rows only (0 = all)")
    p.add_argument("--color", choices=["auto", "always", "never"], default="auto", help="ANSI colours")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("generate", help="answer prompts with a base model or a trained run (chat-formatted)",
                       description="Generate with MODEL: 'default', a hub id, a directory, a .gguf, or a run dir.")
    p.add_argument("--model", default="default", help="model spec or posttrain run directory (default: default)")
    p.add_argument("--prompt", action="append", help="a user prompt (repeatable)")
    p.add_argument("--prompts-file", help="text file, one prompt per line")
    p.add_argument("--system", help="optional system message")
    p.add_argument("--chat-template", help="override the chat template (tokenizer, tulu, chatml, plain)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"])
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("quickstart", help="IT vs IM on the bundled SmolLM2 + Dolly slice, offline (< 10 min)",
                       description="Fine-tune the bundled SmolLM2-135M-Instruct with IT and with IM on a bundled "
                       "Dolly-3k slice; print held-out output loss of both and a sample generation.")
    p.add_argument("--out", default="runs/quickstart", help="where the two run directories go")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per run (default 20)")
    p.add_argument("--data", help="instruction data file instead of the bundled slice")
    p.add_argument("--model", default="default", help="model spec (default: the bundled SmolLM2)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides applied to both runs")
    p.set_defaults(func=_cmd_quickstart)

    p = sub.add_parser("dept-budget", help="DePT (m, r) pairs with prompt tuning's parameter budget for a model")
    p.add_argument("--model", default="default", help="model spec whose hidden size d is used (default: SmolLM2)")
    p.add_argument("--hidden-size", type=int, default=0, help="use this d instead of reading a model config")
    p.add_argument("--length", type=int, default=100, help="prompt-tuning length L whose budget L*d is matched")
    p.add_argument("--max-length", type=int, default=256, help="DePT offset length s (the input length)")
    p.add_argument("--m", default="", help="comma-separated soft-prompt lengths (default: L, 0.8L, ..., 0)")
    p.set_defaults(func=_cmd_dept_budget)

    p = sub.add_parser("config", help="list every config key with its default and help, or resolve a recipe")
    p.add_argument("config", nargs="?", help="YAML recipe to resolve and print (omit to list all keys)")
    p.add_argument("overrides", nargs="*", help="section.key=value overrides")
    p.set_defaults(func=_cmd_config)
