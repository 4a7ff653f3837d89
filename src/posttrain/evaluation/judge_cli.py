"""``posttrain judge``: pairwise win rate of model outputs A against reference outputs B (AlpacaEval 1.0 style).

    posttrain judge OUTPUTS_A.json --references B.json --out DIR [--judge local|http] [--judge-model SPEC]
        [--base-url URL] [--api-model NAME] [--api-key-env VAR] [--timeout S] [--max-retries N] [--limit N]
        [--no-swap] [--batch-size N]

Both files are AlpacaEval model-outputs JSON lists (``alpaca_format``); rows are paired by exact instruction text.
Every pair is judged in both orders (see ``judge`` for the win-rate and standard-error formulas). Writes to DIR:
``verdicts.jsonl`` (one line per pair), ``judge_summary.json`` (a posttrain summary, kind "judge") and
``judge.md``; the HTTP judge also keeps its verdict cache there (``judge_cache.jsonl``) unless ``--cache`` says
otherwise. Wire into the main parser with ``register(subparsers)``; handlers raise ``PosttrainError`` subclasses.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConfigError
from ..io_utils import atomic_write_text

CACHE_NAME = "judge_cache.jsonl"


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``judge`` to a parser's subparsers."""
    p = subparsers.add_parser(
        "judge", help="pairwise win rate of model outputs against reference outputs (AlpacaEval 1.0 style)",
        description="Judge every output of OUTPUTS_A.json against the reference output for the same instruction in "
        "--references (both AlpacaEval JSON lists), in both orders, with a local model or an OpenAI-compatible "
        "endpoint; report A's win rate (%) with its standard error.")
    p.add_argument("outputs", metavar="OUTPUTS_A.json", help="model outputs to evaluate (AlpacaEval JSON list)")
    p.add_argument("--references", required=True, metavar="B.json",
                   help="reference outputs, e.g. ../shared/data/alpaca_eval/alpaca_eval_text_davinci_003.json")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for verdicts.jsonl, judge_summary.json and judge.md")
    p.add_argument("--judge", choices=("local", "http"), default="local",
                   help="local: a Hugging Face model reads the verdict from its next-token probabilities; http: an "
                   "OpenAI-compatible /chat/completions endpoint (default: local)")
    p.add_argument("--judge-model", default="default", metavar="SPEC",
                   help="local judge: model spec or run directory (default: the bundled SmolLM2-135M-Instruct, a weak "
                   "judge meant for smoke tests)")
    p.add_argument("--dtype", default="float32", help="local judge: float32, bfloat16, float16 or auto")
    p.add_argument("--batch-size", type=int, default=8, metavar="N", help="local judge: prompts per forward pass")
    p.add_argument("--base-url", default="https://api.openai.com/v1", metavar="URL",
                   help="http judge: API base URL; /chat/completions is appended (default: OpenAI)")
    p.add_argument("--api-model", default="gpt-4", metavar="NAME", help="http judge: model name sent (default: gpt-4)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                   help="http judge: environment variable holding the API key (not needed for a loopback URL)")
    p.add_argument("--timeout", type=float, default=120.0, metavar="S", help="http judge: read timeout in seconds")
    p.add_argument("--connect-timeout", type=float, default=10.0, metavar="S",
                   help="http judge: connect timeout in seconds")
    p.add_argument("--max-retries", type=int, default=5, metavar="N",
                   help="http judge: retries after a timeout, connection error, HTTP 429/5xx or malformed reply")
    p.add_argument("--retry-delay", type=float, default=1.0, metavar="S",
                   help="http judge: first backoff delay; it doubles at each retry (at most 60 s)")
    p.add_argument("--cache", metavar="FILE.jsonl", help=f"http judge: verdict cache (default: DIR/{CACHE_NAME})")
    p.add_argument("--max-output-chars", type=int, default=2000, metavar="N",
                   help="cut each output to N characters in the judge prompt (default 2000)")
    p.add_argument("--limit", type=int, metavar="N", help="judge only the first N outputs of OUTPUTS_A.json")
    p.add_argument("--no-swap", action="store_true",
                   help="ask each pair in one order only (A first): half the cost, position bias not cancelled")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_judge)
    return p


