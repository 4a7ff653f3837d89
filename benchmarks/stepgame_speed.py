"""StepGame generator and solver throughput (Shi, Zhang, Lipani, AAAI 2022 benchmark size: 10k per k, k=1..10).

    .venv/bin/python benchmarks/stepgame_speed.py [--repeats 3]

Measures (best of --repeats, one CPU process): generating the full benchmark (100,000 stories, each with its
clean and noisy version), the same through the CLI path that also writes 20 official-JSON files, and the solver
on generated noisy stories (k=1..10, 1,000 each). Writes docs/benchmarks/stepgame_speed.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from posttrain.io_utils import atomic_write_json
from posttrain.cli import main as stepgame_cli
from posttrain.stepgame.generator import iter_pairs
from posttrain.stepgame.solver import solve

ROOT = Path(__file__).resolve().parents[1]


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "stepgame_speed.json"))
    args = ap.parse_args()

    gen_s = best_of(args.repeats, lambda: [list(iter_pairs(k, 10000, 0)) for k in range(1, 11)])
    print(f"generate 100,000 stories (clean+noisy, k=1..10): {gen_s:.2f} s = {100000 / gen_s:,.0f} stories/s")

    with tempfile.TemporaryDirectory() as tmp:
        cli_s = best_of(args.repeats, lambda: stepgame_cli(
            ["stepgame", "generate", "--k", "1-10", "--n", "10000", "--both", "--quiet", "--out", tmp]))
    print(f"CLI generate --k 1-10 --n 10000 --both (writes 20 JSON files): {cli_s:.2f} s")

    examples = [noisy for k in range(1, 11) for _, noisy in iter_pairs(k, 1000, 1, "corrected")]
    solve_s = best_of(args.repeats, lambda: [solve(ex["story"], ex["question"]) for ex in examples])
    print(f"solve {len(examples):,} noisy stories (k=1..10): {solve_s:.2f} s = {len(examples) / solve_s:,.0f} "
          "examples/s")
    atomic_write_json(args.out, {
        "generate_100k_seconds": round(gen_s, 3), "generate_stories_per_second": round(100000 / gen_s),
        "cli_generate_full_benchmark_seconds": round(cli_s, 3), "solve_examples": len(examples),
        "solve_seconds": round(solve_s, 3), "solve_examples_per_second": round(len(examples) / solve_s),
        "repeats": args.repeats, "python": platform.python_version(), "cpus": os.cpu_count(),
        "machine": platform.machine(),
    })
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
