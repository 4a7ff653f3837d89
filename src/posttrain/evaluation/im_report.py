"""IT vs IM (vs baselines) side by side: a Markdown table and a PNG from the analysis summaries.

Every analysis command writes a summary ``{"kind", "model", "metrics"}`` (``evaluation/alpaca_format.py``):
``loss-eval`` (train/test output loss and their gap), ``bleu-train`` (BLEU-4 of greedy outputs against the
training targets: memorisation), ``generate-set`` (output lengths) and ``judge`` (win rate against reference
outputs with its standard error, and AlpacaEval 2.0's length-controlled win rate). The report lines them up by
model: one row per model, one column per ``kind.metric``, in the order of the IM paper's analyses (Sec. 5.5,
Tables 2-3, Fig. 3 and 6).

Judge summaries also make a second table, one column group per *evaluation* (reference outputs, judge): the
AlpacaEval 1.0-style win rate against text-davinci-003's outputs next to the AlpacaEval 2.0-style LC win rate
(and raw win rate) against GPT-4 Turbo's, each column header naming its judge, since win rates by different judges
or against different references are not comparable. Their metrics are stored as ``judge[REFERENCE | JUDGE].metric``
(report.json, ``--columns``); ``judge.metric`` keeps the last judge summary of a model, as before.
"""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path

from ..errors import ConfigError
from ..io_utils import atomic_write_json, atomic_write_text
from ..plots import save_png
from .alpaca_format import read_summary

# (kind.metric, column title, lower is better?) shown by default when present; everything else stays in the JSON
DEFAULT_COLUMNS = [
    ("loss_eval.train_output_loss", "train loss (output tokens)", None),
    ("loss_eval.test_output_loss", "held-out loss (output tokens)", True),
    ("loss_eval.gap", "gap (held-out - train)", True),
    ("bleu_train.bleu", "BLEU-4 vs train targets (corpus)", None),
    ("bleu_train.sentence_bleu_mean", "BLEU vs train targets (mean sentence)", None),
    ("bleu_train.avg_output_words", "words per answer to train prompts", None),
    ("generation.avg_output_words", "words per AlpacaEval answer", None),
]
STYLE_ORDER = {"AlpacaEval 1.0 style": 0, "AlpacaEval 2.0 style": 1}  # then custom references


def _key(model: str) -> str:
    return os.path.normpath(model) if model else model


def evaluation_key(summary: dict) -> str:
    return f"judge[{summary.get('reference', '?')} | {summary.get('judge', '?')}]"


def collect(paths: list[str]) -> dict[str, dict]:
    """``{model: {kind.metric: value}}`` from summary files (later files override earlier ones)."""
    table: dict[str, dict] = {}
    for path in paths:
        summary = read_summary(path)
        row = table.setdefault(_key(summary["model"]), {})
        kinds = [summary["kind"]] + ([evaluation_key(summary)] if summary["kind"] == "judge" else [])
        for name, value in summary["metrics"].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                for kind in kinds:
                    row[f"{kind}.{name}"] = value
    return table


def judge_evaluations(paths: list[str]) -> dict[str, dict]:
    """``{evaluation key: {reference, judge, style, judge_prompt, lc_label}}`` of the judge summaries."""
    from .alpaca_annotations import evaluation_style

    evaluations: dict[str, dict] = {}
    for path in paths:
        summary = read_summary(path)
        if summary["kind"] != "judge":
            continue
        reference = summary.get("reference", "?")
        entry = evaluations.setdefault(evaluation_key(summary), {
            "reference": reference, "judge": summary.get("judge", "?"),
            "style": summary.get("style") or evaluation_style(reference),
            "judge_prompt": summary.get("judge_prompt", "posttrain"), "lc_labels": []})
        label = (summary.get("length_controlled") or {}).get("label")
        if label and label not in entry["lc_labels"]:
            entry["lc_labels"].append(label)
    return evaluations


def alpaca_columns(evaluations: dict[str, dict], present: set[str]) -> list[tuple[str, str, bool | None]]:
    """The AlpacaEval table's columns: 1.0-style win rates, then 2.0-style LC and raw win rates, judge named."""
    columns = []
    for key, ev in sorted(evaluations.items(), key=lambda kv: (STYLE_ORDER.get(kv[1]["style"], 2), kv[0])):
        judge = f"judge `{ev['judge']}`"
        raw = (f"{key}.win_rate", f"{ev['style']}: win rate % vs {ev['reference']} ({judge})", False)
        lc = (f"{key}.lc_win_rate", f"{ev['style']}: LC win rate % vs {ev['reference']} ({judge})", False)
        group = [lc, raw] if ev["style"] == "AlpacaEval 2.0 style" else [raw, lc]
        columns += [c for c in group if c[0] in present]
    return columns


