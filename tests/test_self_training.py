"""Self-training baselines (methods/self_training.py, run by pipelines/self_training.py): the mask and the loss against a hand computation, FixMatch's
target from the weak view and gradient from the strong view, the seeded unlabelled stream, config errors, and end-to-end
runs on a tiny model (CLI, metrics, resume == uninterrupted)."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
from safetensors.torch import load_file
from test_classification import BAD, GOOD, TASK_YAML

from posttrain.callbacks import StopAtStepCallback
from posttrain.errors import ConfigError
from posttrain.cli.self_training import register
from posttrain.methods.self_training import SelfTrainingConfig, UnlabelledStream, unlabelled_loss
from posttrain.pipelines.self_training import SelfTrainingTrainer, load_self_training_config, run_config, self_train
from posttrain.methods.text_augment import AugmentConfig

# ------------------------------------------------------------------------------------------ the loss by hand


def test_mask_pseudo_labels_and_loss_equal_a_hand_computation():
    weak = torch.tensor([[3.0, 0.0], [0.1, 0.0], [-4.0, 0.0], [0.0, 2.9]])
    strong = torch.tensor([[0.0, 1.0], [2.0, 2.0], [1.0, 0.0], [0.5, 0.5]])
    loss, mask, pseudo = unlabelled_loss(weak, strong, p_cutoff=0.95)
    # p_max = sigmoid(3) = 0.9526 (in), 0.525 (out), sigmoid(4) = 0.982 (in), sigmoid(2.9) = 0.9478 (out)
    assert mask.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert pseudo.tolist() == [0, 0, 1, 1]
    want = [math.log(1 + math.e), 0.0, math.log(1 + math.e), 0.0]  # -log softmax([0, 1])_0, ..., -log softmax([1, 0])_1
    torch.testing.assert_close(loss, torch.tensor(want))
    _, mask_low, _ = unlabelled_loss(weak, strong, p_cutoff=0.5)
    assert mask_low.tolist() == [1.0, 1.0, 1.0, 1.0]  # the threshold is >=, on max p
    soft, _, _ = unlabelled_loss(weak, strong, p_cutoff=0.95, hard_label=False, temperature=0.5)
    q = (weak[0] / 0.5).softmax(-1)  # sharpened target
    want0 = -(q * strong[0].log_softmax(-1)).sum()
    torch.testing.assert_close(soft, torch.stack([want0, torch.tensor(0.0), soft[2], torch.tensor(0.0)]))


def test_no_gradient_flows_into_the_pseudo_label():
    weak = torch.tensor([[3.0, 0.0], [-4.0, 0.0]], requires_grad=True)
    strong = torch.tensor([[0.0, 1.0], [1.0, 0.0]], requires_grad=True)
    loss, _, _ = unlabelled_loss(weak, strong, p_cutoff=0.9)
    loss.sum().backward()
    assert weak.grad is None and strong.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------ the trainer's loss


class Stub(torch.nn.Module):
    """Scores s = feat * w: enough to see which input the loss and its gradient come from."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))


class FixedStream:
    batch_size = 2

    def __init__(self, weak, strong, gold):
        self.weak, self.strong, self.gold = weak, strong, gold
        self.asked = []

    def batch(self, m):
        self.asked.append(m)
        return {"index": [0, 1], "gold": torch.tensor(self.gold), "weak": {"feat": self.weak, "view": "weak"},
                "strong": {"feat": self.strong, "view": "strong"}}


def _stub_trainer(tmp_path, algorithm, stream, calls, **st):
    from transformers import TrainingArguments

    def scores(model, batch):
        calls.append((batch.get("view", "labelled"), torch.is_grad_enabled()))
        return batch["feat"] * model.w

    def example_loss(model, batch):
        return torch.nn.functional.cross_entropy(scores(model, batch), batch["label"], reduction="none")

    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", gradient_accumulation_steps=2)
    cfg = SelfTrainingConfig(recipe="x.yaml", algorithm=algorithm, p_cutoff=0.9, **st)
    trainer = SelfTrainingTrainer(model=Stub(), args=args, example_loss=example_loss, stream=stream, scores=scores,
                                  st=cfg)
    return trainer


