"""Compare ``posttrain stepgame eval`` results of several models (StepGame: Shi, Zhang, Lipani, AAAI 2022): one
accuracy-vs-k line per (model, kind), a random-chance line, and a markdown table.

    .venv/bin/python benchmarks/stepgame_compare.py --out docs/benchmarks/stepgame_finetune_lora_cpu \\
        --run zero-shot=runs/stepgame_eval/zeroshot_mc/results.json \\
        --run LoRA=runs/stepgame_lora_cpu/eval_mc/results.json [--kinds noise noise-test]

Writes OUT.json (the per-k accuracies and each run's settings), OUT.md (the table) and OUT.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CHANCE = 1 / 9


def load(spec: str) -> tuple[str, dict]:
    name, sep, path = spec.partition("=")
    if not sep:
        raise SystemExit(f"--run {spec!r}: expected NAME=RESULTS.json")
    results = json.loads(Path(path).read_text())
    results["answer_mass"] = answer_mass(Path(path))
    return name, results


def table(runs: dict[str, dict], kinds: list[str]) -> str:
    cols = [(name, kind) for kind in kinds for name in runs if kind in runs[name]["by_kind"]]
    ks = sorted({int(k) for name, kind in cols for k in runs[name]["by_kind"][kind] if k.isdigit()})
    lines = ["| k | " + " | ".join(f"{name}, {kind}" for name, kind in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for k in ks:
        cells = []
        for name, kind in cols:
            cell = runs[name]["by_kind"][kind].get(str(k))
            cells.append(f"{cell['accuracy']:.3f} ({cell['n']})" if cell else "—")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    means = []
    for name, kind in cols:
        cells = runs[name]["by_kind"][kind]
        n = sum(c["n"] for c in cells.values())
        means.append(f"**{sum(c['accuracy'] * c['n'] for c in cells.values()) / n:.3f}** ({n})")
    lines.append("| all | " + " | ".join(means) + " |")
    masses = [runs[name].get("answer_mass", {}).get(kind) for name, kind in cols]
    if any(m is not None for m in masses):
        lines.append("| answer-word mass | " + " | ".join("—" if m is None else f"{m:.3f}" for m in masses) + " |")
    note = ("; answer-word mass = mean total probability of the 9 answer words (from predictions.jsonl)"
            if any(m is not None for m in masses) else "")
    return "\n".join(lines) + f"\n\naccuracy (n examples); chance 1/9 = {CHANCE:.3f}{note}\n"


def answer_mass(results_path: Path) -> dict[str, float]:
    """Mean probability mass on the 9 answer words per kind (mc predictions.jsonl beside results.json)."""
    import math

    path = results_path.with_name("predictions.jsonl")
    if not path.is_file():
        return {}
    sums: dict[str, list[float]] = {}
    for line in path.read_text().splitlines():
        p = json.loads(line)
        if "logprobs" in p:
            sums.setdefault(p["kind"], []).append(sum(math.exp(x) for x in p["logprobs"]))
    return {kind: sum(v) / len(v) for kind, v in sums.items()}


def plot(runs: dict[str, dict], kinds: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.8, 4.2), dpi=110)
    styles = ["o-", "s--", "^-.", "d:"]
    for i, (name, res) in enumerate(runs.items()):
        for j, kind in enumerate(kinds):
            cells = res["by_kind"].get(kind)
            if not cells:
                continue
            points = sorted((int(k), c["accuracy"]) for k, c in cells.items() if k.isdigit())
            ax.plot(*zip(*points), styles[j % len(styles)], color=f"C{i}", lw=1.5, label=f"{name}: {kind}")
    ax.axhline(CHANCE, color="grey", ls="--", lw=1, label="chance (1/9)")
    ax.set_xlabel("hops k")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_xticks(range(1, 11))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    import textwrap

    ax.set_title("\n".join(textwrap.wrap(title, 80)), fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, help="NAME=path/to/results.json (repeat)")
    ap.add_argument("--kinds", nargs="+", default=["noise", "noise-test"], help="kinds to compare")
    ap.add_argument("--title", default="", help="plot title")
    ap.add_argument("--out", required=True, help="output path without suffix")
    args = ap.parse_args()
    runs = dict(load(spec) for spec in args.run)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    md = table(runs, args.kinds)
    out.with_suffix(".md").write_text(md)
    out.with_suffix(".json").write_text(json.dumps(
        {name: {"settings": r["settings"], "by_kind": {k: r["by_kind"][k] for k in args.kinds if k in r["by_kind"]},
                "answer_mass": r["answer_mass"], "seconds": r.get("seconds")} for name, r in runs.items()},
        indent=2) + "\n")
    title = args.title or "StepGame MC accuracy vs k: " + " vs ".join(runs)
    plot(runs, args.kinds, out.with_suffix(".png"), title)
    print(md, end="")
    print(f"wrote {out.with_suffix('.md')}, {out.with_suffix('.json')}, {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
