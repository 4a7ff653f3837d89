"""``posttrain stepgame`` subcommands: generate and solve (StepGame, Shi, Zhang, Lipani, AAAI 2022).

    posttrain stepgame generate --k 1-10 --n 10000 --seed 0 --both --templates original --format json --out DIR
    posttrain stepgame solve FILE [FILE ...] [--templates corrected] [--show-errors 5] [--json OUT]

Wire into the main parser with ``register(subparsers)``; handlers raise ``PosttrainError`` subclasses.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from ..errors import ConfigError
from ..io_utils import atomic_write_json


def parse_k_range(text: str) -> list[int]:
    """"3" -> [3]; "1-10" -> [1..10]; "1,3,5" -> [1, 3, 5]."""
    ks: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            ks += list(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ConfigError(f"--k {text!r}: expected a number, a range like 1-10 or a list like 1,3,5") from None
    if not ks or any(not 1 <= k <= 10 for k in ks):
        raise ConfigError(f"--k {text!r}: hops must be between 1 and 10")
    return sorted(set(ks))


def _cmd_generate(args) -> int:
    from .formats import SUFFIX, write_examples
    from .generator import iter_pairs

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
    from .formats import read_examples
    from .solver import evaluate

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
    """Add ``stepgame`` (with ``generate`` and ``solve``) to a parser's subparsers."""
    p = subparsers.add_parser(
        "stepgame", help="StepGame benchmark: generate data, solve/check files",
        description="StepGame (AAAI 2022) multi-hop spatial reasoning: generator and exact solver.")
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
    return p

