"""The bad-input catalogue: every case builds a bad input in a temporary folder, runs ``posttrain.cli.main`` in
process and checks the contract of README.md: exit status 2, exactly one line on stderr (progress bars aside),
starting with ``error:``, naming the file/line/field and what was expected. Nothing may be half-written: a rejected training run leaves no
``config.yaml`` or checkpoint behind.

docs/bad_inputs.md is generated from the same ``CASES`` (``python benchmarks/bad_inputs_table.py``) and each test
checks that the documented message is the one the code prints today, so the catalogue cannot drift.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md"
TABLE_CMD = "python benchmarks/bad_inputs_table.py"

CHAT_ROW = {"messages": [{"role": "user", "content": "What is the capital of France?"},
                         {"role": "assistant", "content": "Paris."}]}
ALPACA_ROW = {"instruction": "Translate to French: good morning.", "input": "", "output": "Bonjour."}
STORY = ["A is to the left of B.", "C is above B."]
QUESTION = "What is the relation of the agent A to the agent C?"


# ---------------------------------------------------------------------------------------------------------------
# the environment a case builds its input in


@dataclass
class Env:
    tmp: Path
    model: Path  # a tiny random Llama + tokenizer saved with save_pretrained (safetensors)

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    def jsonl(self, name: str, rows: list) -> Path:
        return self.write(name, "".join(json.dumps(r) + "\n" for r in rows))

    def recipe(self, name: str = "recipe.yaml", **sections) -> Path:
        """A valid tiny training recipe (1 step on 4 chat rows), with sections overriding its keys."""
        train_file = self.jsonl("train.jsonl", [CHAT_ROW] * 4)
        body = {
            "model": {"name_or_path": str(self.model)},
            "data": {"train_file": str(train_file), "max_length": 64},
            "train": {"max_steps": 1, "per_device_batch_size": 2, "progress": False, "output_dir": str(self.run)},
        }
        for section, values in sections.items():
            body.setdefault(section, {}).update(values)
        import yaml

        return self.write(name, yaml.safe_dump(body, sort_keys=False))

    @property
    def run(self) -> Path:
        return self.tmp / "run"

    def train(self, *overrides: str) -> list[str]:
        return ["train", str(self.recipe()), *overrides]

    def train_on(self, name: str, content: str | bytes, *overrides: str) -> list[str]:
        return self.train(f"data.train_file={self.write(name, content)}", *overrides)

    def task(self, name: str = "task.yaml", *, data_csv: str | None = None, **changes) -> Path:
        """A valid user task YAML (reviews, neg/pos) with a CSV train file, ``changes`` replacing its keys."""
        import yaml

        body = {
            "name": "reviews", "kind": "single", "labels": ["neg", "pos"],
            "verbalizer": {"neg": "terrible", "pos": "great"}, "template": "{text_a} It was {mask} .",
            "text_to_text": "sentence: {text_a}", "metrics": ["accuracy"],
            "data": {"files": {"dir": "data", "files": {"train": "train.csv"}, "format": "csv",
                               "columns": {"text_a": "review", "label": "sentiment"}}},
        }
        for key, value in changes.items():
            if value is None:
                body.pop(key, None)
            else:
                body[key] = value
        self.write("data/train.csv", data_csv or "review,sentiment\na fine film,pos\na dull film,neg\n")
        return self.write(name, yaml.safe_dump(body, sort_keys=False))

    def stepgame(self, name: str, record: dict) -> Path:
        return self.write(name, json.dumps({"0": record}))

    def soft_prompt_run(self) -> Path:
        """A finished prompt-tuning/DePT run directory: config.yaml + final/ with a soft-prompt adapter."""
        from posttrain.config import load_config, write_config
        from posttrain.methods.soft_prompt import SoftPromptModel
        from posttrain.methods.soft_prompt_io import save_soft_prompt
        from transformers import AutoModelForCausalLM

        run = self.tmp / "dept-run"
        write_config(load_config(None, [f"model.name_or_path={self.model}"]), run / "config.yaml")
        base = AutoModelForCausalLM.from_pretrained(self.model)
        save_soft_prompt(SoftPromptModel(base, 4, rank=2, max_length=16), run / "final")
        return run

    def generate(self, model: Path | str) -> list[str]:
        return ["generate", "--model", str(model), "--prompt", "Hello?", "--max-new-tokens", "1"]


def _soft_prompt_tensors(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "final" / "soft_prompt.safetensors"))


def _save_tensors(run: Path, tensors: dict) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(run / "final" / "soft_prompt.safetensors"))


# ---------------------------------------------------------------------------------------------------------------
# the cases


@dataclass
class Case:
    id: str
    area: str
    input: str  # what is wrong, for the table
    build: Callable[[Env], list[str]]  # writes the input under env.tmp and returns the CLI arguments
    expect: tuple[str, ...]  # substrings of the error line: the file/line/field and what was expected
    nothing_written: bool = False  # a rejected `train`: the run directory must not get config.yaml/checkpoints
    defect: str = ""  # a known defect: the case is xfail (strict) until it is fixed
    extra: dict = field(default_factory=dict)


def _overlong(env: Env) -> list[str]:
    rows = [{"messages": [{"role": "user", "content": "Write a poem about the sea. " * 20},
                          {"role": "assistant", "content": "The sea is wide and blue. " * 20}]}] * 3
    return env.train(f"data.train_file={env.jsonl('long.jsonl', rows)}", "data.overlong=drop")


def _copied_model(env: Env, name: str) -> Path:
    import shutil

    folder = env.tmp / name
    shutil.copytree(env.model, folder)
    return folder


def _truncated_weights(env: Env) -> list[str]:
    folder = _copied_model(env, "cut-model")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return env.train(f"model.name_or_path={folder}")


def _config_weights_mismatch(env: Env) -> list[str]:
    folder = _copied_model(env, "wide-model")
    config = json.loads((folder / "config.json").read_text())
    config["intermediate_size"] = config["intermediate_size"] * 2
    (folder / "config.json").write_text(json.dumps(config))
    return env.train(f"model.name_or_path={folder}")


def _pickle_only_dir(env: Env) -> list[str]:
    import torch

    folder = env.tmp / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text((env.model / "config.json").read_text())
    torch.save({"w": torch.zeros(1)}, folder / "pytorch_model.bin")
    return env.train(f"model.name_or_path={folder}")


def _soft_prompt_wrong_shape(env: Env) -> list[str]:
    import torch

    run = env.soft_prompt_run()
    _save_tensors(run, {**_soft_prompt_tensors(run), "prompt": torch.zeros(3, 32)})
    return env.generate(run)


def _soft_prompt_missing_tensor(env: Env) -> list[str]:
    run = env.soft_prompt_run()
    _save_tensors(run, {k: v for k, v in _soft_prompt_tensors(run).items() if k != "offset_b"})
    return env.generate(run)


def _soft_prompt_pickle(env: Env) -> list[str]:
    import torch

    run = env.soft_prompt_run()
    torch.save(_soft_prompt_tensors(run), run / "final" / "soft_prompt.bin")
    (run / "final" / "soft_prompt.safetensors").unlink()
    return env.generate(run)


def _soft_prompt_bad_config(env: Env) -> list[str]:
    run = env.soft_prompt_run()
    path = run / "final" / "soft_prompt_config.json"
    cfg = json.loads(path.read_text())
    del cfg["dept_rank"]
    path.write_text(json.dumps(cfg))
    return env.generate(run)


def _soft_prompt_truncated(env: Env) -> list[str]:
    run = env.soft_prompt_run()
    path = run / "final" / "soft_prompt.safetensors"
    path.write_bytes(path.read_bytes()[:40])
    return env.generate(run)


def _with_line(path: Path, after: str, line: str) -> Path:
    """``path`` with ``line`` added under the line ``after`` (YAML text as a user types it)."""
    path.write_text(path.read_text().replace(after + "\n", f"{after}\n{line}\n", 1))
    return path


def _finished_run(env: Env) -> list[str]:
    from posttrain.cli import main

    args = env.train()
    assert main(args) == 0  # a finished run in env.run; the same command again must not replace it
    return args


def _existing_checkpoints(env: Env) -> list[str]:
    (env.run / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    return env.train()


def _family_model(env: Env, arch: str) -> Path:
    """A tiny random model of another family (tests/tiny_models.py) saved under env.tmp."""
    from tiny_models import save_tiny

    return save_tiny(arch, env.tmp / arch)


def _stepgame_babi_numbering(env: Env) -> list[str]:
    path = env.write("qa2_bad.txt", f"1 {STORY[0]}\n3 {STORY[1]}\n4 {QUESTION}\tleft\t1\n")
    return ["stepgame", "solve", str(path)]


CASES: list[Case] = [
    # -- instruction data files ---------------------------------------------------------------------------------
    Case("data-malformed-json", "instruction data", "`bad.jsonl` line 2 is `{\"messages\": [` (cut short)",
         lambda e: e.train_on("bad.jsonl", json.dumps(CHAT_ROW) + '\n{"messages": [\n'),
         ("bad.jsonl:2:", "malformed JSON"), nothing_written=True),
    Case("data-missing-field", "instruction data", "alpaca row 2 has no `output`",
         lambda e: e.train(f"data.train_file={e.jsonl('a.jsonl', [ALPACA_ROW, {'instruction': 'Hi', 'input': ''}])}"),
         ("a.jsonl:2:", "missing field 'output'"), nothing_written=True),
    Case("data-wrong-type", "instruction data", "alpaca row 2 has `\"output\": 5` (a number)",
         lambda e: e.train(f"data.train_file={e.jsonl('a.jsonl', [ALPACA_ROW, {**ALPACA_ROW, 'output': 5}])}"),
         ("a.jsonl:2:", "'output'", "must be a string"), nothing_written=True),
    Case("data-content-not-string", "instruction data", "a message whose `content` is a list",
         lambda e: e.train(f"data.train_file={e.jsonl('m.jsonl', [{'messages': [{'role': 'user', 'content': ['Hi']}, {'role': 'assistant', 'content': 'Hello'}]}])}"),
         ("m.jsonl:1:", "messages[0].content must be a string"), nothing_written=True),
    Case("data-bad-role", "instruction data", "a message with role `bot`",
         lambda e: e.train(f"data.train_file={e.jsonl('m.jsonl', [{'messages': [{'role': 'user', 'content': 'Hi'}, {'role': 'bot', 'content': 'Hello'}]}])}"),
         ("m.jsonl:1:", "messages[1].role must be one of system, user, assistant", "'bot'"), nothing_written=True),
    Case("data-no-assistant", "instruction data", "a conversation without an assistant turn",
         lambda e: e.train(f"data.train_file={e.jsonl('m.jsonl', [CHAT_ROW, {'messages': [{'role': 'user', 'content': 'Hi'}]}])}"),
         ("m.jsonl:2:", "no assistant message"), nothing_written=True),
    Case("data-unknown-columns", "instruction data", "rows with keys `question`/`answer` only",
         lambda e: e.train(f"data.train_file={e.jsonl('q.jsonl', [{'question': 'Hi', 'answer': 'Hello'}])}"),
         ("q.jsonl:1:", "cannot tell the row format", "expected messages", "data.format"), nothing_written=True),
    Case("data-not-object", "instruction data", "`l.jsonl` line 2 is a JSON list, not an object",
         lambda e: e.train_on("l.jsonl", json.dumps(CHAT_ROW) + "\n[1, 2]\n"),
         ("l.jsonl:2:", "expected a JSON object, got list"), nothing_written=True),
    Case("data-empty-file", "instruction data", "an empty `empty.jsonl`",
         lambda e: e.train_on("empty.jsonl", ""),
         ("empty.jsonl", "file is empty"), nothing_written=True),
    Case("data-blank-file", "instruction data", "a `blank.jsonl` of blank lines",
         lambda e: e.train_on("blank.jsonl", "\n \n\n"),
         ("blank.jsonl", "no rows"), nothing_written=True),
    Case("data-non-utf8", "instruction data", "`latin.jsonl` line 2 holds the byte 0xff",
         lambda e: e.train_on("latin.jsonl", json.dumps(CHAT_ROW).encode() + b'\n{"text": "caf\xff"}\n'),
         ("latin.jsonl:2:", "not valid UTF-8", "0xff at column 14"), nothing_written=True),
    Case("data-unsupported-suffix", "instruction data", "a `.txt` training file",
         lambda e: e.train_on("train.txt", "hello\n"),
         ("train.txt", "unsupported file type '.txt'", "expected .jsonl, .json, .csv or .parquet"),
         nothing_written=True),
    Case("data-missing-file", "instruction data", "`data.train_file` names no file",
         lambda e: e.train(f"data.train_file={e.tmp / 'nope.jsonl'}"),
         ("nope.jsonl", "data file not found"), nothing_written=True),
    Case("data-csv-missing-field", "instruction data", "CSV with columns instruction,output whose row 2 lacks output",
         lambda e: e.train_on("a.csv", "instruction,output\nSay hi,Hello\nSay bye,\n"),
         ("a.csv:3:", "'output'"), nothing_written=True),
    Case("data-csv-ragged-row", "instruction data", "CSV row 2 has three fields under a two-column header",
         lambda e: e.train_on("r.csv", "prompt,completion\nSay hi,Hello\nSay bye,Bye,extra\n"),
         ("r.csv:3:", "3 comma-separated fields but the header has 2"), nothing_written=True),
    Case("data-csv-open-quote", "instruction data", "CSV whose last cell opens a quote that never closes",
         lambda e: e.train_on("q.csv", 'prompt,completion\nSay hi,"Hello\n'),
         ("q.csv:", "malformed CSV", "unexpected end of data"), nothing_written=True),
    Case("data-json-array-row", "instruction data", "a `.json` array whose second element is `5`",
         lambda e: e.train_on("arr.json", json.dumps([CHAT_ROW, 5])),
         ("arr.json: row 2:", "expected an object, got int"), nothing_written=True),
    Case("data-surrogate", "instruction data", "a `text` with the escape `\\ud800` (half a surrogate pair)",
         lambda e: e.train_on("s.jsonl", '{"text": "caf\\ud800"}\n'),
         ("s.jsonl:1:", "field 'text'", "unpaired surrogate", "expected valid Unicode"), nothing_written=True),
    Case("data-overlong-drop-all", "instruction data",
         "every example is longer than `data.max_length` and `data.overlong=drop`", _overlong,
         ("long.jsonl", "no example left", "3 dropped as over-long", "data.max_length"), nothing_written=True),
    Case("data-eval-size-too-big", "instruction data", "`data.eval_size=10` on a 4-row file",
         lambda e: e.train("data.eval_size=10"),
         ("data.eval_size", "leaves no training rows", "4 in"), nothing_written=True),
    Case("data-unknown-chat-template", "instruction data", "`data.chat_template=vicuna`",
         lambda e: e.train("data.chat_template=vicuna"),
         ("data.chat_template", "'vicuna'", "expected 'tokenizer'"), nothing_written=True),
    # -- task declarations and task data ------------------------------------------------------------------------
    Case("task-unknown-label", "task data", "`train.csv` row 2 has label `meh` (labels: neg, pos)",
         lambda e: ["tasks", "show", str(e.task(data_csv="review,sentiment\na fine film,pos\nso so,meh\n"))],
         ("train.csv:3:", "unknown label \"meh\"", "expected one of neg, pos")),
    Case("task-template-no-mask", "task YAML", "`template: \"{text_a} It was great .\"` (no `{mask}`)",
         lambda e: ["tasks", "show", str(e.task(template="{text_a} It was great ."))],
         ("task.yaml", "template", "needs exactly one {mask}")),
    Case("task-template-unknown-field", "task YAML", "`template: \"{text_a} {sentence} It was {mask} .\"`",
         lambda e: ["tasks", "show", str(e.task(template="{text_a} {sentence} It was {mask} ."))],
         ("task.yaml", "template", "{sentence} is not a field", "fields: text_a")),
    Case("task-verbalizer-same-word", "task YAML", "`verbalizer: {neg: fine, pos: fine}` (one word, two labels)",
         lambda e: ["tasks", "show", str(e.task(verbalizer={"neg": "fine", "pos": "fine"}))],
         ("task.yaml", "verbalizer", "labels 'neg' and 'pos' have the same word 'fine'")),
    Case("task-verbalizer-missing-label", "task YAML", "`verbalizer: {neg: terrible}` (no word for `pos`)",
         lambda e: ["tasks", "show", str(e.task(verbalizer={"neg": "terrible"}))],
         ("task.yaml", "verbalizer", "label 'pos' has no label word")),
    Case("task-verbalizer-boolean", "task YAML", "`verbalizer: {neg: no, pos: yes}` (YAML reads booleans)",
         lambda e: ["tasks", "show", str(e.write("task.yaml", e.task().read_text().replace(
             "neg: terrible", "neg: no").replace("pos: great", "pos: yes")))],
         ("task.yaml", "verbalizer.neg", "boolean", "quote it")),
    Case("task-unknown-key", "task YAML", "`verbaliser:` (misspelt key)",
         lambda e: ["tasks", "show", str(e.write("task.yaml", e.task().read_text().replace("verbalizer:", "verbaliser:")))],
         ("task.yaml", "unknown key 'verbaliser'", "did you mean 'verbalizer'")),
    Case("task-unknown-column", "task YAML", "`columns: {text_a: text, ...}` but the CSV header is review,sentiment",
         lambda e: ["tasks", "show", str(e.task(data={"files": {"dir": "data", "files": {"train": "train.csv"},
                                                      "format": "csv", "columns": {"text_a": "text", "label": "sentiment"}}}))],
         ("train.csv:1:", "no column 'text'", "columns: review, sentiment")),
    Case("task-not-a-mapping", "task YAML", "a task file holding a YAML list",
         lambda e: ["tasks", "show", str(e.write("task.yaml", "- name: reviews\n"))],
         ("task.yaml", "expected a mapping of task keys")),
    Case("task-unknown-name", "task YAML", "`posttrain tasks show sst3`",
         lambda e: ["tasks", "show", "sst3"],
         ("unknown task 'sst3'", "did you mean 'SST-2'")),
    Case("task-extends-unknown", "task YAML", "`extends: RTEE` (no such built-in task)",
         lambda e: ["tasks", "show", str(e.write("task.yaml", "name: rte-causal\nextends: RTEE\n"))],
         ("task.yaml", "extends: unknown built-in task 'RTEE'", "did you mean 'RTE'")),
    Case("task-extends-no-name", "task YAML", "`extends: RTE` without a new `name`",
         lambda e: ["tasks", "show", str(e.write("task.yaml", "extends: RTE\ntemplate: '{text_a} {text_b} {mask}'\n"))],
         ("task.yaml", "name: required with extends")),
    # -- configs ------------------------------------------------------------------------------------------------
    Case("config-unknown-key", "config", "`train: {learnig_rate: 1e-4}` in the recipe",
         lambda e: ["train", str(e.recipe(train={"learnig_rate": 1e-4}))],
         ("recipe.yaml", "unknown key 'train.learnig_rate'", "did you mean 'train.learning_rate'"),
         nothing_written=True),
    Case("config-unknown-section", "config", "a `optimizer:` section",
         lambda e: ["train", str(e.recipe(optimizer={"lr": 1}))],
         ("recipe.yaml", "unknown section 'optimizer'"), nothing_written=True),
    Case("config-bad-value", "config", "`loss.mode=im`",
         lambda e: e.train("loss.mode=im"),
         ("loss.mode", "expected one of output_only, instruction_and_output, all_tokens", "'im'"),
         nothing_written=True),
    Case("config-yaml-boolean", "config", "`train: {mixed_precision: no}` (YAML reads `no` as false)",
         lambda e: ["train", str(_with_line(e.recipe(), "train:", "  mixed_precision: no"))],
         ("train.mixed_precision", "expected one of none, bf16, fp16, auto, got False", "quote the word"),
         nothing_written=True),
    Case("config-duplicate-key", "config", "`learning_rate` twice in the recipe's `train:` block",
         lambda e: ["train", str(_with_line(e.recipe(train={"learning_rate": 1e-4}), "train:", "  learning_rate: 2e-4"))],
         ("recipe.yaml:", "'learning_rate' is given twice (first at line"), nothing_written=True),
    Case("config-duplicate-section", "config", "a second `train:` section in the recipe",
         lambda e: ["train", str(e.write("recipe.yaml", e.recipe().read_text() + "train:\n  seed: 3\n"))],
         ("recipe.yaml:", "'train' is given twice (first at line"), nothing_written=True),
    Case("config-unknown-scheduler", "config", "`train.lr_scheduler=cosin` (no such transformers scheduler)",
         lambda e: e.train("train.lr_scheduler=cosin"),
         ("train.lr_scheduler", "(transformers' schedulers), got 'cosin'", "did you mean 'cosine'"),
         nothing_written=True),
    Case("config-scheduler-needs-kwargs", "config", "`train.lr_scheduler=warmup_stable_decay` (needs kwargs)",
         lambda e: e.train("train.lr_scheduler=warmup_stable_decay"),
         ("train.lr_scheduler", "needs num_decay_steps (lr_scheduler_kwargs), which posttrain does not pass"),
         nothing_written=True),
    Case("config-bad-type", "config", "`train.max_steps=ten`",
         lambda e: e.train("train.max_steps=ten"),
         ("train.max_steps", "expected an integer", "'ten'"), nothing_written=True),
    Case("config-out-of-range", "config", "`loss.prompt_loss_weight=1.5` with `loss.mode=instruction_and_output`",
         lambda e: e.train("loss.mode=instruction_and_output", "loss.prompt_loss_weight=1.5"),
         ("loss.prompt_loss_weight", "must be in [0, 1]", "1.5"), nothing_written=True),
    Case("config-conflict-eval", "config", "both `data.eval_file` and `data.eval_size`",
         lambda e: e.train(f"data.eval_file={e.tmp / 'train.jsonl'}", "data.eval_size=2"),
         ("data.eval_size", "either data.eval_file or data.eval_size"), nothing_written=True),
    Case("config-conflict-packing", "config", "`adapter.type=dept` with `train.packing=true`",
         lambda e: e.train("adapter.type=dept", "train.packing=true"),
         ("train.packing", "not supported with adapter.type=dept"), nothing_written=True),
    Case("config-conflict-task-data", "config", "both `task.name` and `data.train_file`",
         lambda e: e.train("task.name=sst2"),
         ("task.name", "either task.name or data.train_file"), nothing_written=True),
    Case("config-invalid-yaml", "config", "a recipe with `train: [max_steps: 1` (unclosed bracket)",
         lambda e: ["train", str(e.write("broken.yaml", "model:\n  name_or_path: default\ntrain: [max_steps: 1\n"))],
         ("broken.yaml:", "not valid YAML"), nothing_written=True),
    Case("config-missing-file", "config", "a recipe path that does not exist",
         lambda e: ["train", str(e.tmp / "nope.yaml")],
         ("nope.yaml", "config file not found"), nothing_written=True),
    Case("config-no-train-file", "config", "a recipe with neither `data.train_file` nor `task.name`",
         lambda e: ["train", str(e.recipe()), "data.train_file=null"],
         ("data.train_file", "required"), nothing_written=True),
    Case("config-kl-soft-prompt", "config", "`loss.kl_coef=1 adapter.type=prompt_tuning`",
         lambda e: e.train("loss.kl_coef=1", "adapter.type=prompt_tuning"),
         ("loss.kl_coef", "needs adapter.type full or lora", "prompt_tuning"), nothing_written=True),
    Case("config-neftune-negative", "config", "`train.neftune_alpha=-5`",
         lambda e: e.train("train.neftune_alpha=-5"),
         ("train.neftune_alpha", "must be >= 0"), nothing_written=True),
    # -- instruction-following evaluation files -------------------------------------------------------------------
    Case("eval-outputs-not-a-list", "evaluation", "`posttrain judge` on an outputs file holding one JSON object",
         lambda e: ["judge", str(e.write("a.json", json.dumps({"instruction": "Hi", "output": "Hello"}))),
                    "--references", str(e.write("b.json", json.dumps([{"instruction": "Hi", "output": "Yo"}]))),
                    "--out", str(e.tmp / "j")],
         ("a.json", "expected a JSON list of objects, got dict")),
    Case("eval-outputs-missing-output", "evaluation", "a references row without `output`",
         lambda e: ["judge", str(e.write("a.json", json.dumps([{"instruction": "Hi", "output": "Hello"}]))),
                    "--references", str(e.write("b.json", json.dumps([{"instruction": "Hi"}]))),
                    "--out", str(e.tmp / "j")],
         ("b.json", "row 0", "missing field 'output'")),
    Case("eval-outputs-null-output", "evaluation", "an outputs row with `\"output\": null`",
         lambda e: ["judge", str(e.write("a.json", json.dumps([{"instruction": "Hi", "output": None}]))),
                    "--references", str(e.write("b.json", json.dumps([{"instruction": "Hi", "output": "Yo"}]))),
                    "--out", str(e.tmp / "j")],
         ("a.json", "row 0", "field 'output' is null (expected a string)")),
    Case("eval-judge-no-reference", "evaluation", "outputs whose instruction is not among the references",
         lambda e: ["judge", str(e.write("a.json", json.dumps([{"instruction": "Hi", "output": "Hello"}]))),
                    "--references", str(e.write("b.json", json.dumps([{"instruction": "Bye", "output": "Yo"}]))),
                    "--out", str(e.tmp / "j")],
         ("b.json", "no reference output for the instruction of", "a.json row 0", "'Hi'")),
    Case("eval-judge-finished-out", "evaluation", "`posttrain judge --out DIR` where DIR holds a finished judgement",
         lambda e: ["judge", str(e.write("a.json", json.dumps([{"instruction": "Hi", "output": "Hello"}]))),
                    "--references", str(e.write("b.json", json.dumps([{"instruction": "Hi", "output": "Yo"}]))),
                    "--out", str(e.write("j/judge_summary.json", "{}").parent)],
         ("--out", "judge_summary.json holds a finished judgement", "pass --overwrite")),
    Case("eval-generate-set-finished-out", "evaluation", "`posttrain generate-set --out FILE` where FILE is finished",
         lambda e: ["generate-set", "--prompts", str(e.write("p.json", json.dumps([{"instruction": "Hi"}]))),
                    "--out", str(e.write("o.json", "[]"))],
         ("--out", "o.json holds a finished generation set", "pass --overwrite")),
    Case("eval-tasks-no-task", "evaluation", "`posttrain tasks eval` on a recipe without `task.name`",
         lambda e: ["tasks", "eval", str(e.recipe())],
         ("recipe.yaml", "task.name is not set", "tasks eval scores a declared task")),
    Case("eval-tasks-unfinished-run", "evaluation", "`posttrain tasks eval` on a run directory without `final/`",
         lambda e: ["tasks", "eval", str(e.write("run/config.yaml", f"model: {{name_or_path: {e.model}}}\ntask: "
                                                  f"{{name: {e.task()}, train: files:train, test: files:train}}\n")
                                          .parent)],
         ("run", "run directory has no final/ weights (did the run finish?)")),
    Case("eval-report-not-a-summary", "evaluation", "`posttrain im-report` on a JSON file that is not a summary",
         lambda e: ["im-report", str(e.write("s.json", "[1, 2]")), "--out", str(e.tmp / "rep")],
         ("s.json", "expected a JSON object with 'kind', 'model' and 'metrics'")),
    Case("eval-loss-eval-data-spec", "evaluation", "`posttrain loss-eval --data held_out.jsonl` (no NAME=)",
         lambda e: ["loss-eval", "--model", str(e.model), "--data", "held_out.jsonl"],
         ("--data 'held_out.jsonl'", "expected NAME=FILE")),
    # -- command-line arguments ---------------------------------------------------------------------------------
    Case("cli-override-no-equals", "CLI", "`posttrain train recipe.yaml train.max_steps` (no `=value`)",
         lambda e: e.train("train.max_steps"),
         ("override 'train.max_steps'", "expected section.key=value"), nothing_written=True),
    Case("cli-override-no-section", "CLI", "`posttrain train recipe.yaml max_steps=3`",
         lambda e: e.train("max_steps=3"),
         ("override 'max_steps=3'", "expected section.key=value", "did you mean 'train.max_steps'"),
         nothing_written=True),
    Case("cli-resume-without-checkpoint", "CLI", "`posttrain train recipe.yaml --resume` on a fresh run directory",
         lambda e: [*e.train(), "--resume"],
         ("--resume", "no checkpoint under", "checkpoints"), nothing_written=True),
    Case("cli-run-dir-taken", "CLI", "`posttrain train` into a run directory that already holds checkpoints",
         _existing_checkpoints, ("train.output_dir", "already holds checkpoints", "--resume")),
    Case("cli-run-dir-finished", "CLI", "`posttrain train` again into the directory of a finished run",
         _finished_run, ("train.output_dir", "holds a finished run", "--overwrite")),
    Case("cli-resume-and-overwrite", "CLI", "`posttrain train R.yaml --resume --overwrite`",
         lambda e: [*e.train(), "--resume", "--overwrite"], ("--resume and --overwrite", "give one"),
         nothing_written=True),
    Case("cli-generate-no-prompt", "CLI", "`posttrain generate --model M` without a prompt",
         lambda e: ["generate", "--model", str(e.model)],
         ("generate", "at least one --prompt or --prompts-file")),
    Case("cli-prompts-file-missing", "CLI", "`--prompts-file prompts.txt` that does not exist",
         lambda e: ["generate", "--prompts-file", str(e.tmp / "prompts.txt")],
         ("prompts.txt", "prompts file not found")),
    Case("cli-dept-budget-m", "CLI", "`posttrain dept-budget --hidden-size 8 --m 60,x`",
         lambda e: ["dept-budget", "--hidden-size", "8", "--m", "60,x"],
         ("--m '60,x'", "expected comma-separated integers")),
    Case("cli-stepgame-k", "CLI", "`posttrain stepgame generate --k 0-3`",
         lambda e: ["stepgame", "generate", "--k", "0-3", "--n", "1", "--out", str(e.tmp / "sg")],
         ("--k '0-3'", "between 1 and 10")),
    Case("cli-missing-argument", "CLI", "`posttrain train` without the recipe",
         lambda e: ["train"], ("config",)),
    Case("cli-bad-int", "CLI", "`posttrain inspect-data recipe.yaml -n two`",
         lambda e: ["inspect-data", str(e.recipe()), "-n", "two"], ("-n", "'two'")),
    # -- model paths --------------------------------------------------------------------------------------------
    Case("model-missing-path", "model path", "`model.name_or_path=./no/such/model`",
         lambda e: e.train("model.name_or_path=./no/such/model"),
         ("./no/such/model", "no such file or directory"), nothing_written=True),
    Case("model-pickle-only", "model path", "a model directory with `pytorch_model.bin` only", _pickle_only_dir,
         ("pickled", "refusing pickle weights pytorch_model.bin", "safetensors"), nothing_written=True),
    Case("model-truncated-weights", "model path", "a model directory whose `model.safetensors` is cut in half",
         _truncated_weights, ("cut-model/model.safetensors", "damaged weights file", "cut short"), nothing_written=True),
    Case("model-config-mismatch", "model path", "a model directory whose config.json doubles `intermediate_size`",
         _config_weights_mismatch, ("wide-model", "cannot load model directory"), nothing_written=True),
    Case("model-not-gguf", "model path", "`model.name_or_path=weights.txt` (a file that is not .gguf)",
         lambda e: e.train(f"model.name_or_path={e.write('weights.txt', 'not a model')}"),
         ("weights.txt", "expected a .gguf file or a model directory"), nothing_written=True),
    Case("model-corrupt-gguf", "model path", "`model.name_or_path=broken.gguf` holding random bytes",
         lambda e: e.train(f"model.name_or_path={e.write('broken.gguf', b'GGUF' + bytes(range(256)) * 4)}"),
         ("broken.gguf", "not a GGUF v2/v3 file"), nothing_written=True),
    Case("model-empty-dir", "model path", "`model.name_or_path` is an empty directory",
         lambda e: e.train(f"model.name_or_path={e.write('emptymodel/.keep', '').parent}"),
         ("emptymodel", "no model weights found", "expected *.safetensors"), nothing_written=True),
    Case("model-hub-offline", "model path", "a hub id not in the cache, offline",
         lambda e: e.train("model.name_or_path=nobody/no-such-model-xyz"),
         ("'nobody/no-such-model-xyz'", "not in the Hugging Face cache", "offline"), nothing_written=True),
    # -- model families (support.py: refused from the model's config, before its weights load) ------------------
    Case("family-seq2seq-im", "model family", "T5 with `loss.mode=instruction_and_output` (IM)",
         lambda e: e.train(f"model.name_or_path={_family_model(e, 't5')}", "loss.mode=instruction_and_output"),
         ("loss.mode", "encoder-decoder", "only output_only (IT) is supported"), nothing_written=True),
    Case("family-seq2seq-left-padding", "model family", "BART with `data.padding_side=left`",
         lambda e: e.train(f"model.name_or_path={_family_model(e, 'bart')}", "data.padding_side=left"),
         ("data.padding_side", "padded on the right"), nothing_written=True),
    Case("family-encoder-instruction", "model family", "RoBERTa (an encoder) trained on instruction data",
         lambda e: e.train(f"model.name_or_path={_family_model(e, 'roberta')}"),
         ("data.train_file", "encoder models do not generate"), nothing_written=True),
    Case("family-encoder-generate", "model family", "`posttrain generate` with a BERT model",
         lambda e: e.generate(_family_model(e, "bert")),
         ("BertForMaskedLM is an encoder model", "decoder-only or encoder-decoder")),
    Case("size-max-length-beyond-context", "model family", "`data.max_length=600` on a model with 512 positions",
         lambda e: e.train("data.max_length=600"),
         ("data.max_length", "exceeds the model's 512 positions", "max_position_embeddings"), nothing_written=True),
    Case("size-dept-rank", "model family", "`adapter.dept_rank=40` on a model of width 32",
         lambda e: e.train("adapter.type=dept", "adapter.num_virtual_tokens=4", "adapter.dept_rank=40"),
         ("adapter.dept_rank", "exceeds min(s=64, d=32)", "use a rank <= 32"), nothing_written=True),
    # -- adapter directories ------------------------------------------------------------------------------------
    Case("adapter-wrong-shape", "adapter", "`soft_prompt.safetensors` whose `prompt` is 3 x 32 (config: 4 x 32)",
         _soft_prompt_wrong_shape,
         ("soft_prompt.safetensors", "tensor 'prompt' has shape (3, 32), expected (4, 32)")),
    Case("adapter-missing-tensor", "adapter", "`soft_prompt.safetensors` without `offset_b`",
         _soft_prompt_missing_tensor, ("soft_prompt.safetensors", "missing tensor 'offset_b'")),
    Case("adapter-pickle", "adapter", "`final/soft_prompt.bin` (torch.save pickle) instead of safetensors",
         _soft_prompt_pickle, ("soft_prompt.safetensors", "missing", "soft_prompt.bin", "pickle files are not loaded")),
    Case("adapter-truncated", "adapter", "`soft_prompt.safetensors` cut after 40 bytes",
         _soft_prompt_truncated, ("soft_prompt.safetensors", "not a valid safetensors file")),
    Case("adapter-config-field", "adapter", "`soft_prompt_config.json` without `dept_rank`",
         _soft_prompt_bad_config, ("soft_prompt_config.json", "missing field 'dept_rank'")),
    Case("adapter-run-unfinished", "adapter", "a run directory with `config.yaml` but no `final/`",
         lambda e: e.generate(e.write("unfinished/config.yaml", "{}\n").parent),
         ("unfinished", "no final/ weights")),
    # -- StepGame files -----------------------------------------------------------------------------------------
    Case("stepgame-no-examples", "StepGame", "`stepgame solve` on a JSON file holding `{}`",
         lambda e: ["stepgame", "solve", str(e.write("qa2_x.json", "{}"))],
         ("qa2_x.json", "no StepGame examples in the file")),
    Case("stepgame-unknown-label", "StepGame", "record `0` has label `nowhere`",
         lambda e: ["stepgame", "solve", str(e.stepgame("qa2_x.json", {"story": STORY, "question": QUESTION, "label": "nowhere"}))],
         ("qa2_x.json", "record '0'", "unknown label 'nowhere'", "expected one of")),
    Case("stepgame-missing-question", "StepGame", "record `0` has no `question`",
         lambda e: ["stepgame", "solve", str(e.stepgame("qa2_x.json", {"story": STORY, "label": "left"}))],
         ("qa2_x.json", "record '0'", "missing question", "What is the relation")),
    Case("stepgame-empty-story", "StepGame", "record `0` has `\"story\": []`",
         lambda e: ["stepgame", "solve", str(e.stepgame("qa2_x.json", {"story": [], "question": QUESTION, "label": "left"}))],
         ("qa2_x.json", "record '0'", "empty story")),
    Case("stepgame-bad-question", "StepGame", "a question that is not the StepGame form",
         lambda e: ["stepgame", "solve", str(e.stepgame("qa2_x.json", {"story": STORY, "question": "Where is A?", "label": "left"}))],
         ("qa2_x.json", "question 'Where is A?'", "What is the relation")),
    Case("stepgame-jsonl-malformed", "StepGame", "`.jsonl` line 1 is not JSON",
         lambda e: ["stepgame", "solve", str(e.write("x.jsonl", "{story: A}\n"))],
         ("x.jsonl:1:", "malformed JSON")),
    Case("stepgame-babi-numbering", "StepGame", "bAbI text whose line numbers skip 2", _stepgame_babi_numbering,
         ("qa2_bad.txt", "line 2", "line number 3, expected 2")),
    Case("stepgame-unknown-suffix", "StepGame", "`stepgame solve stories.csv`",
         lambda e: ["stepgame", "solve", str(e.write("stories.csv", "a,b\n"))],
         ("stories.csv", "unknown StepGame format", "expected a .json, .jsonl or .txt")),
]


# ---------------------------------------------------------------------------------------------------------------
# running a case


def run_case(case: Case, env: Env) -> tuple[int, str]:
    """(exit status, stderr) of ``posttrain <argv>`` run in process."""
    import contextlib
    import io

    from posttrain.cli import main

    argv = case.build(env)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, err.getvalue()


_PROGRESS = re.compile(r"^[^|]*\d+%\|.*\| *\d+/\d+ \[.*\]$")  # a tqdm bar, e.g. transformers' "Loading weights"


def message_lines(err: str) -> list[str]:
    """The lines of stderr that are not progress bars (model loading draws one before a later error)."""
    return [line for line in err.splitlines() if line.strip() and not _PROGRESS.match(line.strip())]


def normalise(text: str, env: Env) -> str:
    """The message with the temporary folders replaced by ``<tmp>`` and ``<model>``."""
    for path, name in ((env.model, "<model>"), (env.tmp, "<tmp>")):
        for form in {str(path), str(path.resolve())}:
            text = text.replace(form, name)
    return text


def documented() -> dict[str, tuple[str, str]]:
    """Case id -> (exit status, error line) as docs/bad_inputs.md shows them."""
    if not DOC.is_file():
        return {}
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 5 and cells[0].startswith("`") and cells[0] != "`id`":
            rows[cells[0].strip("`")] = (cells[3], cells[4])
    return rows


def md_code(text: str) -> str:
    """Inline markdown code for a table cell (backticks and pipes escaped)."""
    text = text.replace("|", "\\|")
    fence = "``" if "`" in text else "`"
    return f"{fence} {text} {fence}" if fence == "``" else f"`{text}`"


def _params():
    for case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=case.defect)] if case.defect else []
        yield pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", list(_params()))
def test_bad_input(case, tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "cache"))
    env = Env(tmp_path, Path(tiny_model_dir))
    code, err = run_case(case, env)
    lines = message_lines(err)
    assert code == 2, f"exit status {code}, stderr: {err!r}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"not one 'error:' line: {err!r}"
    for word in case.expect:
        assert word in lines[0], f"{word!r} missing from {lines[0]!r}"
    if case.nothing_written:
        assert not (env.run / "config.yaml").exists() and not (env.run / "checkpoints").exists()
    row = documented().get(case.id)
    assert row == (str(code), md_code(normalise(lines[0], env))), (
        f"docs/bad_inputs.md is out of date for {case.id}; regenerate it with `{TABLE_CMD}`")


def test_catalogue_is_complete():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 30
    assert set(documented()) == set(ids), f"regenerate docs/bad_inputs.md with `{TABLE_CMD}`"
