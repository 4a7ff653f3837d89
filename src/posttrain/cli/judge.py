"""``posttrain judge``: pairwise win rate of model outputs A against reference outputs B, AlpacaEval style.

    posttrain judge OUTPUTS_A.json --references B.json --out DIR [--judge local|http] [--judge-model SPEC]
        [--base-url URL] [--api-model NAME] [--judge-prompt posttrain|ALPACA_EVAL_EVALUATOR]
        [--instruction-difficulty FILE.csv] [--api-key-env VAR] [--timeout S] [--max-retries N] [--limit N]
        [--no-swap] [--batch-size N]

Both files are AlpacaEval model-outputs JSON lists (``alpaca_format``); rows are paired by exact instruction text.
Every pair is judged in both orders (see ``judge`` for the win-rate and standard-error formulas). Writes to DIR:
``verdicts.jsonl`` (one line per pair), ``annotations.json`` (the verdicts as AlpacaEval annotations, which the
``alpaca_eval`` package reads; ``alpaca_annotations``), ``judge_summary.json`` (a posttrain summary, kind "judge",
with the raw and the length-controlled win rate, ``length_controlled``) and ``judge.md``; the HTTP judge also keeps
its verdict cache there (``judge_cache.jsonl``) unless ``--cache`` says otherwise. Without the alpaca_eval package
the LC win rate is reported as not computed (and ``--judge-prompt NAME`` or ``--instruction-difficulty`` are
refused with one line). Wire into the main parser with ``register(subparsers)``; handlers raise ``PosttrainError``
subclasses.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConfigError
from ..io_utils import atomic_write_text, refuse_finished

CACHE_NAME = "judge_cache.jsonl"
POSTTRAIN_PROMPT = "posttrain"
DEFAULT_API_MODEL = "gpt-4"  # for posttrain's prompt; an AlpacaEval evaluator names its own model


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``judge`` to a parser's subparsers."""
    p = subparsers.add_parser(
        "judge", help="pairwise and length-controlled win rates of model outputs against reference outputs "
        "(AlpacaEval style)",
        description="Judge every output of OUTPUTS_A.json against the reference output for the same instruction in "
        "--references (both AlpacaEval JSON lists), in both orders, with a local model or an OpenAI-compatible "
        "endpoint; report A's win rate (%) with its standard error and AlpacaEval 2.0's length-controlled win rate, "
        "and write the verdicts as AlpacaEval annotations.")
    p.add_argument("outputs", metavar="OUTPUTS_A.json", help="model outputs to evaluate (AlpacaEval JSON list)")
    p.add_argument("--references", required=True, metavar="B.json",
                   help="reference outputs, e.g. ../shared/data/alpaca_eval/alpaca_eval_text_davinci_003.json")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for verdicts.jsonl, judge_summary.json and judge.md")
    p.add_argument("--overwrite", action="store_true", help="replace a finished judgement in DIR (the verdict "
                   "cache is kept: delete judge_cache.jsonl for fresh verdicts)")
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
    p.add_argument("--api-model", metavar="NAME", help="http judge: model name sent (default: the --judge-prompt "
                   f"evaluator's model, {DEFAULT_API_MODEL} with posttrain's prompt)")
    p.add_argument("--judge-prompt", default=POSTTRAIN_PROMPT, metavar="NAME",
                   help="http judge: posttrain (default: its own a/b prompt) or an evaluator configuration of the "
                   "installed alpaca_eval package, with its prompt, request settings and parser, e.g. "
                   "weighted_alpaca_eval_gpt4_turbo (AlpacaEval 2.0's judge) or alpaca_eval_gpt4 (1.0's)")
    p.add_argument("--instruction-difficulty", metavar="FILE.csv",
                   help="AlpacaEval's per-instruction difficulty table (instruction_difficulty.csv, indexed by the "
                   "row of each instruction in --references): the LC win rate then includes the difficulty term; "
                   "without it, the length-and-baseline-only GLM is used and labelled so")
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
    if args.judge_prompt != POSTTRAIN_PROMPT and args.judge != "http":
        raise ConfigError(f"--judge-prompt {args.judge_prompt}: needs --judge http (the local judge reads the answer "
                          "letters of posttrain's own prompt)")


