"""Property-based fuzzing (hypothesis) of the readers, template and chat rendering and the StepGame parser.

The property everywhere: arbitrary input either gives a well-formed result or raises a ``PosttrainError`` (the
project's one-line user error); nothing else escapes. Some properties are stronger: text survives a write/read round
trip unchanged (no reader turns "NA" into a missing value or "2021-01-01" into a date), and a chat message's content
is located at its own place in the rendered conversation, never inside the template's markup.

Runs are reproducible (``derandomize=True``, no example database) and small enough for CI (about 20 s on 2 cores).
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from posttrain.data.chat import (
    NAMED_TEMPLATES, OUTPUT, _adds_bos, _locate, _markup_before, render_messages, render_text,
)
from posttrain.data.instruction import ROLES, load_examples
from posttrain.errors import PosttrainError
from posttrain.stepgame.formats import read_examples
from posttrain.stepgame.solver import parse_sentence, solve
from posttrain.stepgame.templates import LABELS
from posttrain.tasks import get_task, load_task_file, read_split, render_template, render_text_to_text
from posttrain.tasks.spec import task_from_dict

from conftest import make_tokenizer

FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=60,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FEW = settings(FUZZ, max_examples=25)

WORK = Path(tempfile.mkdtemp(prefix="posttrain-fuzz-"))
TOKENIZER = make_tokenizer()

# JSON values of any shape, and text that is likely to hit the readers' special cases
SPECIAL = ["", " ", "\n", "NA", "null", "None", "nan", "2021-01-01", "2021-01-01T10:00:00", "42", "-1.5e3", "true",
           "{mask}", "{text_a}", "{", "}", "\"", ",", "\t", "\r\n", "\ufeff", "<|im_end|>", "<|im_start|>", "user",
           "assistant", "system", "a", "\x00", "é", "😀"]
texts = st.one_of(st.sampled_from(SPECIAL), st.text(max_size=30),
                  st.lists(st.sampled_from(SPECIAL), max_size=4).map("".join))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), texts)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
                           max_leaves=8)
keys = st.sampled_from(["messages", "conversations", "role", "content", "from", "value", "instruction", "input",
                        "output", "prompt", "completion", "text", "other"])
rows = st.dictionaries(keys, json_values, max_size=4)
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(ROLES), "content": texts}), min_size=1, max_size=4)
row_values = st.one_of(rows, st.fixed_dictionaries({"messages": messages}), json_values)


def write(name: str, data: bytes | str) -> Path:
    path = WORK / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))
    return path


def well_formed_examples(examples) -> None:
    assert isinstance(examples, list) and examples
    for ex in examples:
        if "text" in ex:
            assert set(ex) == {"text"} and isinstance(ex["text"], str) and ex["text"].strip()
            continue
        assert set(ex) == {"messages"} and ex["messages"]
        for m in ex["messages"]:
            assert set(m) == {"role", "content"} and m["role"] in ROLES and isinstance(m["content"], str)
        assert any(m["role"] == "assistant" for m in ex["messages"])  # an empty reply is a target (end of turn)


# ---------------------------------------------------------------------------------------------------------------
# (a) instruction data files


@FUZZ
@given(st.binary(max_size=200), st.sampled_from([".jsonl", ".json", ".csv"]))
def test_instruction_loader_on_arbitrary_bytes(data, suffix):
    path = write("bytes" + suffix, data)
    try:
        examples = load_examples(path)
    except PosttrainError as err:
        assert "\n" not in str(err) and str(path) in str(err)
        return
    well_formed_examples(examples)


@FUZZ
@given(st.lists(row_values, min_size=1, max_size=4), st.sampled_from(["jsonl", "array", "csv"]),
       st.sampled_from(["auto", "messages", "alpaca", "prompt_completion", "text"]))
@example([{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 5}]}], "jsonl", "auto")
def test_instruction_loader_on_arbitrary_rows(values, layout, fmt):
    if layout == "jsonl":
        path = write("rows.jsonl", "".join(json.dumps(v) + "\n" for v in values))
    elif layout == "array":
        path = write("rows.json", json.dumps(values))
    else:
        columns = sorted({k for v in values if isinstance(v, dict) for k in v}) or ["text"]
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(columns)
        for v in values:
            v = v if isinstance(v, dict) else {}
            writer.writerow([x if isinstance(x, str) else json.dumps(x) for x in (v.get(c, "") for c in columns)])
        path = write("rows.csv", out.getvalue())
    try:
        examples = load_examples(path, fmt)
    except PosttrainError as err:
        assert "\n" not in str(err) and str(path) in str(err)
        return
    well_formed_examples(examples)
    assert len(examples) == len(values)


nonblank = texts.filter(lambda t: t.strip() and "\x00" not in t)


@FUZZ
@given(st.lists(st.tuples(nonblank, nonblank), min_size=1, max_size=4), st.sampled_from(["jsonl", "array", "csv"]))
@example([("What is the date?", "2021-01-01"), ("Say NA", "NA")], "csv")
@example([("date?", "2021-01-01"), ("n?", "42")], "jsonl")
@example([("a,b", "1"), ("x", "2")], "csv")
def test_text_survives_a_round_trip(pairs, layout):
    rows = [{"prompt": p, "completion": c} for p, c in pairs]
    if layout == "jsonl":
        path = write("rt.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    elif layout == "array":
        path = write("rt.json", json.dumps(rows, ensure_ascii=False))
    else:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=["prompt", "completion"])
        writer.writeheader()
        writer.writerows(rows)
        path = write("rt.csv", out.getvalue())
    examples = load_examples(path)
    assert [(e["messages"][0]["content"], e["messages"][1]["content"]) for e in examples] == pairs


# ---------------------------------------------------------------------------------------------------------------
# (b) task files and user task YAML

TASK = {
    "name": "fuzz", "kind": "pair", "labels": ["no", "yes"], "verbalizer": {"no": "No", "yes": "Yes"},
    "template": "{text_a} ? {mask} , {text_b}", "text_to_text": "premise: {text_a} hypothesis: {text_b}",
    "metrics": ["accuracy"],
}
COLUMNS = {"tsv": {"text_a": 0, "text_b": 1, "label": -1}, "csv": {"text_a": "a", "text_b": "b", "label": "label"},
           "json": {"text_a": "a", "text_b": "b", "label": "label"}, "jsonl": {"text_a": "a", "text_b": "b", "label": "label"}}


def user_task(fmt: str) -> Path:
    spec = {"dir": "data", "files": {"train": f"train.{fmt}"}, "format": fmt, "columns": COLUMNS[fmt]}
    if fmt == "tsv":
        spec["header"] = False
    return write(f"task-{fmt}.yaml", yaml.safe_dump({**TASK, "data": {"files": spec}}))


TASK_FILES = {fmt: user_task(fmt) for fmt in COLUMNS}


@FUZZ
@given(st.binary(max_size=200), st.sampled_from(sorted(COLUMNS)))
@example(b"a,b,label\nx,y,yes\n", "csv")
@example(b'{"1": {"a": "x", "b": "y", "label": "yes"}}', "json")
def test_task_reader_on_arbitrary_bytes(data, fmt):
    write(f"data/train.{fmt}", data)
    task = load_task_file(TASK_FILES[fmt])
    try:
        rows = read_split(task, "files", "train")
    except PosttrainError as err:
        assert "\n" not in str(err)
        return
    assert rows
    for row in rows:
        assert isinstance(row["text_a"], str) and isinstance(row["text_b"], str) and row["label"] in task.labels


@FUZZ
@given(st.lists(st.one_of(rows, st.dictionaries(st.sampled_from(["a", "b", "label", "idx"]), json_values)), min_size=1,
                max_size=3))
def test_task_reader_on_arbitrary_jsonl_rows(values):
    write("data/train.jsonl", "".join(json.dumps(v) + "\n" for v in values))
    try:
        rows = read_split(load_task_file(TASK_FILES["jsonl"]), "files", "train")
    except PosttrainError as err:
        assert "\n" not in str(err)
        return
    assert len(rows) == len(values) and all(r["label"] in ("no", "yes") for r in rows)


@FUZZ
@given(st.text(max_size=200))
@example("name: x\nkind: single\nlabels: [a]\nverbalizer: {a: yes}\n")
@example("- 1\n- 2\n")
@example("name: [unclosed\n")
def test_user_task_yaml_on_arbitrary_text(text):
    path = write("arbitrary.yaml", text)
    try:
        task = load_task_file(path)
    except PosttrainError as err:
        assert "\n" not in str(err)
        return
    assert task.template.count("{mask}") == 1  # a task that loads is complete


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(TASK) + ["fields", "aliases", "positive_label", "regression",
                                                       "max_length", "data", "verbaliser"]), json_values, max_size=3))
def test_task_declaration_with_arbitrary_values(changes):
    try:
        task = task_from_dict({**TASK, **changes}, "fuzz.yaml")
    except PosttrainError as err:
        assert "\n" not in str(err)
        return
    assert all(label in task.verbalizer for label in task.labels)


# ---------------------------------------------------------------------------------------------------------------
# (c) template rendering

TASKS = [get_task(name) for name in ("SST-2", "MNLI", "WiC", "BoolQ", "CB")]


@FUZZ
@given(st.sampled_from(TASKS), st.dictionaries(st.sampled_from(["text_a", "text_b", "word", "label", "idx"]),
                                               st.one_of(texts, scalars), max_size=5), texts, st.booleans())
@example(TASKS[0], {"text_a": "I said {mask} and {text_a} ."}, "great", False)
def test_render_template_with_arbitrary_fields(task, fields, word, complete):
    example_ = {**{name: "x" for name in task.fields}, **fields} if complete else fields
    try:
        text = render_template(task, example_, word)
    except PosttrainError as err:
        assert "\n" not in str(err)
        return
    assert isinstance(text, str) and word in text
    for name in task.fields:  # every non-empty field value appears verbatim
        if example_.get(name):
            assert example_[name] in text
    if example_.get("label") is not None:
        try:
            source, target = render_text_to_text(task, example_)
        except PosttrainError:
            return
        assert isinstance(source, str) and target in [w for words in task.verbalizer.values() for w in words]


# ---------------------------------------------------------------------------------------------------------------
# (d) chat rendering


@FEW
@given(messages, st.sampled_from([None, "chatml", "tulu", "plain"]))
@example([{"role": "user", "content": "user"}, {"role": "assistant", "content": "assistant"}], "chatml")
@example([{"role": "user", "content": "a"}, {"role": "assistant", "content": "test"}], None)
def test_chat_rendering_of_arbitrary_messages(msgs, name):
    template = NAMED_TEMPLATES[name] if name else None
    try:
        rendered = render_messages(TOKENIZER, msgs, template)
    except PosttrainError as err:
        assert "\n" not in str(err)
        return
    n = len(rendered.input_ids)
    assert len(rendered.segments) == n and len(rendered.offsets) == n and set(rendered.segments) <= {0, 1, 2}
    assert rendered.text == TOKENIZER.apply_chat_template(msgs, chat_template=template, tokenize=False)
    assert "".join(rendered.pieces()) == rendered.text
    if name == "chatml":  # the markup before each content is known exactly: contents sit right after it
        spans = iter(_locate(rendered.text, msgs, _markup_before(TOKENIZER, msgs, template)))
        pos = 0
        for m in msgs:
            header = f"<|im_start|>{m['role']}\n"
            assert rendered.text.startswith(header, pos)
            pos += len(header)
            if m["content"].strip():
                start, end, _ = next(spans)
                assert (start, end) == (pos, pos + len(m["content"]))
            pos += len(m["content"]) + len("<|im_end|>\n")


@FEW
@given(texts)
def test_plain_text_rendering(text):
    rendered = render_text(TOKENIZER, text)
    assert len(rendered.input_ids) == len(rendered.segments) == len(rendered.offsets)
    assert rendered.text == TOKENIZER.bos_token * _adds_bos(TOKENIZER) + text + TOKENIZER.eos_token
    assert set(rendered.segments[int(_adds_bos(TOKENIZER)):]) <= {OUTPUT}


# ---------------------------------------------------------------------------------------------------------------
# (e) StepGame files and sentences

QUESTIONS = st.builds(lambda a, b: f"What is the relation of the agent {a} to the agent {b}?",
                      st.sampled_from("ABCXYZ"), st.sampled_from("ABCXYZ"))
SENTENCES = st.one_of(texts, st.builds(lambda a, b, mid: f"{a} {mid} {b}.", st.sampled_from("ABCX"),
                                       st.sampled_from("ABCX"),
                                       st.sampled_from(["is to the left of", "is above", "is below and to the right of",
                                                        "and", "is at the same position as", "is over there and"])))
records = st.fixed_dictionaries({"story": st.one_of(st.lists(SENTENCES, max_size=4), json_values),
                                 "question": st.one_of(QUESTIONS, texts), "label": st.one_of(st.sampled_from(LABELS), texts)},
                                optional={"k_hop": st.one_of(st.integers(-2, 12), texts)})


@FUZZ
@given(st.binary(max_size=200), st.sampled_from([".json", ".jsonl", ".txt"]))
@example(b"1 A is above B.\n2 What is the relation of the agent A to the agent B?\tabove\t1\n", ".txt")
def test_stepgame_reader_on_arbitrary_bytes(data, suffix):
    path = write("qa1_fuzz" + suffix, data)
    try:
        examples = read_examples(path)
    except PosttrainError as err:
        assert "\n" not in str(err)
        return
    for ex in examples:
        assert ex["label"] in LABELS and ex["story"] and all(isinstance(s, str) for s in ex["story"])


@FUZZ
@given(st.lists(records, min_size=1, max_size=3), st.sampled_from(["json", "jsonl", "babi"]))
def test_stepgame_reader_on_arbitrary_records(recs, fmt):
    if fmt == "json":
        path = write("qa2_recs.json", json.dumps({str(i): r for i, r in enumerate(recs)}))
    elif fmt == "jsonl":
        path = write("qa2_recs.jsonl", "".join(json.dumps(r) + "\n" for r in recs))
    else:
        lines = []
        for r in recs:
            story = r["story"] if isinstance(r["story"], list) else [str(r["story"])]
            lines += [f"{i} {s}" for i, s in enumerate(story, 1)]
            lines.append(f"{len(story) + 1} {r['question']}\t{r['label']}\t1")
        path = write("qa2_recs.txt", "\n".join(lines) + "\n")
    try:
        examples = read_examples(path)
    except PosttrainError as err:
        assert "\n" not in str(err)
        return
    for ex in examples:
        assert ex["label"] in LABELS and ex["k_hop"] in (None, *range(1, 13))
        try:
            answer = solve(ex["story"], ex["question"])
        except PosttrainError:
            continue
        assert answer is None or answer in LABELS


@FUZZ
@given(st.lists(SENTENCES, max_size=5), st.one_of(QUESTIONS, texts))
def test_stepgame_solver_on_arbitrary_sentences(story, question):
    for sentence in story:
        for fact in parse_sentence(sentence):
            assert fact.subject in sentence and (fact.relation is None or fact.relation in LABELS)
    try:
        answer = solve(story, question)
    except PosttrainError as err:
        assert "\n" not in str(err)
        return
    assert answer is None or answer in LABELS


@pytest.fixture(autouse=True, scope="module")
def _cleanup():
    yield
    import shutil

    shutil.rmtree(WORK, ignore_errors=True)
