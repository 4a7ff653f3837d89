"""PNG plots of a run: loss curves from ``metrics.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a kill: ignore it
            continue
    return records


def plot_loss_curves(metrics_path: str | Path, out_png: str | Path, title: str = "") -> Path | None:
    """Train loss (per logging step) and held-out output-token loss against optimizer steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["eval_output_loss"]) for r in records if "eval_output_loss" in r]
    if not train and not evals:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    if train:
        ax.plot(*zip(*train), label="train loss (weighted, trained tokens)", lw=1.2)
    if evals:
        ax.plot(*zip(*evals), "o-", label="held-out loss (output tokens)", lw=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title or Path(metrics_path).parent.name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out_png = Path(out_png)
    tmp = out_png.with_name(f".{out_png.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out_png)
    return out_png