def build_judge(args, out: Path):
    """The judge the arguments ask for, and a one-line description of it for the summary."""
    if args.judge == "http":
        from ..evaluation.judge_http import HttpJudge, HttpJudgeConfig

        prompt = None
        if args.judge_prompt != POSTTRAIN_PROMPT:
            from ..evaluation.alpaca_prompts import AlpacaEvaluatorPrompt

            prompt = AlpacaEvaluatorPrompt(args.judge_prompt)
        model = args.api_model or (prompt.model_name if prompt else DEFAULT_API_MODEL)
        config = HttpJudgeConfig(
            base_url=args.base_url, model=model, api_key_env=args.api_key_env,
            connect_timeout=args.connect_timeout, read_timeout=args.timeout, max_retries=args.max_retries,
            retry_delay=args.retry_delay, max_output_chars=args.max_output_chars,
            cache_path=Path(args.cache) if args.cache else out / CACHE_NAME)
        judge = HttpJudge(config, prompt=prompt, progress=not args.quiet)
        return judge, judge.describe()
    from ..evaluation.judge import LocalJudge

    judge = LocalJudge.from_spec(args.judge_model, dtype=args.dtype, batch_size=args.batch_size,
                                 max_output_chars=args.max_output_chars, progress=not args.quiet)
    return judge, judge.description


def _difficulties(args, rows_a: list[dict], all_rows_b: list[dict]) -> list[float] | None:
    """Each pair's instruction difficulty from --instruction-difficulty, checked before any judging."""
    if not args.instruction_difficulty:
        return None
    from ..evaluation.alpaca_package import require
    from ..evaluation.length_controlled import difficulties_for, read_difficulty_table

    require("alpaca_eval.metrics.glm_winrate", needed_for=f"--instruction-difficulty {args.instruction_difficulty}")
    table = read_difficulty_table(args.instruction_difficulty)
    positions: dict[str, int] = {}
    for number, row in enumerate(all_rows_b):
        positions.setdefault(row["instruction"], number)  # as pairing does: the first reference of an instruction
    return difficulties_for([positions[r["instruction"]] for r in rows_a], table, args.instruction_difficulty,
                            args.references, [r["instruction"] for r in rows_a])


def length_control(annotations: list[dict], difficulties: list[float] | None) -> tuple[dict, dict]:
    """(LC metrics for the summary, how they were computed); "not computed" with the reason when they cannot be."""
    from ..evaluation import alpaca_package
    from ..evaluation.length_controlled import length_controlled_win_rate

    if not alpaca_package.available():
        return {}, {"form": None, "label": "not computed: the alpaca_eval package is not installed "
                    f"({alpaca_package.INSTALL_HINT})"}
    try:
        result = length_controlled_win_rate(annotations, difficulties)
    except ValueError as err:
        return {}, {"form": None, "label": f"not computed: {err}"}
    metrics = {k: result[k] for k in ("lc_win_rate", "lc_stderr", "alpaca_eval_win_rate")}
    return metrics, {"form": result["lc_form"], "label": result["lc_label"],
                     "extreme_change": result["lc_extreme_change"], "alpaca_eval": alpaca_package.version()}


