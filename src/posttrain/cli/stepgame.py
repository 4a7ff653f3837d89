"""``posttrain stepgame`` subcommands (StepGame, Shi, Zhang, Lipani, AAAI 2022): generate, solve, eval, exports.

    posttrain stepgame generate --k 1-10 --n 10000 --seed 0 --both --templates original --format json --out DIR
    posttrain stepgame solve FILE [FILE ...] [--templates corrected] [--show-errors 5] [--json OUT]
    posttrain stepgame eval --model default --mode mc|gen [--shots N] [--chat auto|on|off] [--limit N] --out DIR
    posttrain stepgame export-lm-eval --out DIR [--files FILE ...] [--limit N]
    posttrain stepgame export-sft --out FILE.jsonl [--files FILE ...] [--k 1-5] [--limit N] [--shuffle-seed S]

Wire into the main parser with ``register(subparsers)``; handlers raise ``PosttrainError`` subclasses.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from ..io_utils import atomic_write_json
from ..stepgame.formats import parse_k_range


def _cmd_generate(args) -> int:
    from ..stepgame.formats import SUFFIX, write_examples
    from ..stepgame.generator import iter_pairs

    ks = parse_k_range(args.k)
    kinds = ["clean", "noise"] if args.mode == "both" else [args.mode]
    out = Path(args.out)
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    total = len(ks) * args.n
    bar = tqdm(total=total, unit="story", disable=total < 20000 or tqdm is None or args.quiet) if tqdm else None
    summary = []
    for k in ks:
        made = {"clean": [], "noise": []}
        for clean, noisy in iter_pairs(k, args.n, args.seed, args.templates):
            made["clean"].append(clean)
            made["noise"].append(noisy)
            if bar is not None:
                bar.update(1)
        for kind in kinds:
            path = out / kind / f"qa{k}_{args.split}{SUFFIX[args.format]}"
            write_examples(path, made[kind], args.format)
            labels = Counter(ex["label"] for ex in made[kind])
            nodes = {t: sum(ex["noise_nodes"][t] for ex in made[kind]) / max(1, len(made[kind]))
                     for t in ("supporting", "disconnected", "irrelevant")}
            summary.append({"k": k, "kind": kind, "path": str(path), "n": len(made[kind]),
                            "labels": dict(sorted(labels.items())), "noise_nodes": nodes})
    if bar is not None:
        bar.close()
    if not args.quiet:
        for row in summary:
            nodes = ", ".join(f"{t[:4]} {v:.2f}" for t, v in row["noise_nodes"].items())
            print(f"{row['path']}: {row['n']} examples, k={row['k']} {row['kind']}; noise nodes/example: {nodes}")
        print(f"wrote {len(summary)} files under {out} (seed {args.seed}, templates {args.templates}, "
              f"format {args.format})")
    atomic_write_json(out / "generation.json", {
        "seed": args.seed, "n": args.n, "k": ks, "templates": args.templates, "format": args.format,
        "split": args.split, "files": summary,
    })
    return 0


def _cmd_solve(args) -> int:
    from ..stepgame.formats import read_examples
    from ..stepgame.solver import evaluate

    reports = {}
    for name in args.files:
        examples = read_examples(name)
        report = evaluate(examples, args.templates)
        reports[name] = report
        print(f"{name}: accuracy {report['accuracy']:.4f} ({report['correct']}/{report['n']}, "
              f"{args.templates} reading); {report['contradictions']} label(s) contradict the story, "
              f"{report['explained']} explained by defective templates, {report['unexplained']} unexplained")
        for err in report["errors"][: args.show_errors]:
            why = ", ".join(err["templates"]) if err["explained"] else "NOT EXPLAINED"
            print(f"  id {err['id']}: label {err['label']}, story says {err['predicted']}; {why}")
            for sentence in err["sentences"]:
                print(f"      {sentence}")
    if args.json:
        atomic_write_json(args.json, reports)
        print(f"report written to {args.json}")
    return 0 if all(r["unexplained"] == 0 for r in reports.values()) else 1


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``stepgame`` (generate, solve, eval, export-lm-eval, export-sft) to a parser's subparsers."""
    p = subparsers.add_parser(
        "stepgame", help="StepGame benchmark: generate data, solve/check files, evaluate LMs, export",
        description="StepGame (AAAI 2022) multi-hop spatial reasoning: generator, exact solver, LM evaluation "
        "harness, lm-evaluation-harness export and fine-tuning data export.")
    sub = p.add_subparsers(dest="stepgame_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    g = sub.add_parser(
        "generate", help="generate k-hop stories (official JSON, JSONL or bAbI text)",
        description="Generate StepGame data; files go to OUT/{clean,noise}/qa{k}_{split}.{json,jsonl,txt}.")
    g.add_argument("--k", default="1-10", help="hops: 3, 1-10 or 1,3,5 (default 1-10)")
    g.add_argument("--n", type=int, default=10000, help="examples per k (default 10000)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0); each k has its own stream")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--noise", dest="mode", action="store_const", const="noise", help="noisy stories (default)")
    mode.add_argument("--clean", dest="mode", action="store_const", const="clean", help="chain sentences only")
    mode.add_argument("--both", dest="mode", action="store_const", const="both",
                      help="clean and noisy versions of the same stories")
    g.set_defaults(mode="noise")
    g.add_argument("--templates", choices=["original", "corrected"], default="original",
                   help="original (reproduces the benchmark, defects included) or corrected")
    g.add_argument("--format", choices=["json", "jsonl", "babi"], default="json", help="file format (default json)")
    g.add_argument("--split", default="test", help="name used in the file names (default test)")
    g.add_argument("--out", required=True, help="output directory")
    g.add_argument("--quiet", action="store_true", help="no summary or progress bar")
    g.set_defaults(func=_cmd_generate)

    s = sub.add_parser(
        "solve", help="solve files exactly; report accuracy and label contradictions",
        description="Parse every story with the template inventory, compute the answer exactly and compare with "
        "the labels. Exit status 1 if a contradiction is not explained by a defective template.")
    s.add_argument("files", nargs="+", help="StepGame files (.json official, .jsonl, .txt bAbI)")
    s.add_argument("--templates", choices=["original", "corrected"], default="corrected",
                   help="corrected = literal reading of every sentence (default); original = as generated")
    s.add_argument("--show-errors", type=int, default=5, metavar="N", help="contradicting examples to print per file")
    s.add_argument("--json", metavar="OUT", help="write the full report (all contradictions) as JSON")
    s.set_defaults(func=_cmd_solve)
    _register_eval(sub)
    return p


