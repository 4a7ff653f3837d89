"""``posttrain quickstart``: the main job on the embedded default model, end to end and offline.

Fine-tunes SmolLM2-135M-Instruct (bundled GGUF) on a slice of AlpaGasus Dolly-3k (bundled, CC BY-SA 3.0) twice,
with the IT loss (output tokens only) and the IM loss (instruction + output, template masked; Shi et al. 2024),
from the same initial weights, data order and hyper-parameters; then prints the held-out loss on output tokens
of both runs and one sample generation from each.
"""

from __future__ import annotations

import importlib.resources
import time
from pathlib import Path

from .config import load_config
from .engine import train
from .generation import generate
from .models import load_model_and_tokenizer


def bundled_data() -> Path:
    return Path(str(importlib.resources.files("posttrain") / "resources" / "dolly3k_slice.jsonl"))


QUICKSTART_PROMPT = "Give me three tips for staying focused while studying."


def quickstart_configs(out_dir: str, steps: int, data_file: str | None, model: str, extra: list[str]):
    data_file = data_file or str(bundled_data())
    common = [
        f"model.name_or_path={model}",
        f"data.train_file={data_file}",
        "data.eval_size=48",
        "data.max_length=256",
        "data.overlong=drop",  # IT and IM see exactly the same examples
        "train.eval_on_start=true",
        "train.per_device_batch_size=8",
        f"train.max_steps={steps}",
        "train.learning_rate=5e-5",
        "train.warmup_ratio=0.1",
        f"train.logging_steps={max(1, steps // 10)}",
        "train.packing=true",
    ]
    runs = {}
    for name, loss in (("IT", ["loss.mode=output_only"]), ("IM", ["loss.mode=instruction_and_output"])):
        runs[name] = load_config(None, common + loss + [f"train.output_dir={Path(out_dir) / name}"] + extra)
    return runs


def run_quickstart(out_dir: str = "runs/quickstart", steps: int = 20, data_file: str | None = None,
                   model: str = "default", extra: list[str] | None = None, prompt: str = QUICKSTART_PROMPT) -> dict:
    configs = quickstart_configs(out_dir, steps, data_file, model, extra or [])
    results = {}
    start = time.time()
    baseline = None
    for name, cfg in configs.items():
        print(f"\n=== {name}: loss.mode={cfg.loss.mode} -> {cfg.train.output_dir} ===", flush=True)
        model_obj, tokenizer = load_model_and_tokenizer(cfg.model, for_training=True)
        final = train(cfg, overwrite=True, model=model_obj, tokenizer=tokenizer)  # a rerun replaces the demo's runs
        trainer = final.pop("trainer")
        trained = trainer.model.eval()
        answer = generate(trained, tokenizer, [prompt], max_new_tokens=96)[0]
        history = trainer.state.log_history
        baseline = next((h["eval_output_loss"] for h in history if "eval_output_loss" in h and h.get("step") == 0), baseline)
        results[name] = {"eval_output_loss": final.get("eval_output_loss"), "train_loss": final["train_loss"],
                         "sample": answer, "run_dir": final["run_dir"]}
    print("\n" + "=" * 72)
    print(f"quickstart: {steps} steps each on {configs['IT'].data.train_file}")
    print(f"{'method':<8}{'train loss':>12}{'held-out output loss':>24}")
    if baseline is not None:
        print(f"{'start':<8}{'':>12}{baseline:>24.4f}")
    for name, r in results.items():
        print(f"{name:<8}{r['train_loss']:>12.4f}{r['eval_output_loss']:>24.4f}")
    print("(train loss is over each run's own trained tokens; held-out loss is on output tokens for both)")
    for name, r in results.items():
        print(f"\n[{name}] {prompt}\n{r['sample']}")
    print(f"\ntotal time {time.time() - start:.0f} s; run directories under {out_dir}")
    return results
