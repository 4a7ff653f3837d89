"""StepGame evaluation of language models (``posttrain stepgame eval``): data, prompts, scoring, summaries.

StepGame (Shi, Zhang, Lipani, "StepGame: A New Benchmark for Robust Multi-Hop Spatial Reasoning in Texts",
AAAI 2022) reports accuracy per number of hops k, on clean stories and on stories with distracting sentences.
This harness computes, for any model ``load_for_inference`` accepts, per file and per k:

* ``--mode mc``: accuracy of argmax_w log p(w | prompt) over the 9 answer words (``prompts.ANSWER_WORDS``), and
  ``acc_norm`` (the log-probability divided by the word's length in characters, as lm-evaluation-harness);
* ``--mode gen``: accuracy of the greedy answer after ``prompts.normalise_answer``; unparseable answers count as
  wrong and are also counted apart.

All scoring goes through ``scoring.scorer`` (one context pass per story, logits only where needed). Prompts are
zero- or few-shot (``--shots N``: examples drawn with ``--seed`` from training files, never from an evaluated
file), chat-formatted when the model has a chat template (``--chat auto``). Outputs in ``--out``: results.json,
results.md (the table, also printed), accuracy_vs_k.png and predictions.jsonl (``stepgame/report.py``); the command
is ``cli/stepgame.py``.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections import defaultdict
from pathlib import Path

from ..errors import ConfigError, DataError
from . import prompts
from .formats import read_examples
from ..data.chat import NAMED_TEMPLATES, resolve_template
from ..scoring.scorer import choose, greedy_generate, supports_prefix_cache

MODES = ("mc", "gen")
CHAT_MODES = ("auto", "on", "off")
CHANCE = 1 / 9


def default_data_dir() -> Path:
    """``$POSTTRAIN_STEPGAME_DATA``, else the shared data folder beside the working directory or the repository."""
    env = os.environ.get("POSTTRAIN_STEPGAME_DATA")
    if env:
        return Path(env)
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        candidate = base / ".." / "shared" / "data" / "stepgame"
        if candidate.is_dir():
            return candidate.resolve()
    return Path("../shared/data/stepgame")


def default_files(data_dir=None, ks=range(1, 11), split: str = "valid", kinds=("clean", "noise")) -> list[Path]:
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    files = [data_dir / kind / f"qa{k}_{split}.json" for kind in kinds for k in ks]
    found = [f for f in files if f.is_file()]
    if not found:
        raise DataError(f"{data_dir}: no StepGame {split} files (expected {{clean,noise}}/qa{{k}}_{split}.json); "
                        "pass --files or --data DIR")
    return found


def kind_of(path) -> str:
    """'clean' or 'noise' when a folder of the path says so (else the parent folder's name), with ``-SPLIT`` added
    when the file is ``qa{k}_SPLIT.*`` for a split other than valid: the released ``noise/qa7_valid.json`` is
    'noise', a generated ``noise/qa7_test.json`` is 'noise-test', so the two are reported (and plotted) apart."""
    path = Path(path)
    parts = [p.lower() for p in path.parts[:-1]]
    kind = next((k for k in ("noise", "clean") if k in parts), path.parent.name or "file")
    match = re.fullmatch(r"qa\d+_([A-Za-z0-9]+)", path.stem)
    if match and match.group(1).lower() != "valid":
        kind += "-" + match.group(1).lower()
    return kind


def load_files(files, limit: int = 0, ks=None) -> list[tuple[Path, list[dict]]]:
    """Read each file (first ``limit`` examples when > 0; only hops in ``ks`` when given)."""
    if not files:
        raise ConfigError("no StepGame files to evaluate")
    out = []
    for name in files:
        examples = read_examples(name)
        if ks is not None:
            examples = [ex for ex in examples if ex.get("k_hop") in ks]
        if limit > 0:
            examples = examples[:limit]
        if not examples:
            raise DataError(f"{name}: no examples to evaluate" + (f" with k in {sorted(ks)}" if ks else ""))
        out.append((Path(name), examples))
    return out


def load_shot_pool(files, evaluated) -> list[dict]:
    evaluated = {Path(f).resolve() for f in evaluated}
    pool = []
    for name in files:
        if Path(name).resolve() in evaluated:
            raise ConfigError(f"--shots-from {name}: few-shot examples must not come from an evaluated file")
        pool += read_examples(name)
    if not pool:
        raise ConfigError("--shots: the few-shot pool is empty (pass --shots-from TRAIN_FILES)")
    return pool


def default_shot_files(data_dir=None) -> list[Path]:
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    return sorted((data_dir / "clean").glob("qa*_train.json"), key=lambda p: int(p.name[2:].split("_")[0]))


def resolve_chat(tokenizer, chat: str, template_name: str = "tokenizer"):
    """False (plain text), None (the tokenizer's template) or Jinja source, for ``--chat auto|on|off``."""
    if chat not in CHAT_MODES:
        raise ConfigError(f"--chat {chat!r}: expected one of {', '.join(CHAT_MODES)}")
    if chat == "off":
        return False
    if chat == "auto" and template_name == "tokenizer" and not getattr(tokenizer, "chat_template", None):
        return False
    return resolve_template(tokenizer, template_name)


def _adds_bos(tokenizer) -> bool:
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos]


def encode_context(tokenizer, text: str, chat: bool) -> list[int]:
    """Chat text carries its own special tokens; plain text gets BOS iff the tokenizer adds one by default."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not chat and _adds_bos(tokenizer):
        ids = [tokenizer.bos_token_id] + ids
    return ids or [tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id]


def encode_choices(tokenizer, context: str, choices) -> list[list[int]]:
    """Ids of each choice after ``context`` as lm-eval splits them: encode(context + choice) minus encode(context)."""
    head = tokenizer(context, add_special_tokens=False)["input_ids"]
    out = []
    for choice in choices:
        whole = tokenizer(context + choice, add_special_tokens=False)["input_ids"]
        ok = whole[: len(head)] == head and len(whole) > len(head)
        out.append(whole[len(head):] if ok else tokenizer(choice, add_special_tokens=False)["input_ids"])
    return out


def _newline_ids(tokenizer) -> list[int]:
    vocab = tokenizer.get_vocab()
    return [i for t, i in vocab.items() if "\n" in tokenizer.convert_tokens_to_string([t])]


def answer_delimiter(tokenizer, template) -> str:
    """Chat mode: the text a template puts between the generation prompt and the assistant's answer (``""`` for
    ChatML/SmolLM2 and Tulu, ``"\\n"`` for the ``plain`` template), found by rendering a probe conversation. This is
    what training on ``{"prompt": ..., "completion": label}`` rows (``posttrain stepgame export-sft``) puts there."""
    user = [{"role": "user", "content": "PROMPT"}]
    try:
        context = tokenizer.apply_chat_template(user, chat_template=template, tokenize=False,
                                                add_generation_prompt=True)
        full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": "ANSWER"}],
                                             chat_template=template, tokenize=False)
    except Exception:  # noqa: BLE001 - a template that cannot render the probe: assume no delimiter
        return ""
    rest = full[len(context):] if full.startswith(context) else ""
    cut = rest.find("ANSWER")
    return rest[:cut] if cut >= 0 and not rest[:cut].strip() else ""


def validate_settings(*, mode="mc", shots=0, limit=0, batch_size=8, max_new_tokens=24, chat="auto",
                      chat_template=None) -> None:
    """One-line ConfigErrors for bad settings, before any model is loaded."""
    if mode not in MODES:
        raise ConfigError(f"--mode {mode!r}: expected one of {', '.join(MODES)}")
    if isinstance(chat, str) and chat not in CHAT_MODES:
        raise ConfigError(f"--chat {chat!r}: expected one of {', '.join(CHAT_MODES)}")
    for name, value, low in (("--shots", shots, 0), ("--limit", limit, 0), ("--batch-size", batch_size, 1),
                             ("--max-new-tokens", max_new_tokens, 1)):
        if value < low:
            raise ConfigError(f"{name} {value}: must be >= {low}")
    if chat_template and chat_template != "tokenizer" and chat_template not in NAMED_TEMPLATES and \
            "{%" not in chat_template and "{{" not in chat_template:
        raise ConfigError(f"--chat-template {chat_template!r}: expected tokenizer, "
                          f"{', '.join(sorted(NAMED_TEMPLATES))} or Jinja source")


def _check_offset_length(model, lengths: list[int]) -> None:
    """A DePT model's offset covers s real tokens: refuse (one line) inputs it cannot take."""
    s = getattr(model, "max_length", 0) if getattr(model, "rank", 0) else 0
    if s and lengths and max(lengths) > s:
        raise ConfigError(f"the longest StepGame input has {max(lengths)} tokens but the DePT model's offset length "
                          f"is s={s}; evaluate shorter stories (--k, --files) or train with adapter.dept_max_length "
                          f">= {max(lengths)}")