def _cmd_eval(args) -> int:
    """``posttrain stepgame eval``: every argument and file is checked before the model loads."""
    from ..generation import load_for_inference
    from ..stepgame.harness import (default_files, default_shot_files, evaluate, load_files, load_shot_pool,
                                    merge_lora, validate_settings)
    from ..stepgame.report import markdown_table, write_outputs

    validate_settings(mode=args.mode, shots=args.shots, limit=args.limit, batch_size=args.batch_size,
                      max_new_tokens=args.max_new_tokens, chat=args.chat, chat_template=args.chat_template)
    ks = parse_k_range(args.k) if args.k else None
    files = args.files or default_files(args.data, ks or range(1, 11))
    data = load_files(files, args.limit, ks)
    shots_from = (args.shots_from or default_shot_files(args.data)) if args.shots else []
    pool = load_shot_pool(shots_from, [p for p, _ in data]) if args.shots else None
    # the harness's scorer runs context + answer as one sequence: a decoder-only model's reading of them
    model, tokenizer, template_name = load_for_inference(args.model, dtype=args.dtype, families=("causal",),
                                                         what="the StepGame harness's scores")
    model = merge_lora(model)
    results = evaluate(model, tokenizer, data, mode=args.mode, shots=args.shots, chat=args.chat,
                       template_name=args.chat_template or template_name, limit=args.limit, ks=ks, seed=args.seed,
                       shots_from=shots_from, pool=pool, batch_size=args.batch_size,
                       max_new_tokens=args.max_new_tokens, progress=not args.quiet, model_name=args.model)
    paths = write_outputs(results, args.out)
    print(markdown_table(results), end="")
    print(f"{results['overall']['n']} examples in {results['seconds']:.1f} s; wrote {paths['json']}, "
          f"{paths['markdown'].name}, {paths['png'].name}, {paths['predictions'].name}")
    return 0


def _cmd_export(args) -> int:
    """``posttrain stepgame export-lm-eval``."""
    from ..stepgame.harness import default_files, default_shot_files
    from ..stepgame.lm_eval_export import export_lm_eval

    ks = parse_k_range(args.k) if args.k else None
    files = args.files or default_files(args.data, ks or range(1, 11))
    shots_from = args.shots_from if args.shots_from is not None else default_shot_files(args.data)
    info = export_lm_eval(args.out, files, limit=args.limit, ks=ks, shots_from=shots_from,
                          fewshot_pool=args.fewshot_pool, seed=args.seed)
    total = sum(info["n"].values())
    print(f"wrote {len(info['tasks'])} tasks ({total} examples) under {info['dir']}; few-shot pool: "
          f"{info['fewshot_pool'] or 'none'}")
    print(f"run: lm_eval --model hf --model_args pretrained=MODEL_DIR --tasks stepgame --include_path {info['dir']}")
    return 0


