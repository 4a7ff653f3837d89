"""Crash safety: ``posttrain train`` killed with SIGKILL at random moments (seeded) after its first checkpoint leaves
only complete checkpoints; ``--resume`` then ends with the same weights as an uninterrupted run and a
``metrics.jsonl`` without duplicate steps. Staging directories of a killed save are never taken for checkpoints."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from posttrain.config import load_config
from posttrain.engine import complete_checkpoints, last_checkpoint, train
from posttrain.errors import ConfigError

ROWS = [
    {"messages": [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}]},
    {"messages": [{"role": "user", "content": "Write a poem about the sea."},
                  {"role": "assistant", "content": "The sea is wide and blue."}]},
    {"messages": [{"role": "user", "content": "Translate to French: good morning."}, {"role": "assistant", "content": "Bonjour."}]},
    {"messages": [{"role": "user", "content": "Summarize the text below in one sentence, please."},
                  {"role": "assistant", "content": "The quick brown fox jumps over the lazy dog."}]},
] * 3
STEPS = 12
TRIALS = 3


def _overrides(tmp_path, model_dir, name):
    return [
        f"model.name_or_path={model_dir}", f"data.train_file={tmp_path / 'train.jsonl'}", "data.max_length=48",
        "train.per_device_batch_size=4", f"train.max_steps={STEPS}", "train.learning_rate=1e-2",
        "train.warmup_ratio=0.1", "train.logging_steps=1", "train.save_steps=1", "train.save_total_limit=2",
        "train.progress=false", f"train.output_dir={tmp_path / name}",
    ]


def _train_one_thread(cfg, **kwargs):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the killed subprocesses (OMP_NUM_THREADS=1): the same float summation order
    try:
        return train(cfg, **kwargs)
    finally:
        torch.set_num_threads(threads)


def _assert_checkpoints_complete(run_dir):
    """Every checkpoint-N directory present after a kill is whole: its files all load."""
    folder = run_dir / "checkpoints"
    for path in folder.iterdir() if folder.is_dir() else []:
        if path.name.startswith("checkpoint-"):
            assert (path / "trainer_state.json").is_file(), path
            json.loads((path / "trainer_state.json").read_text())
            load_file(str(path / "model.safetensors"))
            torch.load(path / "optimizer.pt", weights_only=True)
            torch.load(path / "scheduler.pt", weights_only=True)


def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(tmp_path, tiny_model_dir):
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (tmp_path / "base.yaml").write_text("{}\n")
    start = time.monotonic()
    _train_one_thread(load_config(None, _overrides(tmp_path, tiny_model_dir, "full")))
    window = max(time.monotonic() - start, 1.0)  # about one training run: kills land anywhere in it
    reference = load_file(str(tmp_path / "full" / "final" / "model.safetensors"))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    rng = random.Random(7)
    trials = []
    for i in range(TRIALS):  # the trials run side by side, each killed at its own random moment
        cmd = [sys.executable, "-m", "posttrain", "train", str(tmp_path / "base.yaml"),
               *_overrides(tmp_path, tiny_model_dir, f"cut{i}")]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        trials.append({"run": tmp_path / f"cut{i}", "proc": proc, "delay": rng.uniform(0.0, 0.6 * window), "kill_at": None})
    deadline = time.monotonic() + 400
    while any(t["proc"].poll() is None for t in trials) and time.monotonic() < deadline:
        now = time.monotonic()
        for t in trials:
            if t["proc"].poll() is not None:
                continue
            if t["kill_at"] is None and last_checkpoint(t["run"]) is not None:
                t["kill_at"] = now + t["delay"]  # a random moment after the first complete checkpoint
            if t["kill_at"] is not None and now >= t["kill_at"]:
                t["proc"].send_signal(signal.SIGKILL)
                t["proc"].wait()
        time.sleep(0.005)
    killed_mid_run = 0
    for t in trials:
        if t["proc"].poll() is None:
            t["proc"].kill()
        t["proc"].wait()
        assert t["proc"].returncode in (0, -signal.SIGKILL), t["proc"].stderr.read().decode()[-2000:]
        t["proc"].stderr.close()
        _assert_checkpoints_complete(t["run"])
        resumed_from = last_checkpoint(t["run"])
        assert resumed_from is not None
        if t["proc"].returncode == -signal.SIGKILL and not (t["run"] / "final").exists():
            killed_mid_run += 1
        _train_one_thread(load_config(None, _overrides(tmp_path, tiny_model_dir, t["run"].name)), resume=True)
        weights = load_file(str(t["run"] / "final" / "model.safetensors"))
        assert weights.keys() == reference.keys()
        for key in reference:
            assert torch.allclose(weights[key], reference[key], atol=1e-6, rtol=0), (t["run"].name, resumed_from, key)
        steps = [json.loads(line)["step"] for line in (t["run"] / "metrics.jsonl").read_text().splitlines()
                 if "loss" in json.loads(line)]
        assert steps == list(range(1, STEPS + 1)), (t["run"].name, resumed_from, steps)
        assert len(complete_checkpoints(t["run"])) <= 2  # train.save_total_limit still applies
        assert not [p for p in t["run"].rglob(".tmp-*")]
    assert killed_mid_run >= 1, "no trial was killed before it finished: the kill window is too long"


def test_staging_and_incomplete_directories_are_not_checkpoints(tmp_path):
    ckpts = tmp_path / "run" / "checkpoints"
    (ckpts / "checkpoint-2").mkdir(parents=True)
    (ckpts / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (ckpts / ".tmp-checkpoint-4" / "checkpoint-4").mkdir(parents=True)  # a save killed half-way
    (ckpts / ".tmp-checkpoint-4" / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (ckpts / "checkpoint-3").mkdir()  # written by a version without staging, killed before trainer_state.json
    (ckpts / "checkpoint-5").mkdir()  # transformers' JIT checkpoint marker
    (ckpts / "checkpoint-5" / "trainer_state.json").write_text("{}")
    (ckpts / "checkpoint-5" / "checkpoint-is-incomplete.txt").write_text("")
    assert last_checkpoint(tmp_path / "run") == ckpts / "checkpoint-2"
    assert complete_checkpoints(tmp_path / "run") == [ckpts / "checkpoint-2"]
    assert last_checkpoint(tmp_path / "nothing") is None


def test_a_run_killed_before_its_first_checkpoint_can_start_again(tmp_path, tiny_model_dir):
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[:4]))
    overrides = _overrides(tmp_path, tiny_model_dir, "run")[:-1] + [f"train.output_dir={tmp_path / 'run'}",
                                                                    "train.max_steps=1"]
    staging = tmp_path / "run" / "checkpoints" / ".tmp-checkpoint-1" / "checkpoint-1"
    staging.mkdir(parents=True)
    (staging / "model.safetensors").write_bytes(b"truncated")
    (tmp_path / "run" / ".tmp-final").mkdir()
    (tmp_path / "run" / ".metrics.jsonl.k1ll3d.tmp").write_text('{"step": 1')  # an atomic write killed mid-way
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(load_config(None, overrides), resume=True)
    train(load_config(None, overrides))  # not refused as "already holds checkpoints"
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-1" / "trainer_state.json").is_file()
    assert not [p for p in (tmp_path / "run").rglob(".tmp-*")]
    assert not [p for p in (tmp_path / "run").glob(".*.tmp")]


@pytest.mark.parametrize("damaged_file", ["model.safetensors", "optimizer.pt"])
def test_resume_skips_a_damaged_last_checkpoint(tmp_path, tiny_model_dir, capsys, damaged_file):
    """A last checkpoint cut short (a full disk, a copy interrupted) is skipped with a one-line warning; the run
    resumes from the checkpoint before it and ends with the weights of an uninterrupted run."""
    from posttrain.callbacks import StopAtStepCallback

    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    short = ["train.max_steps=4"]
    _train_one_thread(load_config(None, _overrides(tmp_path, tiny_model_dir, "whole") + short))
    reference = load_file(str(tmp_path / "whole" / "final" / "model.safetensors"))
    cut = load_config(None, _overrides(tmp_path, tiny_model_dir, "cut") + short)
    _train_one_thread(cut, callbacks=[StopAtStepCallback(3)])
    checkpoints = tmp_path / "cut" / "checkpoints"
    target = checkpoints / "checkpoint-3" / damaged_file
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    capsys.readouterr()
    assert last_checkpoint(tmp_path / "cut") == checkpoints / "checkpoint-2"
    assert f"skipping damaged checkpoint {checkpoints / 'checkpoint-3'} ({damaged_file}" in capsys.readouterr().err
    _train_one_thread(cut, resume=True)
    weights = load_file(str(tmp_path / "cut" / "final" / "model.safetensors"))
    for key in reference:
        assert torch.allclose(weights[key], reference[key], atol=1e-6, rtol=0), key
