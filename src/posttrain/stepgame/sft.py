"""StepGame as instruction data for ``posttrain train``: ``posttrain stepgame export-sft``.

The StepGame paper (Shi, Zhang, Lipani, AAAI 2022; methods-reference §6.3) trains on clean k = 1..5 and tests on
noisy k = 1..10. This writes training rows in the engine's ``prompt_completion`` format (``data/instruction.py``)::

    {"prompt": prompts.example_prompt(example), "completion": example["label"], "k_hop": k}

The prompt is the harness's zero-shot prompt word for word and the completion the canonical answer word, so a run
trained on these rows renders (with its ``data.chat_template``) exactly the conversation that
``posttrain stepgame eval --model RUN_DIR`` scores: the user turn is the prompt, the answer word follows the
assistant header. Default input: ``{data}/clean/qa{k}_train.json`` for ``--k`` (default 1-5); rows are shuffled
(``--shuffle-seed``, -1 keeps file order) so that ``data.max_train_examples`` or an early stop sees every k.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from ..errors import ConfigError, DataError
from ..io_utils import atomic_write_text
from . import prompts
from .harness import default_data_dir, load_files


def sft_row(example: dict) -> dict:
    return {"prompt": prompts.example_prompt(example), "completion": example["label"], "k_hop": example.get("k_hop")}


def default_train_files(data_dir=None, ks=range(1, 6), kind: str = "clean", split: str = "train") -> list[Path]:
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    files = [data_dir / kind / f"qa{k}_{split}.json" for k in ks]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{missing[0]}: file not found" + (f" (and {len(missing) - 1} more)" if len(missing) > 1
                                                           else "") + "; pass --files or --data DIR")
    return files


def export_sft(out, files, *, limit: int = 0, ks=None, shuffle_seed: int = 0) -> dict:
    """Write the JSONL file; returns {"out", "n", "per_k", "labels"}."""
    if limit < 0:
        raise ConfigError(f"--limit {limit}: must be >= 0")
    out = Path(out)
    if out.suffix.lower() not in (".jsonl", ".json"):
        raise ConfigError(f"--out {out}: expected a .jsonl file (JSON Lines, read by posttrain train)")
    rows = [sft_row(ex) for _, examples in load_files(files, limit, ks) for ex in examples]
    if shuffle_seed >= 0:
        random.Random(shuffle_seed).shuffle(rows)
    atomic_write_text(out, "".join(json.dumps(row) + "\n" for row in rows))
    return {"out": str(out), "n": len(rows), "per_k": dict(sorted(Counter(r["k_hop"] for r in rows).items(),
                                                                  key=lambda kv: (kv[0] is None, kv[0] or 0))),
            "labels": dict(sorted(Counter(r["completion"] for r in rows).items()))}
