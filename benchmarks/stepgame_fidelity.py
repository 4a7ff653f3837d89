"""StepGame fidelity check (Shi, Zhang, Lipani, AAAI 2022): our generator and solver against the released data.

    .venv/bin/python benchmarks/stepgame_fidelity.py [--data ../shared/data/stepgame] [--n 10000] [--seed 0]

1. label distribution per k of the generator (original templates, seed 0, n per k) vs the released clean
   train files (k=1..6, 10k each; tolerance 2 percentage points) and clean valid files (k=7..10, 1k each: shown
   for information, sampling noise alone is ~1.5 pp there);
2. average noise nodes per k (supporting, disconnected, irrelevant, total) vs statistic.txt "Test" rows
   (10k each; tolerance 5% relative);
3. solver accuracy on every released valid file (clean and noise, k=1..10) with the literal ("corrected")
   reading, contradicting labels and how many are explained by defective templates; also the "original" reading;
4. generated with corrected templates: solver == label on every example;
5. control: with random wrong labels, how many contradictions would the explainer (wrongly) accept.
Writes docs/benchmarks/stepgame_fidelity.json.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import time
from collections import Counter
from pathlib import Path

from posttrain.io_utils import atomic_write_json
from posttrain.stepgame import LABELS, evaluate, iter_pairs, read_json

ROOT = Path(__file__).resolve().parents[1]


def chi2_two_sample(a: Counter, b: Counter, labels) -> tuple[float, int, float]:
    """Chi-square test of homogeneity of two label samples: (statistic, df, p-value), no scipy needed."""
    labels = [l for l in labels if a[l] + b[l] > 0]
    na, nb = sum(a.values()), sum(b.values())
    stat = 0.0
    for l in labels:
        tot = a[l] + b[l]
        for obs, n in ((a[l], na), (b[l], nb)):
            exp = tot * n / (na + nb)
            stat += (obs - exp) ** 2 / exp
    df = len(labels) - 1
    half = stat / 2
    if df % 2 == 0:  # survival function of chi2 with even df
        term, total = 1.0, 1.0
        for i in range(1, df // 2):
            term *= half / i
            total += term
        return stat, df, math.exp(-half) * total
    total = math.erfc(math.sqrt(half))
    for i in range(1, (df + 1) // 2):
        total += math.exp(-half + (i - 0.5) * math.log(half) - math.lgamma(i + 0.5)) if half > 0 else 0.0
    return stat, df, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "stepgame"))
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "stepgame_fidelity.json"))
    args = ap.parse_args()
    data = Path(args.data)
    result: dict = {"n": args.n, "seed": args.seed}

    t0 = time.perf_counter()
    gen = {k: [noisy for _, noisy in iter_pairs(k, args.n, args.seed, "original")] for k in range(1, 11)}
    result["generate_seconds_100k"] = round(time.perf_counter() - t0, 2)
    print(f"generated {10 * args.n} stories (clean+noisy pairs, k=1..10) in {result['generate_seconds_100k']} s")

    print("\n1. label distribution (% of examples), generator vs released clean data")
    print(f"{'k':>3} {'ref':>9} " + " ".join(f"{lab[:11]:>11}" for lab in LABELS) + "  max|diff|  ok(<=2pp)  chi2 p")
    rows = []
    for k in range(1, 11):
        ref_file = data / "clean" / (f"qa{k}_train.json" if k <= 6 else f"qa{k}_valid.json")
        ref = Counter(ex["label"] for ex in read_json(ref_file))
        ours = Counter(ex["label"] for ex in gen[k])
        n_ref, n_ours = sum(ref.values()), sum(ours.values())
        diff = {lab: 100 * ours[lab] / n_ours - 100 * ref[lab] / n_ref for lab in LABELS}
        worst = max(abs(v) for v in diff.values())
        ok = worst <= 2.0
        chi2, df, pval = chi2_two_sample(ours, ref, LABELS)
        rows.append({"k": k, "reference": ref_file.name, "ours_pct": {l: 100 * ours[l] / n_ours for l in LABELS},
                     "ref_pct": {l: 100 * ref[l] / n_ref for l in LABELS}, "max_abs_diff_pp": worst,
                     "within_2pp": ok, "chi2": chi2, "df": df, "p_value": pval})
        print(f"{k:>3} {ref_file.stem:>9} " + " ".join(f"{100 * ours[l] / n_ours:5.1f}/{100 * ref[l] / n_ref:<5.1f}"
                                                      for l in LABELS) + f"  {worst:8.2f}  {str(ok):>9}  {pval:.2f}")
    result["labels"] = rows

    print("\n2. average noise nodes per example (ours / statistic.txt Test), within 5%?")
    stat = {}
    for m in re.finditer(r"Test nhop (\d+): .*?\(([\d.]+), ([\d.]+), ([\d.]+)\)", (data / "statistic.txt").read_text()):
        stat[int(m.group(1))] = [float(m.group(i)) for i in (2, 3, 4)]
    rows = []
    for k in range(1, 11):
        ours = [sum(ex["noise_nodes"][t] for ex in gen[k]) / len(gen[k])
                for t in ("supporting", "disconnected", "irrelevant")]
        ours.append(sum(ours))
        ref = stat[k] + [sum(stat[k])]
        rel = [abs(a - b) / b if b else abs(a - b) for a, b in zip(ours, ref)]
        ok = all(r <= 0.05 for r in rel)
        rows.append({"k": k, "ours": ours, "statistic_txt_test": ref, "max_rel_diff": max(rel), "within_5pct": ok})
        print(f"k={k:>2}  " + "  ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(ours, ref))
              + f"  max rel diff {100 * max(rel):.2f}%  {ok}")
    result["noise_nodes"] = rows

    print("\n3. solver on the released valid sets (literal = corrected reading; original = as generated)")
    rows = []
    t0, n_solved = time.perf_counter(), 0
    for kind in ("clean", "noise"):
        for k in range(1, 11):
            examples = read_json(data / kind / f"qa{k}_valid.json")
            lit, orig = evaluate(examples, "corrected"), evaluate(examples, "original")
            n_solved += 2 * len(examples)
            by_template = Counter(t for e in lit["errors"] for t in e["templates"])
            rows.append({"file": f"{kind}/qa{k}_valid.json", "accuracy_literal": lit["accuracy"],
                         "contradictions": lit["contradictions"], "explained": lit["explained"],
                         "unexplained": lit["unexplained"], "unparsed_sentences": lit["unparsed_sentences"],
                         "accuracy_original": orig["accuracy"], "unexplained_original": orig["unexplained"],
                         "by_template": dict(by_template.most_common())})
            print(f"{kind}/qa{k}_valid.json: literal acc {lit['accuracy']:.3f}, {lit['contradictions']} "
                  f"contradictions, {lit['explained']} explained, {lit['unexplained']} unexplained, "
                  f"{lit['unparsed_sentences']} unparsed; original-reading acc {orig['accuracy']:.3f} "
                  f"({orig['unexplained']} unexplained)")
    result["solver_seconds"] = round(time.perf_counter() - t0, 2)
    result["solver"] = rows
    total = Counter()
    for r in rows:
        total.update(r["by_template"])
    print("contradictions per responsible defective template (all 20 files):", dict(total.most_common()))
    result["by_template_total"] = dict(total.most_common())

    print("\n4. generated with corrected templates, solver vs label")
    rows = []
    for k in range(1, 11):
        pairs = list(iter_pairs(k, 1000, args.seed + 1, "corrected"))
        clean = evaluate([c for c, _ in pairs], "corrected")
        noisy = evaluate([n for _, n in pairs], "corrected")
        rows.append({"k": k, "clean": clean["accuracy"], "noise": noisy["accuracy"]})
    print("  ".join(f"k={r['k']}: {r['clean']:.3f}/{r['noise']:.3f}" for r in rows), "(clean/noise)")
    result["corrected_roundtrip"] = rows

    print("\n5. control: the same noise valid files with every label replaced by a random wrong one")
    rows = []
    for k in range(1, 11):
        examples = read_json(data / "noise" / f"qa{k}_valid.json")
        rng = random.Random(k)
        for ex in examples:
            ex["label"] = rng.choice([lab for lab in LABELS if lab != ex["label"]])
        rep = evaluate(examples, "corrected")
        rows.append({"k": k, "contradictions": rep["contradictions"], "explained": rep["explained"]})
    print("  ".join(f"k={r['k']}: {r['explained']}/{r['contradictions']}" for r in rows),
          "(explained/contradictions: explanations are specific, not always available)")
    result["control_random_labels"] = rows
    atomic_write_json(args.out, result)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
