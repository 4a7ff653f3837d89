"""tasks.spec / tasks.user: the built-in declarations against the PCP paper's table, rendering, validation, YAML."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from posttrain.errors import ConfigError
from posttrain.tasks import (
    DataSpec, Regression, Task, builtin_tasks, get_task, label_word, label_words, load_task_file, render_template,
    render_text_to_text, soft_target, task_from_dict, task_names,
)

FIXTURES = Path(__file__).parent / "fixtures" / "tasks"
S1, S2 = "the film is a gem .", "a critic liked it ."

PCP_NAMES = ["SST-2", "SST-5", "MR", "CR", "MPQA", "Subj", "TREC", "CoLA",
             "MRPC", "QQP", "STS-B", "MNLI", "MNLI-mm", "SNLI", "QNLI", "RTE"]

# methods-reference §3.3 (PCP paper / PowerfulPromptFT template_mapping), <S1> <S2> <mask> filled in
PAPER = {
    "SST-2": (f"{S1} It was <mask> .", ["terrible", "great"]),
    "MR": (f"{S1} It was <mask> .", ["terrible", "great"]),
    "CR": (f"{S1} It was <mask> .", ["terrible", "great"]),
    "SST-5": (f"{S1} It was <mask> .", ["terrible", "bad", "okay", "good", "great"]),
    "MPQA": (f"{S1} is <mask> .", ["negative", "positive"]),
    "Subj": (f"{S1} This is <mask> .", ["subjective", "objective"]),
    "TREC": (f"<mask> : {S1}", ["Description", "Entity", "Expression", "Human", "Location", "Number"]),
    "CoLA": (f"{S1} This is <mask>", ["incorrect", "correct"]),
    "MRPC": (f"{S1} <mask> , {S2}", ["No", "Yes"]),
    "QQP": (f"{S1} <mask> , {S2}", ["No", "Yes"]),
    "STS-B": (f"{S1} <mask> , {S2}", ["No", "Yes"]),
    "MNLI": (f"{S1} ? <mask> , {S2}", ["No", "Yes", "Maybe"]),
    "MNLI-mm": (f"{S1} ? <mask> , {S2}", ["No", "Yes", "Maybe"]),
    "SNLI": (f"{S1} . <mask> , in this case {S2}", ["No", "Yes", "Maybe"]),
    "QNLI": (f"{S1} ? <mask> , {S2}", ["No", "Yes"]),
    "RTE": (f"{S1} . <mask> , I think that {S2}", ["Yet", "Clearly"]),
}


def test_builtin_names_and_lookup():
    assert task_names() == PCP_NAMES + ["BoolQ", "CB", "SuperGLUE-RTE", "WiC"]
    for query, name in [("sst2", "SST-2"), ("SST-2", "SST-2"), ("sst_5", "SST-5"), ("Sts-B", "STS-B"),
                        ("stsb", "STS-B"), ("mnli-mm", "MNLI-mm"), ("MNLI_MISMATCHED", "MNLI-mm"),
                        ("cola", "CoLA"), ("sg-rte", "SuperGLUE-RTE"), ("superglue-wic", "WiC"), ("rte", "RTE")]:
        assert get_task(query).name == name
    with pytest.raises(ConfigError, match=r"unknown task 'sst3'; did you mean 'SST-2'\? \(built-in: SST-2, SST-5,"):
        get_task("sst3")


@pytest.mark.parametrize("name", PCP_NAMES)
def test_templates_and_verbalizers_match_the_paper(name):
    task = get_task(name)
    expected, words = PAPER[name]
    example = {"text_a": S1, "text_b": S2 if task.kind == "pair" else None}
    assert render_template(task, example, "<mask>") == expected
    assert label_words(task) == words
    assert task.max_length == (256 if task.kind == "pair" else 128)


def test_label_order_metrics_and_regression():
    assert get_task("MNLI").labels == ["contradiction", "entailment", "neutral"]
    assert get_task("QNLI").labels == ["not_entailment", "entailment"]  # map_of_mapping order, not GLUE's
    assert get_task("RTE").verbalizer == {"not_entailment": ["Yet"], "entailment": ["Clearly"]}
    metrics = {name: task.metrics for name, task in builtin_tasks().items()}
    assert metrics["CoLA"] == ["mcc"]
    assert metrics["MRPC"] == metrics["QQP"] == ["f1", "accuracy"]
    assert metrics["STS-B"] == ["pearson", "spearman"]
    assert metrics["CB"] == ["accuracy", "macro_f1"]
    assert all(metrics[n] == ["accuracy"] for n in PCP_NAMES if n not in ("CoLA", "MRPC", "QQP", "STS-B"))
    assert get_task("MRPC").positive_label == "1"
    sts = get_task("STS-B")
    assert sts.regression == Regression(lb=0.0, ub=5.0) and sts.is_regression
    assert soft_target(sts, 3.2) == pytest.approx(0.64)
    assert [label_word(sts, y) for y in (3.2, 3.875, 0.0, 4.95, 2.5)] == ["3.2", "3.8", "0.0", "5.0", "2.4"]
    with pytest.raises(ConfigError, match="not a regression task"):
        soft_target(get_task("SST-2"), 1.0)


def test_filled_label_words_pcp_corpus_lines():
    # PCP Step 2: the pseudo label's word in the mask slot, parts joined by single spaces
    assert render_template(get_task("sst-2"), {"text_a": S1}, "great") == "the film is a gem . It was great ."
    assert render_template(get_task("rte"), {"text_a": "A cat sat", "text_b": "A cat exists"}, "Clearly") == \
        "A cat sat . Clearly , I think that A cat exists"
    # an empty part is dropped with one space, like the reference code's ' '.join(x for x in parts if x)
    assert render_template(get_task("sst-2"), {"text_a": ""}, "great") == "It was great ."
    assert render_template(get_task("mrpc"), {"text_a": "A", "text_b": ""}, "Yes") == "A Yes ,"
    assert render_template(get_task("trec"), {"text_a": None}, "Human") == "Human :"


def test_superglue_templates_and_text_to_text():
    ex = {"text_a": "The sky is blue.", "text_b": "is the sky blue", "label": "True"}
    assert render_template(get_task("boolq"), ex, "<mask>") == \
        "The sky is blue. Question: is the sky blue? Answer: <mask>."
    assert render_text_to_text(get_task("boolq"), ex) == ("question: is the sky blue passage: The sky is blue.", "Yes")
    wic = {"text_a": "He felt cold.", "text_b": "I feel fine.", "word": "feel", "label": "False"}
    assert render_template(get_task("wic"), wic, "Yes") == \
        '"He felt cold." / "I feel fine." Similar sense of "feel"? Yes.'
    assert render_text_to_text(get_task("wic"), wic) == \
        ("sentence1: He felt cold. sentence2: I feel fine. word: feel", "No")
    cb = {"text_a": "P.", "text_b": "H", "label": "neutral"}
    assert render_template(get_task("cb"), cb, "<mask>") == '"H" ? <mask> , "P."'
    for name in ("BoolQ", "CB", "SuperGLUE-RTE", "WiC"):
        assert "posttrain's own choice" in get_task(name).origin


def test_text_to_text_dept_forms():
    pair = {"text_a": "A", "text_b": "B"}
    assert render_text_to_text(get_task("sst2"), {"text_a": "A", "label": "1"}) == ("sentence: A", "great")
    assert render_text_to_text(get_task("mnli"), {**pair, "label": "neutral"}) == \
        ("premise: A hypothesis: B", "Maybe")
    assert render_text_to_text(get_task("qnli"), {**pair, "label": "entailment"}) == \
        ("question: A sentence: B", "Yes")
    assert render_text_to_text(get_task("qqp"), {**pair, "label": "0"}) == ("question1: A question2: B", "No")
    assert render_text_to_text(get_task("stsb"), {**pair, "label": 3.875}) == ("sentence1: A sentence2: B", "3.8")
    with pytest.raises(ConfigError, match="has no label"):
        render_text_to_text(get_task("sst2"), {"text_a": "A", "label": None})
    with pytest.raises(ConfigError, match=r"unknown label 'x' \(labels: 0, 1\)"):
        render_text_to_text(get_task("sst2"), {"text_a": "A", "label": "x"})
    with pytest.raises(ConfigError, match="the example has no field 'text_b'"):
        render_template(get_task("mrpc"), {"text_a": "A"}, "<mask>")
    with pytest.raises(ConfigError, match="non-empty string"):
        render_template(get_task("sst2"), {"text_a": "A"}, "")


def test_every_field_has_help():
    for cls in (Task, DataSpec, Regression):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name}"


BASE = dict(name="t", kind="single", labels=["0", "1"], verbalizer={"0": "bad", "1": "good"},
            template="{text_a} It was {mask} .", text_to_text="sentence: {text_a}", metrics=["accuracy"])


@pytest.mark.parametrize("change, message", [
    ({"template": "{text_a} It was ."}, r"template: needs exactly one \{mask\} placeholder, found 0"),
    ({"template": "{text_a} {mask} {mask}"}, r"template: needs exactly one \{mask\} placeholder, found 2"),
    ({"template": "{text_b} {mask}"}, r"placeholder \{text_b\} is not a field of the task \(fields: text_a\)"),
    ({"template": "{txt_a} {mask}"}, r"placeholder \{txt_a\} .*did you mean 'text_a'\?"),
    ({"template": "{text_a} {mask"}, r"unbalanced"),
    ({"text_to_text": "s: {text_a} {mask}"}, r"text_to_text: has no \{mask\}"),
    ({"verbalizer": {"0": "bad"}}, r"verbalizer: label '1' has no label word"),
    ({"verbalizer": {"0": "bad", "1": "good", "2": "x"}}, r"verbalizer: '2' is not a label"),
    ({"verbalizer": {"0": False, "1": True}}, r"verbalizer.0: YAML read the word as a boolean \(false\): quote it"),
    ({"verbalizer": {"0": "", "1": "good"}}, r"verbalizer.0: expected a non-empty word"),
    ({"labels": ["0", "0"]}, r"labels: duplicate label"),
    ({"metrics": ["f1"]}, r"positive_label: metric f1 needs the positive class"),
    ({"metrics": ["pearson"]}, r"pearson/spearman need a regression task"),
    ({"metrics": ["acc"]}, r"unknown metric 'acc'"),
    ({"regression": {"lb": 0, "ub": 5}}, r"metrics: accuracy does not apply to a regression task"),
    ({"regression": {"lb": 5, "ub": 0}, "metrics": ["pearson"]}, r"regression.lb: must be below ub \(0\), got 5"),
    ({"kind": "triple"}, r"kind: expected 'single' or 'pair'"),
    ({"kind": "pair"}, r"template: does not use \{text_b\}: '\{text_a\} It was \{mask\} \.'"),
    ({"kind": "pair", "fields": ["text_a"]}, r"fields: a pair task must include text_b"),
    ({"fields": ["text_a", "label"]}, r"fields: label is reserved"),
    ({"max_length": 4}, r"max_length: expected an integer >= 8"),
    ({"data": {"kshot": {"dir": "d", "files": {"train": "t.tsv"}, "columns": {"text_a": "s"}}}},
     r"data.kshot.columns: needs label"),
    ({"data": {"kshot": {"dir": "d", "files": {"train": "t.csv"}, "format": "csv", "header": False,
                         "columns": {"text_a": "s", "label": 0}}}}, r"data.kshot.columns.text_a: the file has no header"),
    ({"data": {"kshot": {"dir": "d", "files": {"train": "t"}, "format": "xml", "columns": {"text_a": "s"}}}},
     r"data.kshot.format: expected one of tsv, csv, json, jsonl"),
    ({"data": {"kshot": {"dir": "d", "file": {}, "columns": {}}}}, r"data.kshot: unknown key 'file'; did you mean 'files'\?"),
])
def test_validation_errors(change, message):
    with pytest.raises(ConfigError, match=message):
        task_from_dict({**BASE, **change})


def test_user_task_file(tmp_path):
    task = load_task_file(FIXTURES / "user" / "reviews.yaml")
    assert task.name == "my-reviews" and task.labels == ["neg", "pos"]
    assert task.verbalizer == {"neg": ["terrible", "bad"], "pos": ["great"]}
    assert label_words(task) == ["terrible", "great"]  # the first word of a list is the rendered one
    assert render_template(task, {"text_a": "Fine."}, "great") == "Review: Fine. Verdict: great!"
    assert Path(task.base_dir) == (FIXTURES / "user").resolve()
    assert get_task(str(FIXTURES / "user" / "reviews.yaml")).name == "my-reviews"

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**BASE, "templat": "x"}))
    with pytest.raises(ConfigError, match=rf"^{bad}: unknown key 'templat'; did you mean 'template'\?$"):
        load_task_file(bad)
    bad.write_text(yaml.safe_dump({**BASE, "data": {"mine": {"dir": "d", "files": {"train": "t.csv"},
                                                             "colums": {}}}}))
    with pytest.raises(ConfigError, match=rf"^{bad}: task 't': data.mine: unknown key 'colums'; did you mean 'columns'"):
        load_task_file(bad)
    bad.write_text(yaml.safe_dump({k: v for k, v in BASE.items() if k != "template"}))
    with pytest.raises(ConfigError, match=rf"^{bad}: missing key template$"):
        load_task_file(bad)
    bad.write_text("name: t\nkind: [single\n")
    with pytest.raises(ConfigError, match=rf"^{bad}:3: not valid YAML"):
        load_task_file(bad)
    bad.write_text(yaml.safe_dump({**BASE, "verbalizer": None}).replace("verbalizer: null", "verbalizer: {0: no, 1: yes}"))
    with pytest.raises(ConfigError, match=r"verbalizer.0: YAML read the word as a boolean \(false\): quote it"):
        load_task_file(bad)
    with pytest.raises(ConfigError, match="task file not found"):
        load_task_file(tmp_path / "nope.yaml")


def test_user_task_extends_a_builtin(tmp_path):
    """``extends`` copies every key of the built-in declaration and replaces the ones the file gives."""
    path = tmp_path / "rte_causal.yaml"
    path.write_text('name: RTE-causal\nextends: rte\ntemplate: "{text_a} Question : {text_b} ? Answer : {mask}"\n'
                    'verbalizer: {not_entailment: "No", entailment: "Yes"}\n')
    task, base = load_task_file(path), get_task("RTE")
    assert task.name == "RTE-causal" and task.aliases == []
    assert task.labels == base.labels and task.metrics == base.metrics and task.data == base.data
    assert task.verbalizer == {"not_entailment": ["No"], "entailment": ["Yes"]}
    assert render_template(task, {"text_a": "A dog runs .", "text_b": "An animal moves"}, "Yes") == \
        "A dog runs . Question : An animal moves ? Answer : Yes"
    assert base.template == "{text_a} . {mask} , I think that {text_b}"  # the built-in is untouched
    assert task.origin.startswith("extends RTE")

    for text, message in [
        ("extends: RTE\ntemplate: '{text_a} {mask}'\n", r"name: required with extends"),
        ("name: x\nextends: RTEE\n", r"extends: unknown built-in task 'RTEE'; did you mean 'RTE'\?"),
        ("name: glue-rte\nextends: RTE\n", r"name: 'glue-rte' is a built-in task's name"),
        ("name: x\nextends: RTE\ntemplate: '{text_a} {mask}'\n", r"template: does not use \{text_b\}"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_task_file(path)


@pytest.mark.parametrize("name", ["trec_causal", "rte_causal", "mrpc_causal"])
def test_shipped_causal_task_files_put_the_slot_last(name):
    task = load_task_file(Path(__file__).parents[1] / "configs" / "tasks" / f"{name}.yaml")
    assert task.template.rstrip().endswith("{mask}")
    assert task.labels == get_task(name.split("_")[0]).labels