def evaluate(model, tokenizer, files, *, mode: str = "mc", shots: int = 0, chat="auto", template_name="tokenizer",
             limit: int = 0, ks=None, seed: int = 0, shots_from=None, pool=None, batch_size: int = 8,
             max_new_tokens: int = 24, progress: bool = True, model_name: str = "") -> dict:
    """Evaluate on StepGame files; returns the results dict (with per-example ``predictions``).

    ``files`` are paths, or what ``load_files`` returned (then ``limit``/``ks`` were applied already); ``pool`` is an
    already loaded few-shot pool (else it is read from ``shots_from``, default the clean training files).
    """
    validate_settings(mode=mode, shots=shots, limit=limit, batch_size=batch_size, max_new_tokens=max_new_tokens,
                      chat=chat)
    if ks is not None and any(not 1 <= k <= 10 for k in ks):
        raise ConfigError(f"--k {sorted(ks)}: hops must be between 1 and 10")
    loaded = bool(files) and isinstance(files[0], tuple)
    data = list(files) if loaded else load_files(files, limit, ks)
    shot_files = [Path(f) for f in (shots_from or default_shot_files())] if shots and pool is None else \
        [Path(f) for f in shots_from or []]
    if shots and pool is None:
        pool = load_shot_pool(shot_files, [p for p, _ in data])
    pool = pool or []
    template = resolve_chat(tokenizer, chat, template_name) if isinstance(chat, str) else chat
    is_chat = template is not False
    delimiter = answer_delimiter(tokenizer, template) if is_chat else prompts.TARGET_DELIMITER
    words, texts = list(prompts.ANSWER_WORDS), prompts.choice_texts(is_chat, delimiter)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if mode == "gen":  # stop at end of turn; plain text also stops at a newline
        stop = [] if is_chat else _newline_ids(tokenizer)
        eos = {tokenizer.eos_token_id, getattr(getattr(model, "config", None), "eos_token_id", None)}
        stop += [i for i in eos if isinstance(i, int)]
    started = time.perf_counter()
    items, context_ids, choice_ids = [], [], []  # all files at once: one length-sorted batching
    for path, examples in data:
        for i, ex in enumerate(examples):
            rng = random.Random(f"{seed}:{path.name}:{kind_of(path)}:{i}")
            text = prompts.build_context(ex, prompts.sample_shots(pool, shots, rng, ex), tokenizer=tokenizer,
                                         chat_template=template)
            items.append({"file": str(path), "kind": kind_of(path), "k": ex.get("k_hop"), "id": ex["id"],
                          "label": ex["label"]})
            context_ids.append(encode_context(tokenizer, text, is_chat))
            if mode == "mc":
                choice_ids.append(encode_choices(tokenizer, text, texts))
    if mode == "mc":
        _check_offset_length(model, [len(c) + max(map(len, o)) - 1 for c, o in zip(context_ids, choice_ids)])
    else:
        _check_offset_length(model, [len(c) + max_new_tokens - 1 for c in context_ids])
    desc = f"StepGame {mode} ({len(data)} files)" if progress else False
    if mode == "mc":
        scores = choose(model, context_ids, choice_ids, batch_size=batch_size, pad_token_id=pad, progress=desc)
        for item, row in zip(items, scores):
            lps = [s.logprob for s in row]
            item["prediction"] = words[max(range(len(words)), key=lambda j: lps[j])]
            item["prediction_norm"] = words[max(range(len(words)), key=lambda j: lps[j] / len(words[j]))]
            item["logprobs"] = [round(x, 4) for x in lps]
    else:
        outs = greedy_generate(model, context_ids, max_new_tokens=max_new_tokens, stop_ids=stop, pad_token_id=pad,
                               batch_size=batch_size, progress=desc)
        for item, new in zip(items, outs):
            text = tokenizer.decode(new, skip_special_tokens=True)
            answer = text if is_chat else next((ln for ln in text.splitlines() if ln.strip()), "")
            item.update(generation=text, prediction=prompts.normalise_answer(answer))
    predictions, n_total = items, len(items)
    seconds = time.perf_counter() - started
    settings = {
        "model": model_name, "mode": mode, "shots": shots, "seed": seed, "chat": is_chat,
        "chat_template": None if not is_chat else (template_name if template is not None else "tokenizer"),
        "prompt_template": prompts.PROMPT_TEMPLATE, "answer_words": words, "scored_continuations": texts,
        "limit_per_file": limit, "k": sorted(ks) if ks else None, "batch_size": batch_size,
        "shots_from": [str(f) for f in shot_files], "max_new_tokens": max_new_tokens if mode == "gen" else None,
        "scorer": "prefix-cache" if supports_prefix_cache(model) else "full-sequence",
        "normalisation": "prompts.normalise_answer (exactly one distinct label mentioned)" if mode == "gen" else None,
    }
    return {"settings": settings, **summarise(predictions, mode), "seconds": round(seconds, 2),
            "examples_per_second": round(n_total / seconds, 2) if seconds else None, "predictions": predictions}