@pytest.mark.parametrize("algorithm", ["fixmatch", "pseudo_label"])
def test_trainer_loss_targets_and_gradients(tmp_path, algorithm):
    weak = torch.tensor([[4.0, 0.0], [0.2, 0.0]])      # p_max 0.982 -> pseudo-label 0, in; 0.55 -> out
    strong = torch.tensor([[0.0, 3.0], [0.0, 5.0]])    # the strong view disagrees with the weak one
    stream, calls = FixedStream(weak, strong, gold=[0, -1]), []
    trainer = _stub_trainer(tmp_path, algorithm, stream, calls, lambda_u=2.0)
    model = trainer.model.train()
    labelled = {"feat": torch.tensor([[1.0, 0.0], [0.0, 2.0]]), "label": torch.tensor([1, 1]),
                "loss_normalizer": torch.tensor(2.0)}
    loss = trainer.compute_loss(model, dict(labelled), num_items_in_batch=torch.tensor(4.0))
    loss.backward()

    w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))  # the same loss written out by hand
    sup = torch.nn.functional.cross_entropy(labelled["feat"] * w, labelled["label"])
    trained = strong if algorithm == "fixmatch" else weak
    unsup = torch.stack([-(trained[0] * w).log_softmax(-1)[0], torch.tensor(0.0)]).mean()  # target 0 from weak
    want = 2 / 4 * (sup + 2.0 * unsup)  # this micro-batch is 2 of the step's 4 labelled examples
    want.backward()
    torch.testing.assert_close(loss.detach(), want.detach())
    torch.testing.assert_close(model.w.grad, w.grad)
    if algorithm == "fixmatch":  # the weak view is scored without gradient, the strong one with
        assert calls == [("labelled", True), ("weak", False), ("strong", True)]
    else:
        assert calls == [("labelled", True), ("weak", True)]
    stats = trainer.summary(trainer.window)
    assert stats["mask_ratio"] == 0.5 and stats["pseudo_label_acc"] == 1.0 and stats["pseudo_label_acc_masked"] == 1.0
    trainer.compute_loss(model, dict(labelled), num_items_in_batch=torch.tensor(4.0))  # 2nd micro-batch, same step
    trainer.state.global_step = 1
    trainer.compute_loss(model, dict(labelled), num_items_in_batch=torch.tensor(4.0))
    assert stream.asked == [0, 1, 2]  # micro-step = global_step * grad_accum + micro index


def test_unsup_warmup_ramps_lambda(tmp_path):
    trainer = _stub_trainer(tmp_path, "pseudo_label", FixedStream(None, None, []), [], unsup_warmup=0.5)
    trainer.state.max_steps = 100
    trainer.state.global_step = 25
    assert trainer.lambda_u() == 0.5
    trainer.state.global_step = 80
    assert trainer.lambda_u() == 1.0


# ------------------------------------------------------------------------------------------ the stream


def test_stream_is_a_seeded_pure_function_of_the_micro_step():
    examples = [{"text_a": f"word{i} a b c d e f g h", "idx": i} for i in range(10)]
    make = lambda seed: UnlabelledStream(  # noqa: E731
        examples, list(range(10)), batch_size=4, seed=seed, augment=AugmentConfig(strong_swap=0.5), strong=True,
        encode=lambda rows: rows, collate=lambda rows: {"rows": rows})
    a, b = make(1), make(1)
    assert a.batch(7)["index"] == make(1).batch(7)["index"]
    b.batch(3)  # another position first: no hidden state
    x, y = a.batch(2), b.batch(2)
    assert x["index"] == y["index"] and x["gold"].tolist() == y["gold"].tolist() and x["strong"] == y["strong"]
    first_pass = [i for m in range(2) for i in a.batch(m)["index"]] + a.batch(2)["index"][:2]
    assert sorted(first_pass) == list(range(10))  # every example once per pass
    assert first_pass != list(range(10)) and first_pass != [i for m in range(3) for i in make(2).batch(m)["index"]][:10]
    batch = a.batch(0)
    assert batch["gold"].tolist() == batch["index"]
    weak, strong = batch["weak"]["rows"], batch["strong"]["rows"]
    assert [r["text_a"] for r in weak] == [examples[i]["text_a"] for i in batch["index"]]  # identity weak view
    assert [r["text_a"] for r in strong] != [r["text_a"] for r in weak]
    assert [e for _, e in a.positions(2)] == [0, 0, 1, 1]


# ------------------------------------------------------------------------------------------ config


def _write(path, text):
    path.write_text(text)
    return path


def test_config_errors_name_file_and_key(tmp_path):
    recipe = _write(tmp_path / "recipe.yaml", "task: {name: SST-2, objective: verbalizer}\n")
    bad = _write(tmp_path / "st.yaml", "recipe: recipe.yaml\np_cutof: 0.9\n")
    with pytest.raises(ConfigError, match=r"st.yaml: unknown key 'p_cutof'; did you mean 'p_cutoff'\?"):
        load_self_training_config(bad)
    bad.write_text("recipe: recipe.yaml\naugment: {strong_swap: 1.5}\n")
    with pytest.raises(ConfigError, match=r"st.yaml: augment.strong_swap: must be in \[0, 1\)"):
        load_self_training_config(bad)
    bad.write_text("recipe: recipe.yaml\nalgorithm: mixmatch\n")
    with pytest.raises(ConfigError, match=r"st.yaml: algorithm: expected one of pseudo_label, fixmatch"):
        load_self_training_config(bad)
    good = _write(tmp_path / "ok.yaml", "recipe: recipe.yaml\noverrides: [train.max_steps=3]\n")
    st = load_self_training_config(good, ["p_cutoff=0.8", "train.seed=5", "augment.strong_swap=0.3"])
    assert st.recipe == str(tmp_path / "recipe.yaml")  # relative to the config's folder
    assert st.p_cutoff == 0.8 and st.augment.strong_swap == 0.3 and st.overrides == ["train.max_steps=3",
                                                                                      "train.seed=5"]
    cfg = run_config(st)
    assert cfg.train.max_steps == 3 and cfg.train.seed == 5
    with pytest.raises(ConfigError, match="p_cutoff: must be in"):
        load_self_training_config(good, ["p_cutoff=1.5"])
    recipe.write_text("task: {name: SST-2}\n")
    with pytest.raises(ConfigError, match="task.objective is lm; self-training needs a label-scoring objective"):
        run_config(load_self_training_config(good))
    recipe.write_text("task: {name: STS-B, objective: verbalizer}\n")
    with pytest.raises(ConfigError, match="regression task"):
        run_config(load_self_training_config(good))