def _fmt(value, key: str, row: dict) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, int):
        return str(value)
    text = f"{value:.4f}" if key.startswith("loss_eval") else f"{value:.2f}"
    spread = _spread_key(key)
    # an LC spread of 0 is the length-only GLM's single prediction, not a measured uncertainty: not shown
    if spread in row and not (key.endswith(".lc_win_rate") and row[spread] == 0):
        text += f" ± {row[spread]:.2f}"
    return text


def _spread_key(key: str) -> str | None:
    """The standard error that goes with a win-rate column (raw or length-controlled)."""
    for metric, spread in ((".lc_win_rate", ".lc_stderr"), (".win_rate", ".stderr")):
        if key.startswith("judge") and key.endswith(metric):
            return key[: -len(metric)] + spread
    return None


def _markdown_table(table: dict, chosen: list, labels: dict) -> list[str]:
    lines = [f"| model | {' | '.join(heading for _, heading, _ in chosen)} |", "|---|" + "---:|" * len(chosen)]
    for model, row in table.items():
        cells = [_fmt(row.get(key), key, row) for key, _, _ in chosen]
        lines.append(f"| {labels.get(model, model)} | {' | '.join(cells)} |")
    return lines


def report(paths: list[str], out_dir: str | Path, labels: dict[str, str] | None = None,
           columns: list[str] | None = None, title: str = "IT vs IM") -> dict:
    """Write ``report.md``, ``report.json`` and ``report.png`` into ``out_dir``; returns the collected table."""
    if not paths:
        raise ConfigError("im-report: give at least one summary JSON file")
    table = collect(paths)
    labels = {_key(k): v for k, v in (labels or {}).items()}
    unknown = set(labels) - set(table)
    if unknown:
        raise ConfigError(f"--label: no summary has model {sorted(unknown)[0]!r} (models: {', '.join(table)})")
    present = {k for row in table.values() for k in row}
    evaluations = judge_evaluations(paths)
    if columns:
        missing = [c for c in columns if c not in present]
        if missing:
            raise ConfigError(f"--columns: {missing[0]!r} is in no summary (available: {', '.join(sorted(present))})")
        judges = ", ".join(f"`{ev['judge']}`" for ev in evaluations.values())
        # a plain judge.* column holds each model's last judge summary: say which judge(s) that was
        chosen = [(c, f"{c} (judge {judges})" if c.startswith("judge.") else c, None) for c in columns]
        judged = []
    else:
        chosen = [c for c in DEFAULT_COLUMNS if c[0] in present]
        judged = alpaca_columns(evaluations, present)
        if not chosen and not judged:
            chosen = [(c, c, None) for c in sorted(present)]
    order = [m for m in labels if m in table] + [m for m in table if m not in labels]  # --label order first
    table = {m: table[m] for m in order}
    out = Path(out_dir)
    parts = [f"# {title}\n"]
    if chosen:
        parts.append("\n".join(_markdown_table(table, chosen, labels)) + "\n")
    if judged:
        notes = "\n".join(
            f"- `{key}`: {ev['style']}, reference outputs {ev['reference']}, judge `{ev['judge']}` "
            f"(prompt {ev['judge_prompt']}); LC: {'; '.join(ev['lc_labels']) or 'not in the summary'}"
            for key, ev in evaluations.items())
        parts.append("## Instruction following (AlpacaEval win rates, %, ± standard error)\n\n"
                     + "\n".join(_markdown_table(table, judged, labels)) + "\n\n" + notes + "\n")
    atomic_write_text(out / "report.md", "\n".join(parts))
    atomic_write_json(out / "report.json", {"models": {labels.get(m, m): row for m, row in table.items()},
                                            "evaluations": evaluations, "sources": list(map(str, paths))})
    _plot(table, chosen + judged, labels, out / "report.png", title)
    return table


def _plot(table: dict, chosen: list, labels: dict, png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(chosen)
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.3 * rows), dpi=110, squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    names = [labels.get(m, m) for m in table]
    short = [name if len(name) <= 24 else "…" + name[-23:] for name in names]
    for ax, (key, heading, _) in zip(axes.flat, chosen):
        values = [table[m].get(key, float("nan")) for m in table]
        spread = _spread_key(key)
        errors = [table[m].get(spread, 0.0) for m in table] if spread else None
        ax.bar(range(len(values)), values, yerr=errors, color=[f"C{i}" for i in range(len(values))], capsize=3)
        ax.set_xticks(range(len(values)), short, rotation=30, ha="right", fontsize=8)
        ax.set_title(textwrap.fill(heading.replace("`", ""), 38), fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    save_png(fig, png)
