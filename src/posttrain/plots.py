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


def save_png(fig, out_png: str | Path) -> Path:
    """Write a matplotlib figure to ``out_png`` atomically and close it.

    The temporary is named like ``atomic_write_*``'s (``.NAME.plot.tmp``), so the ``remove_stale_temp_files`` a
    resumed run calls removes one that a kill left behind."""
    import matplotlib.pyplot as plt

    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.name}.plot.tmp")
    try:
        fig.savefig(tmp, format="png")
        tmp.replace(out_png)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return out_png


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
    return save_png(fig, out_png)
