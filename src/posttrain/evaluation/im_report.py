"""IT vs IM (vs baselines) side by side: a Markdown table and a PNG from the analysis summaries.

Every analysis command writes a summary ``{"kind", "model", "metrics"}`` (``evaluation/alpaca_format.py``):
``loss-eval`` (train/test output loss and their gap), ``bleu-train`` (BLEU-4 of greedy outputs against the
training targets: memorisation), ``generate-set`` (output lengths) and ``judge`` (win rate against reference
outputs with its standard error). The report lines them up by model: one row per model, one column per
``kind.metric``, in the order of the IM paper's analyses (Sec. 5.5, Tables 2-3, Fig. 3 and 6).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from ..errors import ConfigError
from ..io_utils import atomic_write_json, atomic_write_text
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
    ("judge.win_rate", "win rate % (judge)", False),
    ("judge.order_disagreements", "pairs whose two orders disagree", None),
]


def _key(model: str) -> str:
    return os.path.normpath(model) if model else model


def collect(paths: list[str]) -> dict[str, dict]:
    """``{model: {kind.metric: value}}`` from summary files (later files override earlier ones)."""
    table: dict[str, dict] = {}
    for path in paths:
        summary = read_summary(path)
        row = table.setdefault(_key(summary["model"]), {})
        for name, value in summary["metrics"].items():
            if isinstance(value, (int, float)):
                row[f"{summary['kind']}.{name}"] = value
    return table


def _fmt(value, key: str, row: dict) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, int):
        return str(value)
    text = f"{value:.4f}" if key.startswith("loss_eval") else f"{value:.2f}"
    if key == "judge.win_rate" and "judge.stderr" in row:
        text += f" ± {row['judge.stderr']:.2f}"
    return text


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
    if columns:
        missing = [c for c in columns if c not in present]
        if missing:
            raise ConfigError(f"--columns: {missing[0]!r} is in no summary (available: {', '.join(sorted(present))})")
        chosen = [(c, c, None) for c in columns]
    else:
        chosen = [c for c in DEFAULT_COLUMNS if c[0] in present] or [(c, c, None) for c in sorted(present)]
    order = [m for m in labels if m in table] + [m for m in table if m not in labels]  # --label order first
    table = {m: table[m] for m in order}
    out = Path(out_dir)
    lines = [f"| model | {' | '.join(title_ for _, title_, _ in chosen)} |",
             "|---|" + "---:|" * len(chosen)]
    for model, row in table.items():
        cells = [_fmt(row.get(key), key, row) for key, _, _ in chosen]
        lines.append(f"| {labels.get(model, model)} | {' | '.join(cells)} |")
    atomic_write_text(out / "report.md", f"# {title}\n\n" + "\n".join(lines) + "\n")
    atomic_write_json(out / "report.json", {"models": {labels.get(m, m): row for m, row in table.items()},
                                            "sources": list(map(str, paths))})
    _plot(table, chosen, labels, out / "report.png", title)
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
        errors = [table[m].get("judge.stderr", 0.0) for m in table] if key == "judge.win_rate" else None
        ax.bar(range(len(values)), values, yerr=errors, color=[f"C{i}" for i in range(len(values))], capsize=3)
        ax.set_xticks(range(len(values)), short, rotation=30, ha="right", fontsize=8)
        ax.set_title(heading, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".{png.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, png)