# ------------------------------------------------------------------------------------------ end to end


@pytest.fixture
def toy(tmp_path, tiny_model_dir):
    (tmp_path / "data").mkdir()
    rows = [{"text": t, "label": "pos"} for t in GOOD] + [{"text": t, "label": "neg"} for t in BAD]
    for split, n in (("train", 2), ("dev", 1), ("test", 1), ("pool", 4)):
        (tmp_path / "data" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * n))
    task = _write(tmp_path / "task.yaml", TASK_YAML.replace("dev: dev.jsonl,", "dev: dev.jsonl, pool: pool.jsonl,"))
    recipe = _write(tmp_path / "recipe.yaml", f"""
model: {{name_or_path: {tiny_model_dir}}}
task: {{name: {task}, objective: verbalizer, form: template, train: files:train, eval: files:dev, test: files:test}}
data: {{max_length: 32}}
train: {{per_device_batch_size: 4, max_steps: 8, warmup_ratio: 0, learning_rate: 1.0e-2, eval_steps: 4,
         logging_steps: 2, save_steps: 4, progress: false}}
""")
    return _write(tmp_path / "st.yaml", f"recipe: {recipe}\nunlabeled: files:pool\np_cutoff: 0.6\n"
                  "augment: {strong_deletion: 0.2, strong_swap: 0.2}\n")


def test_cli_runs_fixmatch_end_to_end(tmp_path, toy, capsys):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["self-train", str(toy), f"output_dir={tmp_path / 'run'}", "train.max_steps=12"])
    assert args.func(args) == 0
    assert "test_accuracy=" in capsys.readouterr().out
    run = tmp_path / "run"
    for name in ("config.yaml", "self_training.yaml", "run_meta.json", "metrics.jsonl", "loss_curve.png",
                 "self_training.png", "final_metrics.json", "final"):
        assert (run / name).exists(), name
    meta = json.loads((run / "run_meta.json").read_text())
    assert meta["self_training"]["algorithm"] == "fixmatch" and meta["self_training"]["unlabelled_examples"] == 32
    logs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_logs = [r for r in logs if "loss" in r]
    assert [r["step"] for r in train_logs] == [2, 4, 6, 8, 10, 12]
    assert all(0.0 <= r["mask_ratio"] <= 1.0 and "unsup_loss" in r and "sup_loss" in r for r in train_logs)
    assert train_logs[0]["mask_ratio"] < train_logs[-1]["mask_ratio"]  # confidence grows as the model learns
    assert train_logs[-1]["pseudo_label_acc_masked"] >= 0.75
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["test_accuracy"] >= 0.75 and 0 < final["train_mask_ratio"] <= 1


def test_resume_equals_uninterrupted(tmp_path, toy):
    def cfg(name):
        return load_self_training_config(toy, [f"output_dir={tmp_path / name}", "algorithm=fixmatch",
                                               "train.eval_steps=0", "task.test=", "train.max_steps=4",
                                               "train.save_steps=2", "train.logging_steps=1"])

    self_train(cfg("full"))
    self_train(cfg("cut"), callbacks=[StopAtStepCallback(2)])
    assert not (tmp_path / "cut" / "final").exists()
    with pytest.raises(ConfigError, match="p_cutoff was 0.6"):
        self_train(load_self_training_config(toy, [f"output_dir={tmp_path / 'cut'}", "p_cutoff=0.7",
                                                   "train.eval_steps=0", "task.test=", "train.max_steps=4",
                                                   "train.save_steps=2"]), resume=True)
    final = self_train(cfg("cut"), resume=True)
    assert final["global_step"] == 4
    a = load_file(str(tmp_path / "full" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "final" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    full = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    cut = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    pick = lambda logs: [(r["step"], r["mask_ratio"], r["unsup_loss"]) for r in logs if "mask_ratio" in r]  # noqa
    assert len(pick(full)) == 4 and pick(full) == pick(cut)  # the same unlabelled batches and views after resume