def summarise(predictions: list[dict], mode: str) -> dict:
    """Per (file, k) rows, per (kind, k) accuracy and the overall accuracy."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for p in predictions:
        groups[(p["file"], p["kind"], p["k"])].append(p)
    rows = []
    for (file, kind, k), items in groups.items():
        row = {"file": file, "kind": kind, "k": k, "n": len(items),
               "correct": sum(p["prediction"] == p["label"] for p in items)}
        row["accuracy"] = row["correct"] / row["n"]
        if mode == "mc":
            row["acc_norm"] = sum(p["prediction_norm"] == p["label"] for p in items) / row["n"]
        else:
            row["unparseable"] = sum(p["prediction"] is None for p in items)
        rows.append(row)
    by_kind: dict[str, dict] = defaultdict(dict)
    for kind in sorted({r["kind"] for r in rows}):
        for k in sorted({r["k"] for r in rows if r["kind"] == kind}, key=lambda x: (x is None, x)):
            sel = [r for r in rows if r["kind"] == kind and r["k"] == k]
            n = sum(r["n"] for r in sel)
            by_kind[kind][str(k)] = {"n": n, "accuracy": sum(r["correct"] for r in sel) / n}
    n = len(predictions)
    overall = {"n": n, "accuracy": sum(p["prediction"] == p["label"] for p in predictions) / n if n else 0.0}
    if mode == "gen":
        overall["unparseable"] = sum(p["prediction"] is None for p in predictions)
    return {"files": rows, "by_kind": dict(by_kind), "overall": overall}


def merge_lora(model):
    """A PEFT LoRA model (a LoRA run directory) with its adapter merged into the weights: the same function, one
    matmul per layer instead of three. Other models are returned unchanged."""
    config = getattr(model, "active_peft_config", None)
    if config is None or getattr(config, "is_prompt_learning", False) or not hasattr(model, "merge_and_unload"):
        return model
    return model.merge_and_unload().eval()
