"""PCP/TAPT corpora and the staged pipeline (pipelines/pcp.py): exact corpus lines, prediction records, stage
markers (skip / redo / force / changed settings), config errors, the CLI parser, and one real end-to-end PCP run on
a tiny random Llama with a small fake LM-BFF data root."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from posttrain.errors import ConfigError
from posttrain.methods.pcp_corpus import one_line, pcp_line, tapt_line, write_corpus
from posttrain.cli import pcp as pcp_cli
from posttrain.pipelines import pcp
from posttrain.tasks import get_task

POS = ["a gem of a film .", "the sea is wide and blue .", "good morning , paris !", "a poem about the sea ."]
NEG = ["the lazy dog .", "a dull\nand lazy film .", "what is this ?", "summarize nothing ."]


# ---------------------------------------------------------------------------------------------------------------
# corpus lines


def test_pcp_and_tapt_lines_are_exact():
    sst2, rte, mnli, trec = (get_task(n) for n in ("SST-2", "RTE", "MNLI", "TREC"))
    single = {"text_a": "a gem .", "text_b": None}
    pair = {"text_a": "A man sleeps", "text_b": "Someone rests ."}
    assert pcp_line(sst2, single, "1") == "a gem . It was great ."
    assert pcp_line(sst2, single, "0") == "a gem . It was terrible ."
    assert pcp_line(sst2, single, "1", "soft") == "a gem . It was great"  # DART layout: no final period
    assert pcp_line(rte, pair, "entailment") == "A man sleeps . Clearly , I think that Someone rests ."
    assert pcp_line(rte, pair, "not_entailment", "soft") == "A man sleeps Yet , Someone rests ."
    assert pcp_line(mnli, pair, "neutral") == "A man sleeps ? Maybe , Someone rests ."
    assert pcp_line(trec, {"text_a": "Who wrote it ?"}, "3") == "Human : Who wrote it ?"
    # TAPT: the raw text only (text_a; text_a + " " + text_b for pairs), whatever the label
    assert tapt_line(sst2, {**single, "label": "1"}) == "a gem ."
    assert tapt_line(rte, pair) == "A man sleeps Someone rests ."
    with pytest.raises(ConfigError, match="regression"):
        pcp_line(get_task("STS-B"), pair, 3.0)
    with pytest.raises(ConfigError, match="corpus"):
        pcp_line(sst2, single, "1", "dart")


def test_line_breaks_never_split_an_example(tmp_path):
    text = "line one\nline two \r\n three\rfour\u2028five\x0bsix\u0085seven"
    assert one_line(text) == "line one line two three four five six seven"
    sst2 = get_task("SST-2")
    assert pcp_line(sst2, {"text_a": "a dull\nand lazy film ."}, "0") == "a dull and lazy film . It was terrible ."
    assert tapt_line(get_task("RTE"), {"text_a": "x\n", "text_b": "\ny"}) == "x y"
    path = tmp_path / "train.txt"
    counts = write_corpus(path, ["a gem . It was great .", "", "  ", "b . It was terrible ."])
    assert path.read_text() == "a gem . It was great .\nb . It was terrible .\n"
    assert counts == {"file": str(path), "lines": 2, "empty_left_out": 2}
    with pytest.raises(ValueError, match="line break"):
        write_corpus(path, ["a\u2028b"])


def test_prediction_records_and_summary():
    task = get_task("SST-2")
    rows = [{"idx": 7, "text_a": "a gem .", "text_b": None, "label": "1"},
            {"idx": 9, "text_a": "dull .", "text_b": None, "label": "1"},
            {"idx": 11, "text_a": "meh .", "text_b": None, "label": None}]
    probs = torch.tensor([[0.25, 0.75], [0.875, 0.125], [0.5, 0.5]])
    records = pcp.prediction_records(task, rows, probs)
    assert records[0] == {"idx": 7, "text_a": "a gem .", "text_b": None, "label": "1", "pred": "1",
                          "pred_word": "great", "confidence": 0.75, "probs": [0.25, 0.75]}
    assert records[1]["pred"] == "0" and records[1]["pred_word"] == "terrible" and records[1]["confidence"] == 0.875
    assert records[2]["label"] is None and records[2]["pred"] == "0"  # ties go to the first label
    summary = pcp.pseudo_label_summary(task, records)
    assert summary["examples"] == 3 and summary["with_gold_label"] == 2
    assert summary["accuracy_vs_gold"] == 0.5
    assert summary["pred_counts"] == {"0": 2, "1": 1} and summary["gold_counts"] == {"0": 0, "1": 2}


# ---------------------------------------------------------------------------------------------------------------
# a fake data root (SST-2 k-shot + pool) and recipes on the tiny Llama


def write_sst2_data(root):
    """A tiny SST-2 in the shared-data layout: LM-BFF k-shot split 16-13 (tsv) and the PCP unlabelled pool (json)."""
    kshot = root / "lm_bff_kshot" / "SST-2" / "16-13"
    kshot.mkdir(parents=True)
    tsv = "sentence\tlabel\n" + "".join(f"{one_line(t)}\t{y}\n" for y, texts in (("1", POS), ("0", NEG))
                                        for t in texts)
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        (kshot / name).write_text(tsv)
    pool = root / "pcp_unlabeled" / "SST-2"
    pool.mkdir(parents=True)
    rows = {str(i): {"text_a": t, "text_b": None, "label": y}
            for i, (t, y) in enumerate([(t, "1") for t in POS] + [(t, "0") for t in NEG])}
    (pool / "train.json").write_text(json.dumps(rows, indent=4))
    (pool / "dev.json").write_text(json.dumps(dict(list(rows.items())[:3]), indent=4))
    return root


def write_pcp_recipes(folder, model_dir, task_keys: str = ""):
    """A tiny SST-2 data root, a prompt-FT recipe on ``model_dir`` (``task_keys`` added to its task section) and a
    2-step PCP config using it as the teacher, under ``folder``."""
    root = write_sst2_data(folder / "data")
    (folder / "prompt_ft.yaml").write_text(
        f"model: {{name_or_path: '{model_dir}'}}\n"
        f"task: {{name: SST-2, form: template, {task_keys}train: 'kshot:train', eval: 'kshot:dev', "
        "test: 'kshot:test'}\n"
        "data: {max_length: 64}\n"
        "train: {max_steps: 2, per_device_batch_size: 4, learning_rate: 1.0e-3, progress: false}\n")
    (folder / "pcp.yaml").write_text(
        f"task: SST-2\ndata_root: '{root}'\noutput_dir: '{folder / 'out'}'\nteacher_recipe: prompt_ft.yaml\n"
        "max_pool_train: 6\n"
        "cpt: {max_steps: 2, eval_steps: 1, per_device_batch_size: 4, gradient_accumulation_steps: 1, "
        "max_length: 64, progress: false}\n")
    return folder


@pytest.fixture
def setup(tmp_path, tiny_model_dir):
    return write_pcp_recipes(tmp_path, tiny_model_dir)


def test_pcp_pipeline_end_to_end(setup):
    cfg = pcp.load_pipeline_config(setup / "pcp.yaml", method="pcp")
    assert cfg.teacher_recipe == str(setup / "prompt_ft.yaml")  # resolved against the config's folder
    summary = pcp.run_pipeline(cfg, log=lambda *_: None)
    out = setup / "out"
    for n in range(1, 6):
        marker = json.loads((out / f"stage{n}.done.json").read_text())
        assert marker["stage"] == n and marker["seconds"] >= 0 and marker["outputs"]
    # stage 1: a finished engine run
    assert (out / "stage1_teacher" / "final" / "model.safetensors").is_file()
    # stage 2: predictions JSONL with every field; the pool subset is seeded and in file order
    predictions = out / "stage2_pseudo_labels" / "predictions_train.jsonl"
    records = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert len(records) == 6 and [r["idx"] for r in records] == sorted(r["idx"] for r in records)
    for r in records:
        assert set(r) == {"idx", "text_a", "text_b", "label", "pred", "pred_word", "confidence", "probs"}
        assert r["pred_word"] == {"0": "terrible", "1": "great"}[r["pred"]]
        assert sum(r["probs"]) == pytest.approx(1.0, abs=1e-5) and r["confidence"] == max(r["probs"])
    stage2 = json.loads((out / "stage2_pseudo_labels" / "summary.json").read_text())
    gold = sum(r["pred"] == r["label"] for r in records) / len(records)
    assert stage2["train"]["accuracy_vs_gold"] == pytest.approx(gold) and stage2["dev"]["examples"] == 3
    # the probabilities are the teacher's, also for rows without a gold label
    task = get_task("SST-2")
    probs = pcp.teacher_label_probs(out / "stage1_teacher", task, [{**r, "label": None} for r in records],
                                    progress=False)
    assert torch.allclose(probs, torch.tensor([r["probs"] for r in records]), atol=1e-5)
    # stage 3: one templated line per prediction, with its pseudo-label word
    lines = (out / "stage3_corpus" / "train.txt").read_text().splitlines()
    assert lines == [f"{one_line(r['text_a'])} It was {r['pred_word']} ." for r in records]
    assert len((out / "stage3_corpus" / "dev.txt").read_text().splitlines()) == 3
    # stage 4: best CPT checkpoint; stage 5 started from it
    assert (out / "stage4_cpt" / "best" / "model.safetensors").is_file()
    final_cfg = json.loads((out / "stage5.done.json").read_text())["settings"]
    assert final_cfg["model"]["name_or_path"] == str(out / "stage4_cpt" / "best")
    assert final_cfg["task"]["data_root"] == str(setup / "data") and final_cfg["task"]["seed"] == 13
    assert summary["final"]["metrics"]["test_accuracy"] is not None
    assert summary["cpt"]["metrics"]["objective"] == "clm" and summary["pseudo_labels"]["summary"]["train"]


def test_a_trained_teacher_run_is_reused_not_retrained(setup):
    from posttrain.config import load_config
    from posttrain.engine import train

    teacher = setup / "teacher_run"
    train(load_config(setup / "prompt_ft.yaml", [f"task.data_root={setup / 'data'}", f"train.output_dir={teacher}"]))
    cfg = pcp.load_pipeline_config(setup / "pcp.yaml", [f"teacher_run={teacher}", "teacher_recipe=",
                                                               "final_recipe=prompt_ft.yaml"], method="pcp")
    pcp.run_pipeline(cfg, stages=[1, 2], log=lambda *_: None)
    out = setup / "out"
    assert not (out / "stage1_teacher").exists()
    marker = json.loads((out / "stage1.done.json").read_text())
    assert marker["outputs"]["model"] == str(teacher / "final")
    assert marker["settings"]["teacher_run"] == str(teacher.resolve())
    records = [json.loads(line) for line in (out / "stage2_pseudo_labels" / "predictions_train.jsonl").read_text()
               .splitlines()]
    probs = pcp.teacher_label_probs(teacher, get_task("SST-2"), records, progress=False)
    assert torch.allclose(probs, torch.tensor([r["probs"] for r in records]), atol=1e-5)

    with pytest.raises(ConfigError, match=r"teacher_run: .* was trained on k-shot seed 13, not 21"):
        pcp.run_pipeline(pcp.load_pipeline_config(setup / "pcp.yaml", [f"teacher_run={teacher}", "seed=21",
                                                                       f"output_dir={setup / 'o21'}"]),
                         stages=[1], log=lambda *_: None)
    with pytest.raises(ConfigError, match=r"teacher_run: .*nope/config.yaml is missing"):
        pcp.run_pipeline(pcp.load_pipeline_config(setup / "pcp.yaml", [f"teacher_run={setup / 'nope'}",
                                                                       f"output_dir={setup / 'o2'}"]),
                         stages=[1], log=lambda *_: None)
    with pytest.raises(ConfigError, match="teacher_run: TAPT has no teacher"):
        pcp.load_pipeline_config(setup / "pcp.yaml", [f"teacher_run={teacher}"], method="tapt")


def test_tapt_corpus_is_the_raw_pool_text(setup):
    (setup / "tapt.yaml").write_text((setup / "pcp.yaml").read_text().replace("teacher_recipe", "final_recipe"))
    cfg = pcp.load_pipeline_config(setup / "tapt.yaml", method="tapt")
    meta = pcp.stage_corpus(cfg, setup / "out")
    lines = (setup / "out" / "stage3_corpus" / "train.txt").read_text().splitlines()
    rows = pcp.pool_rows(cfg, get_task("SST-2"), "train")
    assert lines == [one_line(r["text_a"]) for r in rows] and len(lines) == 6
    assert meta["layout"] == "raw" and "It was" not in "".join(lines)
    assert pcp.parse_stages(None, "tapt") == [3, 4, 5]
    with pytest.raises(ConfigError, match="tapt has stages 3-5, not 1"):
        pcp.parse_stages("1-5", "tapt")


# ---------------------------------------------------------------------------------------------------------------
# stage mechanics, with stand-in stages that write a file (no training)


@pytest.fixture
def fake_stages(monkeypatch):
    ran = []

    def fake(n):
        def run(cfg, out):
            ran.append(n)
            (out / pcp.DIRS[n]).mkdir(parents=True, exist_ok=True)
            (out / pcp.DIRS[n] / "output.txt").write_text(str(len(ran)))
            return {"file": str(out / pcp.DIRS[n] / "output.txt")}
        return run

    monkeypatch.setattr(pcp, "RUNNERS", {n: fake(n) for n in range(1, 6)})
    return ran


def test_stage_skipping_redo_and_force(setup, fake_stages):
    cfg = pcp.load_pipeline_config(setup / "pcp.yaml", method="pcp")
    out = setup / "out"
    quiet = dict(log=lambda *_: None)
    pcp.run_pipeline(cfg, **quiet)
    assert fake_stages == [1, 2, 3, 4, 5]
    pcp.run_pipeline(cfg, **quiet)  # every stage has its marker: nothing runs
    assert fake_stages == [1, 2, 3, 4, 5]
    (out / "stage3.done.json").unlink()  # stage 3 was killed before finishing: it is redone, and so are 4 and 5
    pcp.run_pipeline(cfg, **quiet)
    assert fake_stages[5:] == [3, 4, 5]
    pcp.run_pipeline(cfg, stages=[2, 3, 4, 5], force=4, **quiet)
    assert fake_stages[8:] == [4, 5]
    # a later stage's directory is removed when an earlier stage runs (no stale checkpoints to resume from)
    (out / "stage5.done.json").unlink()
    pcp.run_pipeline(cfg, stages=[1, 2], force=2, **quiet)
    assert fake_stages[10:] == [2]
    assert not (out / pcp.DIRS[5]).exists() and not (out / "stage4.done.json").exists()
    with pytest.raises(ConfigError, match=r"stage 5 \(final\) needs stage 4 \(cpt\) done first"):
        pcp.run_pipeline(cfg, stages=[5], **quiet)
    # changed settings of a finished stage are an error, not a silent reuse
    changed = pcp.load_pipeline_config(setup / "pcp.yaml", ["max_pool_train=5"], method="pcp")
    with pytest.raises(ConfigError, match=r"stage 2 \(pseudo_labels\).*max_pool_train: 6 -> 5.*--force 2"):
        pcp.run_pipeline(changed, **quiet)
    # progress bars do not count as a setting
    pcp.run_pipeline(pcp.load_pipeline_config(setup / "pcp.yaml", ["cpt.progress=true"], method="pcp"), **quiet)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "pcp" and set(summary) >= {"teacher", "pseudo_labels", "corpus", "cpt", "final"}


def test_config_errors(setup, tmp_path):
    base = (setup / "pcp.yaml").read_text()
    with pytest.raises(ConfigError, match=r"unknown key 'cpt.max_stepz'; did you mean 'cpt.max_steps'"):
        pcp.load_pipeline_config(setup / "pcp.yaml", ["cpt.max_stepz=3"])
    with pytest.raises(ConfigError, match=r"pcp.yaml: cpt.mlm_probability: must be in \(0, 1\)"):
        pcp.load_pipeline_config(setup / "pcp.yaml", ["cpt.mlm_probability=2"])
    with pytest.raises(ConfigError, match=r"pcp.yaml: max_pool_train: expected an integer"):
        pcp.load_pipeline_config(setup / "pcp.yaml", ["max_pool_train=many"])
    with pytest.raises(ConfigError, match="teacher_recipe: required for PCP"):
        pcp.load_pipeline_config(setup / "pcp.yaml", ["teacher_recipe="])
    with pytest.raises(ConfigError, match="cpt.train_file: set by the pipeline"):
        pcp.load_pipeline_config(setup / "pcp.yaml", ["cpt.train_file=x.txt"])
    (tmp_path / "t.yaml").write_text("method: tapt\n" + base)
    with pytest.raises(ConfigError, match="method is tapt; run `posttrain tapt"):
        pcp.load_pipeline_config(tmp_path / "t.yaml", method="pcp")
    with pytest.raises(ConfigError, match="expected stage numbers"):
        pcp.parse_stages("one", "pcp")
    assert pcp.parse_stages("1,3-4", "pcp") == [1, 3, 4]
    cfg = pcp.load_pipeline_config(setup / "pcp.yaml", ["teacher_overrides=[train.max_stepz=3]"])
    with pytest.raises(ConfigError, match="teacher_recipe: .*train.max_stepz"):
        pcp.run_pipeline(cfg, log=lambda *_: None)


def test_register_adds_pcp_tapt_and_cpt(setup):
    parser = argparse.ArgumentParser(prog="posttrain")
    pcp_cli.register(parser.add_subparsers())
    args = parser.parse_args(["pcp", str(setup / "pcp.yaml"), "cpt.max_steps=3", "--stages", "1-3", "--force", "2"])
    assert args.config.endswith("pcp.yaml") and args.overrides == ["cpt.max_steps=3"]
    assert args.stages == "1-3" and args.force == 2 and callable(args.func)
    (setup / "tapt.yaml").write_text((setup / "pcp.yaml").read_text().replace("teacher_recipe", "final_recipe"))
    args = parser.parse_args(["tapt", str(setup / "tapt.yaml"), "--stages", "5"])
    with pytest.raises(ConfigError, match=r"needs stage 4 \(cpt\) done first"):
        args.func(args)  # runs as TAPT: stage 5 needs stage 4
    assert parser.parse_args(["cpt", "c.yaml", "--resume"]).resume


def test_a_verbalizer_teacher_pseudo_labels_with_its_own_scores(tmp_path, tiny_model_dir):
    """PCP Step 1 with a prompt-based FT teacher (task.objective=verbalizer): the pool's label distribution is the
    softmax of the teacher's verbalizer scores, the same the run's own scorer predicts with."""
    from test_classification import BAD, GOOD, TASK_YAML

    from posttrain.config import load_config
    from posttrain.engine import train
    from posttrain.generation import load_for_inference
    from posttrain.methods.objectives import unlabelled_scorer
    from posttrain.tasks import load_task_file

    (tmp_path / "data").mkdir()
    rows = [{"text": t, "label": "pos"} for t in GOOD] + [{"text": t, "label": "neg"} for t in BAD]
    (tmp_path / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * 4))
    (tmp_path / "task.yaml").write_text(TASK_YAML)
    cfg = load_config(None, [
        f"model.name_or_path={tiny_model_dir}", f"task.name={tmp_path / 'task.yaml'}", "task.train=files:train",
        "task.eval=", "task.test=", "data.max_length=32", "train.per_device_batch_size=8", "train.max_steps=12",
        "train.warmup_ratio=0", "train.progress=false", "task.form=template", "task.objective=verbalizer",
        "adapter.type=full", "train.learning_rate=1e-2", f"train.output_dir={tmp_path / 'teacher'}",
    ])
    train(cfg)
    task = load_task_file(tmp_path / "task.yaml")
    pool = [{"text_a": t, "text_b": None, "label": None, "idx": i} for i, t in enumerate(GOOD + BAD)]
    probs = pcp.teacher_label_probs(tmp_path / "teacher", task, pool, progress=False)
    assert probs.shape == (8, 2) and torch.allclose(probs.sum(-1), torch.ones(8))
    assert [task.labels[int(i)] for i in probs.argmax(-1)] == ["pos"] * 4 + ["neg"] * 4  # separable toy task
    model, tokenizer, _ = load_for_inference(str(tmp_path / "teacher"))
    direct = unlabelled_scorer(cfg, tokenizer, model, task, pool).label_scores(model).softmax(-1)
    torch.testing.assert_close(probs, direct, atol=1e-5, rtol=1e-5)


def test_settings_added_by_a_later_version_do_not_invalidate_a_stage():
    assert pcp._same_settings({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 2, "new": 3}, "other": 4})
    assert not pcp._same_settings({"a": 1}, {"a": 2})
    assert not pcp._same_settings({"a": 1, "gone": 0}, {"a": 1})
    assert "a: 1 -> 2" in pcp._first_difference({"a": 1, "b": 0}, {"a": 2, "b": 0, "new": 1})


def test_pcp_end_to_end_on_a_roberta_family_model(tmp_path):
    """The paper's own setting (Shi & Lipani 2023: RoBERTa): the teacher prompt-fine-tunes through the MLM head
    (verbalizer at <mask>), stage 4 continues pre-training with the masked-LM objective, stage 5 starts from it."""
    from tiny_models import save_tiny

    write_pcp_recipes(tmp_path, save_tiny("roberta", tmp_path / "roberta"),
                      "objective: verbalizer, label_tokens: first, ")
    summary = pcp.run_pipeline(pcp.load_pipeline_config(tmp_path / "pcp.yaml", method="pcp"), log=lambda *_: None)
    out = tmp_path / "out"
    assert json.loads((out / "stage1_teacher" / "run_meta.json").read_text())["model"]["class"] == \
        "RobertaForMaskedLM"
    lines = (out / "stage3_corpus" / "train.txt").read_text().splitlines()
    assert len(lines) == 6 and all(line.endswith((" It was great .", " It was terrible .")) for line in lines)
    assert summary["cpt"]["metrics"]["objective"] == "mlm"
    final_meta = json.loads((out / "stage5_final" / "run_meta.json").read_text())
    assert final_meta["model"]["class"] == "RobertaForMaskedLM"
    assert json.loads((out / "stage5.done.json").read_text())["settings"]["model"]["name_or_path"] == \
        str(out / "stage4_cpt" / "best")
    assert 0.0 <= summary["final"]["metrics"]["test_accuracy"] <= 1.0