def _cmd_judge(args) -> int:
    from ..evaluation.alpaca_annotations import ANNOTATIONS_NAME, build_annotations, evaluation_style, write_annotations
    from ..evaluation.alpaca_format import read_model_outputs, write_summary
    from ..evaluation.judge import evaluate_pairs, generator_name, pair_with_references

    _check_args(args)
    refuse_finished(Path(args.out) / "judge_summary.json", "--out", "a finished judgement", args.overwrite)
    rows_a = read_model_outputs(args.outputs)
    all_rows_b = read_model_outputs(args.references)
    rows_a, rows_b = pair_with_references(rows_a, all_rows_b, args.outputs, args.references, args.limit)
    difficulties = _difficulties(args, rows_a, all_rows_b)
    out = Path(args.out)
    judge, description = build_judge(args, out)
    verdicts, metrics = evaluate_pairs(judge, rows_a, rows_b, swap=not args.no_swap)
    model, reference = generator_name(rows_a, args.outputs), generator_name(rows_b, args.references)

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "verdicts.jsonl", "".join(
        json.dumps({"index": i, **v.record()}, ensure_ascii=False) + "\n" for i, v in enumerate(verdicts)))
    annotations = build_annotations(verdicts, rows_a, rows_b, model=model, reference=reference,
                                    annotator=description)
    write_annotations(out / ANNOTATIONS_NAME, annotations)
    lc_metrics, lc_info = length_control(annotations, difficulties)
    metrics.update(lc_metrics)
    lc_info["difficulty_table"] = args.instruction_difficulty
    style = evaluation_style(reference)
    write_summary(out / "judge_summary.json", "judge", model, metrics, judge=description, reference=reference,
                  style=style, judge_prompt=args.judge_prompt if args.judge == "http" else "posttrain",
                  length_controlled=lc_info, swap=not args.no_swap, outputs=str(args.outputs),
                  references=str(args.references), annotations=str(out / ANNOTATIONS_NAME))
    atomic_write_text(out / "judge.md", markdown(model, reference, description, metrics, lc_info, style=style,
                                                 swap=not args.no_swap))
    lc_text = (f"LC win rate {metrics['lc_win_rate']:.2f} ({lc_info['form']})"
               if "lc_win_rate" in metrics else f"LC {lc_info['label']}")
    print(f"judge: {model} vs {reference}: win rate {metrics['win_rate']:.2f} ± {metrics['stderr']:.2f}, {lc_text}, "
          f"over {metrics['n']} pairs ({metrics['ties']} ties, {metrics['order_disagreements']} order "
          f"disagreements, {metrics['unparseable']} unparseable) -> {out}")
    return 0


def markdown(model: str, reference: str, description: str, metrics: dict, lc_info: dict, *, style: str,
             swap: bool) -> str:
    orders = "both orders (position bias cancelled)" if swap else "one order only (A first; --no-swap)"
    if "lc_win_rate" in metrics:
        # the package's LC standard error is the spread of its per-pair predictions: always 0 for the length-only
        # form (one prediction for every pair), so it is shown only when there is a spread
        spread = f" ± {metrics['lc_stderr']:.2f}" if metrics["lc_stderr"] > 0 else ""
        lc = f"{metrics['lc_win_rate']:.2f}{spread} ({lc_info['label']})"
        if lc_info.get("extreme_change"):
            lc += "; far from the raw win rate, which alpaca_eval flags as a possible GLM failure"
    else:
        lc = lc_info["label"]
    rows = [
        ("win rate of A (%)", f"{metrics['win_rate']:.2f} ± {metrics['stderr']:.2f} (standard error)"),
        ("length-controlled win rate of A (%)", lc),
        ("pairs", str(metrics["n"])),
        ("ties (preference 0.5)", str(metrics["ties"])),
        ("pairs whose two orders disagree", str(metrics["order_disagreements"])),
        ("unparseable judge answers", str(metrics["unparseable"])),
        ("average length of A", f"{metrics['avg_chars_a']:.0f} characters, {metrics['avg_words_a']:.1f} words"),
        ("average length of B", f"{metrics['avg_chars_b']:.0f} characters, {metrics['avg_words_b']:.1f} words"),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return (f"# Pairwise judgement: {model} (A) vs {reference} (B), {style}\n\n"
            f"Judge: `{description}`, each pair asked in {orders}.\n\n"
            f"| metric | value |\n|---|---|\n{table}\n\n"
            "Per-pair probabilities are in `verdicts.jsonl`, the same verdicts as AlpacaEval annotations in "
            "`annotations.json`; the numbers above in `judge_summary.json`.\n")