def _cmd_export_sft(args) -> int:
    """``posttrain stepgame export-sft``."""
    from ..stepgame.sft import default_train_files, export_sft

    ks = parse_k_range(args.k) if args.k else None
    files = args.files or default_train_files(args.data, ks or range(1, 6))
    info = export_sft(args.out, files, limit=args.limit, ks=ks,
                      shuffle_seed=args.shuffle_seed)
    per_k = ", ".join(f"k={k}: {n}" for k, n in info["per_k"].items())
    print(f"wrote {info['n']} prompt/completion rows to {info['out']} ({per_k})")
    print(f"train: posttrain train RECIPE.yaml data.train_file={info['out']}  (e.g. configs/stepgame/lora.yaml)")
    return 0


def _register_eval(sub) -> None:
    e = sub.add_parser(
        "eval", help="evaluate a language model: 9-way log-likelihood (mc) or greedy answers (gen)",
        description="Accuracy per file and k of MODEL on StepGame files (default: the shared valid sets, clean and "
        "noise, k=1..10). Writes results.json, results.md, accuracy_vs_k.png and predictions.jsonl into --out.")
    e.add_argument("--model", default="default", help="model spec or posttrain run directory (default: default)")
    e.add_argument("--mode", default="mc", help="mc (log-likelihood of the 9 answer words) or gen (greedy answer)")
    e.add_argument("--files", nargs="+", help="StepGame files (.json official, .jsonl, .txt bAbI)")
    e.add_argument("--data", help="folder with {clean,noise}/qa{k}_{valid,train}.json (default: shared data)")
    e.add_argument("--k", help="only these hops: 3, 1-10 or 1,3,5")
    e.add_argument("--limit", type=int, default=0, help="first N examples per file (0 = all)")
    e.add_argument("--shots", type=int, default=0, help="few-shot examples per prompt (default 0)")
    e.add_argument("--shots-from", nargs="+", help="training files to draw shots from (default: clean qa*_train)")
    e.add_argument("--seed", type=int, default=0, help="seed of the few-shot draws (default 0)")
    e.add_argument("--chat", default="auto", help="auto (chat template if the model has one), on or off")
    e.add_argument("--chat-template", help="override the chat template (tokenizer, tulu, chatml, plain)")
    e.add_argument("--batch-size", type=int, default=8, help="stories per forward pass (default 8)")
    e.add_argument("--max-new-tokens", type=int, default=24, help="gen mode: answer length cap (default 24)")
    e.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"])
    e.add_argument("--out", required=True, help="output directory")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.set_defaults(func=_cmd_eval)

    x = sub.add_parser(
        "export-lm-eval", help="write an lm-evaluation-harness task (YAML + jsonl) with the same prompt",
        description="Write DIR/stepgame.yaml (group), one multiple-choice task per kind and k, and the data as jsonl; "
        "then: lm_eval --model hf --model_args pretrained=MODEL_DIR --tasks stepgame --include_path DIR")
    x.add_argument("--out", required=True, help="task folder to write")
    x.add_argument("--files", nargs="+", help="StepGame files (default: the shared valid sets, clean and noise)")
    x.add_argument("--data", help="folder with {clean,noise}/qa{k}_{valid,train}.json (default: shared data)")
    x.add_argument("--k", help="only these hops: 3, 1-10 or 1,3,5")
    x.add_argument("--limit", type=int, default=0, help="first N examples per file (0 = all)")
    x.add_argument("--shots-from", nargs="*", help="training files for lm-eval's few-shot split (default: clean "
                   "qa*_train; give no file to write none)")
    x.add_argument("--fewshot-pool", type=int, default=1000, help="few-shot examples sampled into the pool")
    x.add_argument("--seed", type=int, default=0, help="seed of the few-shot pool sample")
    x.set_defaults(func=_cmd_export)

    t = sub.add_parser(
        "export-sft", help="write StepGame as prompt/completion training rows (the harness's zero-shot prompt)",
        description="Write {\"prompt\", \"completion\", \"k_hop\"} JSON Lines for posttrain train (data.train_file): "
        "the prompt is exactly the zero-shot prompt of posttrain stepgame eval, the completion the answer word. "
        "Default input: the clean training files qa{k}_train.json for --k (the paper's recipe: clean k=1..5).")
    t.add_argument("--out", required=True, help="JSONL file to write")
    t.add_argument("--files", nargs="+", help="StepGame files (default: DATA/clean/qa{k}_train.json for --k)")
    t.add_argument("--data", help="folder with {clean,noise}/qa{k}_{valid,train}.json (default: shared data)")
    t.add_argument("--k", default="1-5", help="hops: 3, 1-5 or 1,3,5 (default 1-5)")
    t.add_argument("--limit", type=int, default=0, help="first N examples per file (0 = all)")
    t.add_argument("--shuffle-seed", type=int, default=0, help="shuffle the rows with this seed (-1 = keep order)")
    t.set_defaults(func=_cmd_export_sft)
