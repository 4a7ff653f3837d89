"""``posttrain data-stats | loss-eval | im-report``: the IM paper's dataset statistics, overfitting analysis and
the side-by-side report (thin argument parsing over ``data.stats``, ``evaluation.loss_eval``,
``evaluation.im_report``)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError


def _cmd_data_stats(args) -> int:
    from ..data.stats import file_stats, stats_table
    from ..io_utils import atomic_write_json

    tokenizer = None
    if args.tokenizer:
        from ..config import ModelConfig
        from ..models import load_tokenizer

        tokenizer = load_tokenizer(ModelConfig(name_or_path=args.tokenizer))
    rows = file_stats(args.files, args.format, tokenizer)
    print(stats_table(rows), end="")
    if args.json:
        atomic_write_json(args.json, rows)
    return 0


def _named_files(args) -> dict[str, str]:
    files = {name: getattr(args, name) for name in ("train", "test") if getattr(args, name)}
    for item in args.data or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--data {item!r}: expected NAME=FILE, e.g. --data tulu=held_out.jsonl")
        files[name] = path
    return files


def _cmd_loss_eval(args) -> int:
    from ..evaluation.alpaca_format import write_summary
    from ..evaluation.loss_eval import loss_eval

    files = _named_files(args)
    if args.out and Path(args.out).suffix != ".json":
        raise ConfigError(f"--out {args.out}: expected a .json summary path")
    result = loss_eval(args.model, files, limit=args.limit, max_length=args.max_length, batch_size=args.batch_size,
                       chat_template=args.chat_template, data_format=args.format)
    out = args.out or (str(Path(args.model) / "eval" / "loss_eval.json") if Path(args.model).is_dir()
                       else "loss_eval.json")
    write_summary(out, "loss_eval", args.model, result["metrics"], files=result["files"], details=result["details"],
                  limit=args.limit, max_length=args.max_length)
    shown = ", ".join(f"{k}={v:.4f}" for k, v in result["metrics"].items() if "example_mean" not in k)
    print(f"{args.model}: {shown} -> {out}")
    return 0


def _cmd_report(args) -> int:
    from ..evaluation.im_report import report

    labels = {}
    for item in args.label or []:
        model, sep, name = item.rpartition("=")
        if not sep or not model or not name:
            raise ConfigError(f"--label {item!r}: expected MODEL=NAME (MODEL as in the summaries)")
        labels[model] = name
    columns = [c for c in (args.columns or "").split(",") if c]
    report(args.summaries, args.out, labels, columns, args.title)
    print((Path(args.out) / "report.md").read_text(encoding="utf-8"), end="")
    return 0


def register(sub) -> None:
    p = sub.add_parser("data-stats", help="instruction/output lengths and their ratio (IM paper, Table 5)",
                       description="Size, mean instruction and output length (whitespace words; tokens with "
                       "--tokenizer) and the instruction/output ratio of instruction data files.")
    p.add_argument("files", nargs="+", help="instruction data files (.jsonl/.json/.csv/.parquet)")
    p.add_argument("--format", default="auto", choices=["auto", "messages", "alpaca", "prompt_completion", "text"])
    p.add_argument("--tokenizer", help="also count tokens with this model's tokenizer (e.g. default)")
    p.add_argument("--json", help="write the statistics to this JSON file")
    p.set_defaults(func=_cmd_data_stats)

    p = sub.add_parser("loss-eval", help="train vs held-out loss on output tokens (IM paper, Sec. 5.5)",
                       description="Output-token NLL (instruction and template masked) of a model or run on "
                       "named data files; gap = test - train. Writes a summary JSON for im-report.")
    p.add_argument("--model", default="default", help="model spec or posttrain run directory")
    p.add_argument("--train", help="the training data (what the model may have memorised)")
    p.add_argument("--test", help="held-out data")
    p.add_argument("--data", action="append", metavar="NAME=FILE", help="more named files (repeatable)")
    p.add_argument("--limit", type=int, default=None, help="first N rows of each file")
    p.add_argument("--max-length", type=int, default=1024, help="truncate examples to N tokens (default 1024)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--chat-template", help="override the run's chat template (tokenizer, tulu, chatml, plain)")
    p.add_argument("--format", default="auto", choices=["auto", "messages", "alpaca", "prompt_completion", "text"])
    p.add_argument("--out", help="summary JSON (default: RUN_DIR/eval/loss_eval.json or ./loss_eval.json)")
    p.set_defaults(func=_cmd_loss_eval)

    p = sub.add_parser("im-report", help="IT vs IM (vs baselines) side by side: Markdown table + PNG",
                       description="Line up analysis summaries (loss-eval, bleu-train, generate-set, judge) by "
                       "model into report.md, report.json and report.png; judge summaries make a second table with "
                       "AlpacaEval 1.0-style win rates (vs text-davinci-003) and 2.0-style LC win rates side by "
                       "side, each column naming its reference and judge.")
    p.add_argument("summaries", nargs="+", help="summary JSON files written by the analysis commands")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--label", action="append", metavar="MODEL=NAME", help="display name of a model (repeatable)")
    p.add_argument("--columns", help="comma-separated kind.metric columns (default: the paper's analyses)")
    p.add_argument("--title", default="IT vs IM", help="report title")
    p.set_defaults(func=_cmd_report)
