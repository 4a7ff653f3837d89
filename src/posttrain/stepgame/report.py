"""StepGame evaluation outputs: the accuracy table per k and kind, the accuracy-vs-k plot, the result files."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from ..io_utils import atomic_write_json, atomic_write_text
from ..plots import save_png
from .harness import CHANCE


def markdown_table(results: dict) -> str:
    """k down, one column per kind: accuracy (n[, unparseable])."""
    by_kind, gen = results["by_kind"], results["settings"]["mode"] == "gen"
    kinds = sorted(by_kind)
    unparse: dict[tuple, int] = defaultdict(int)
    for r in results["files"]:
        unparse[(r["kind"], str(r["k"]))] += r.get("unparseable", 0)
    keys = sorted({k for kind in kinds for k in by_kind[kind]}, key=lambda x: (not x.isdigit(), int(x) if
                                                                                   x.isdigit() else 0, x))
    head = "| k | " + " | ".join(f"{kind} acc (n{', unparseable' if gen else ''})" for kind in kinds) + " |"
    lines = [head, "|---" * (len(kinds) + 1) + "|"]
    for k in keys:
        cells = []
        for kind in kinds:
            cell = by_kind[kind].get(k)
            extra = f", {unparse[(kind, k)]}" if gen else ""
            cells.append(f"{cell['accuracy']:.3f} ({cell['n']}{extra})" if cell else "—")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    s = results["settings"]
    overall = results["overall"]
    tail = f", unparseable {overall['unparseable']}" if gen else ""
    lines.append("")
    lines.append(f"model {s['model'] or '?'}, mode {s['mode']}, {s['shots']}-shot, chat {'on' if s['chat'] else 'off'};"
                 f" overall {overall['accuracy']:.3f} on {overall['n']}{tail}; chance 1/9 = {CHANCE:.3f}")
    return "\n".join(lines) + "\n"


def plot_accuracy(results: dict, out_png, title: str = "") -> Path:
    """Accuracy vs k, one line per kind, with the 1/9 chance line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for kind, cells in sorted(results["by_kind"].items()):
        points = sorted((int(k), c["accuracy"]) for k, c in cells.items() if k.isdigit())
        if points:
            ax.plot(*zip(*points), "o-", label=kind, lw=1.5)
    ax.axhline(CHANCE, color="grey", ls="--", lw=1, label="chance (1/9)")
    s = results["settings"]
    ax.set_xlabel("hops k")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_xticks(range(1, 11))
    per_point = sorted({c["n"] for cells in results["by_kind"].values() for c in cells.values()})
    n_text = f"n={per_point[0]}" if len(per_point) == 1 else f"n={per_point[0]}-{per_point[-1]}"
    ax.set_title(title or f"StepGame {s['mode']}, {s['shots']}-shot, chat {'on' if s['chat'] else 'off'}: "
                 f"{s['model']} ({n_text} per point)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_png(fig, out_png)


def write_outputs(results: dict, out_dir) -> dict[str, Path]:
    """results.json (without predictions), predictions.jsonl, results.md and accuracy_vs_k.png."""
    out = Path(out_dir)
    paths = {"json": out / "results.json", "predictions": out / "predictions.jsonl", "markdown": out / "results.md",
             "png": out / "accuracy_vs_k.png"}
    atomic_write_json(paths["json"], {k: v for k, v in results.items() if k != "predictions"})
    atomic_write_text(paths["predictions"], "".join(json.dumps(p) + "\n" for p in results["predictions"]))
    atomic_write_text(paths["markdown"], markdown_table(results))
    plot_accuracy(results, paths["png"])
    return paths