def _check_args(args) -> None:
    for flag, value, low in (("--limit", args.limit, 1), ("--batch-size", args.batch_size, 1),
                             ("--max-retries", args.max_retries, 0), ("--max-output-chars", args.max_output_chars, 1)):
        if value is not None and value < low:
            raise ConfigError(f"{flag} {value}: expected an integer >= {low}")
    for flag, value in (("--timeout", args.timeout), ("--connect-timeout", args.connect_timeout)):
        if not value > 0:
            raise ConfigError(f"{flag} {value:g}: expected a number of seconds > 0")
    if not args.retry_delay >= 0:
        raise ConfigError(f"--retry-delay {args.retry_delay:g}: expected a number of seconds >= 0")


def build_judge(args, out: Path):
    """The judge the arguments ask for, and a one-line description of it for the summary."""
    if args.judge == "http":
        from .judge_http import HttpJudge, HttpJudgeConfig

        config = HttpJudgeConfig(
            base_url=args.base_url, model=args.api_model, api_key_env=args.api_key_env,
            connect_timeout=args.connect_timeout, read_timeout=args.timeout, max_retries=args.max_retries,
            retry_delay=args.retry_delay, max_output_chars=args.max_output_chars,
            cache_path=Path(args.cache) if args.cache else out / CACHE_NAME)
        judge = HttpJudge(config, progress=not args.quiet)
        return judge, judge.describe()
    from .judge import LocalJudge

    judge = LocalJudge.from_spec(args.judge_model, dtype=args.dtype, batch_size=args.batch_size,
                                 max_output_chars=args.max_output_chars, progress=not args.quiet)
    return judge, judge.description


def _cmd_judge(args) -> int:
    from .alpaca_format import read_model_outputs, write_summary
    from .judge import evaluate_pairs, generator_name, pair_with_references

    _check_args(args)
    rows_a = read_model_outputs(args.outputs)
    rows_b = read_model_outputs(args.references)
    rows_a, rows_b = pair_with_references(rows_a, rows_b, args.outputs, args.references, args.limit)
    out = Path(args.out)
    judge, description = build_judge(args, out)
    verdicts, metrics = evaluate_pairs(judge, rows_a, rows_b, swap=not args.no_swap)
    model, reference = generator_name(rows_a, args.outputs), generator_name(rows_b, args.references)

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "verdicts.jsonl", "".join(
        json.dumps({"index": i, **v.record()}, ensure_ascii=False) + "\n" for i, v in enumerate(verdicts)))
    write_summary(out / "judge_summary.json", "judge", model, metrics, judge=description, reference=reference,
                  swap=not args.no_swap, outputs=str(args.outputs), references=str(args.references))
    atomic_write_text(out / "judge.md", markdown(model, reference, description, metrics, swap=not args.no_swap))
    print(f"judge: {model} vs {reference}: win rate {metrics['win_rate']:.2f} ± {metrics['stderr']:.2f} over "
          f"{metrics['n']} pairs ({metrics['ties']} ties, {metrics['order_disagreements']} order disagreements, "
          f"{metrics['unparseable']} unparseable) -> {out}")
    return 0


def markdown(model: str, reference: str, description: str, metrics: dict, *, swap: bool) -> str:
    orders = "both orders (position bias cancelled)" if swap else "one order only (A first; --no-swap)"
    rows = [
        ("win rate of A (%)", f"{metrics['win_rate']:.2f} ± {metrics['stderr']:.2f} (standard error)"),
        ("pairs", str(metrics["n"])),
        ("ties (preference 0.5)", str(metrics["ties"])),
        ("pairs whose two orders disagree", str(metrics["order_disagreements"])),
        ("unparseable judge answers", str(metrics["unparseable"])),
        ("average length of A", f"{metrics['avg_chars_a']:.0f} characters, {metrics['avg_words_a']:.1f} words"),
        ("average length of B", f"{metrics['avg_chars_b']:.0f} characters, {metrics['avg_words_b']:.1f} words"),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return (f"# Pairwise judgement: {model} (A) vs {reference} (B)\n\n"
            f"Judge: `{description}`, each pair asked in {orders}.\n\n"
            f"| metric | value |\n|---|---|\n{table}\n\n"
            "Per-pair probabilities are in `verdicts.jsonl`; the numbers above in `judge_summary.json`.\n")
