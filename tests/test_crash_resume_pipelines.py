"""Crash safety of the multi-run pipelines (issue 7): ``posttrain pcp`` and ``posttrain grid`` killed with SIGKILL at
seeded random moments, then run again with the same command until they finish, end with the same artefacts as an
uninterrupted run: stage outputs (weights within 1e-6, JSONL and corpora byte for byte, final metrics), grid tables
and cell metrics, which weights a grid keeps, and no staging (``.tmp-*``) or half-written files.

The killed runs are subprocesses with one thread (OMP_NUM_THREADS=1), at most two alive at a time; the uninterrupted
reference and the re-runs go through the same CLI entry point in this process with ``torch.set_num_threads(1)``, so
every run sums floats in the same order. Two kill points that random kills rarely hit are reproduced exactly: what a
continued pre-training stage killed while saving or rotating leaves, and a grid killed after its last cell finished
but before it pruned the weights keep_weights drops."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from posttrain.cli import main as cli_main
from posttrain.engine import complete_checkpoints, last_checkpoint
from test_grid import BAD, GOOD, TASK_YAML
from test_pcp import NEG, POS, write_sst2_data

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
       "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "HF_DATASETS_OFFLINE": "1"}
MAX_ALIVE = 2  # killed subprocesses alive at once
# metrics that depend on the clock, or on how many steps the last process ran: transformers' train_loss is the mean
# loss of the steps trained since the process started (a run resumed at its last step reports 0.0)
VOLATILE = ("train_loss", "_runtime", "_per_second", "seconds", "started")


# ---------------------------------------------------------------------------------------------------------------
# helpers


@contextlib.contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the killed subprocesses (OMP_NUM_THREADS=1): the same float summation order
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _run_here(folder: Path, argv: list[str]) -> None:
    """``posttrain ARGV`` in this process, with ``folder`` as the working directory, to completion."""
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with _one_thread():
            assert cli_main(argv) == 0, (folder, argv)
    finally:
        os.chdir(cwd)


def _kill_trials(trials: list[dict], logs: Path, deadline_s: float = 900.0) -> None:
    """Start each trial's ``posttrain`` subprocess (at most MAX_ALIVE at once) and SIGKILL it ``delay`` seconds after
    its ``trigger()`` first holds (or let it finish). Sets ``returncode`` and ``killed`` on every trial. The deadline
    only catches a hung run (generous: a busy 2-core machine runs these several times slower)."""
    pending, alive = list(trials), []
    deadline = time.monotonic() + deadline_s
    while pending or alive:
        while pending and len(alive) < MAX_ALIVE:
            t = pending.pop(0)
            t["log"] = logs / f"{t['dir'].name}.log"
            with open(t["log"], "wb") as handle:
                t["proc"] = subprocess.Popen([sys.executable, "-m", "posttrain", *t["argv"]], cwd=t["dir"], env=ENV,
                                             stdout=handle, stderr=subprocess.STDOUT)
            t["kill_at"] = None
            alive.append(t)
        now = time.monotonic()
        for t in list(alive):
            if t["proc"].poll() is None and now > deadline:
                t["proc"].kill()
            if t["proc"].poll() is not None:
                alive.remove(t)
                continue
            if t["kill_at"] is None and t["trigger"]():
                t["kill_at"] = now + t["delay"]
            if t["kill_at"] is not None and now >= t["kill_at"]:
                t["proc"].send_signal(signal.SIGKILL)
                t["proc"].wait()
        time.sleep(0.005)
    for t in trials:
        t["returncode"] = t["proc"].returncode
        t["killed"] = t["returncode"] == -signal.SIGKILL
        assert t["returncode"] in (0, -signal.SIGKILL), (t["dir"].name, t["log"].read_text()[-3000:])
    assert time.monotonic() <= deadline, "the killed runs did not finish in time"


def _weights(path: Path) -> dict:
    return load_file(str(path))


def _assert_same_weights(path: Path, ref_path: Path, what) -> None:
    got, want = _weights(path), _weights(ref_path)
    assert got.keys() == want.keys(), what
    for key in want:
        assert torch.allclose(got[key], want[key], atol=1e-6, rtol=0), (what, key)


def _stable(value):
    """``value`` without the VOLATILE keys, at any depth."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if not any(part in k for part in VOLATILE)}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _assert_close(got, want, what) -> None:
    """Equal, floats within a relative 1e-6, at any depth."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), (what, got, want)
        for key in want:
            _assert_close(got[key], want[key], (what, key))
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (what, got, want)
        for i, (a, b) in enumerate(zip(got, want)):
            _assert_close(a, b, (what, i))
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-6, abs=1e-9), (what, got, want)
    else:
        assert got == want, (what, got, want)


def _assert_same_metrics(path: Path, ref_path: Path, what) -> None:
    _assert_close(_stable(json.loads(path.read_text())), _stable(json.loads(ref_path.read_text())), what)


def _train_steps(run_dir: Path) -> list[int]:
    """Steps of the training-loss records in ``metrics.jsonl``: each step once, in order, after any resume."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if "loss" in r]


def _assert_no_leftovers(folder: Path) -> None:
    """No staging directory (``.tmp-*``) anywhere; every checkpoint is complete and every JSON file parses."""
    assert not sorted(folder.rglob(".tmp-*")), sorted(folder.rglob(".tmp-*"))
    for ckpts in folder.rglob("checkpoints"):
        for path in ckpts.iterdir():
            assert path in complete_checkpoints(ckpts.parent), path  # nothing but complete checkpoint-N folders
            load_file(str(path / "model.safetensors"))
            torch.load(path / "optimizer.pt", weights_only=True)
    for path in folder.rglob("*.json"):
        json.loads(path.read_text())
    for path in folder.rglob("*.jsonl"):
        [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------------------------------
# PCP: teacher -> pseudo-labels -> templated corpus -> continued pre-training -> final prompt-FT

STAGE_DIRS = ["stage1_teacher", "stage2_pseudo_labels", "stage3_corpus", "stage4_cpt", "stage5_final"]




def _pcp_folder(folder: Path, model_dir, data_root: Path) -> Path:
    """pcp.yaml + the prompt-FT recipe (teacher and final), with relative output paths: every trial has the same
    files and markers. Every stage checkpoints each step; evaluations keep the best weights (teacher, final: best dev
    accuracy; CPT: lowest held-out loss, which a high constant learning rate puts before the last step)."""
    folder.mkdir()
    (folder / "prompt_ft.yaml").write_text(
        f"model: {{name_or_path: '{model_dir}'}}\n"
        "task: {name: SST-2, form: template, train: 'kshot:train', eval: 'kshot:dev', test: 'kshot:test'}\n"
        "data: {max_length: 64}\n"
        "train: {max_steps: 3, per_device_batch_size: 4, learning_rate: 1.0e-2, warmup_ratio: 0, save_steps: 1, "
        "save_total_limit: 2, logging_steps: 1, eval_steps: 2, best_metric: accuracy, progress: false}\n")
    (folder / "pcp.yaml").write_text(
        f"task: SST-2\ndata_root: '{data_root}'\noutput_dir: out\nteacher_recipe: prompt_ft.yaml\nmax_pool_train: 6\n"
        "cpt: {max_steps: 3, eval_steps: 1, per_device_batch_size: 2, gradient_accumulation_steps: 1, "
        "learning_rate: 0.2, lr_scheduler: constant, warmup_ratio: 0, logging_steps: 1, save_total_limit: 2, "
        "max_length: 64, progress: false}\n")
    return folder


def _mid_stage(out: Path) -> bool:
    """A training stage was cut: it has a checkpoint but no done marker."""
    return any(last_checkpoint(out / STAGE_DIRS[n - 1]) is not None and not (out / f"stage{n}.done.json").is_file()
               for n in (1, 4, 5))


def _assert_pcp_equal(out: Path, ref: Path, what) -> None:
    for n in range(1, 6):
        assert (out / f"stage{n}.done.json").is_file(), (what, n)
    # stage 1: the teacher's weights and metrics
    _assert_same_weights(out / "stage1_teacher/final/model.safetensors", ref / "stage1_teacher/final/model.safetensors",
                         (what, "teacher"))
    _assert_same_metrics(out / "stage1_teacher/final_metrics.json", ref / "stage1_teacher/final_metrics.json", what)
    # stages 2-3: pseudo-labels and the templated corpus, byte for byte
    for name in ("stage2_pseudo_labels/predictions_train.jsonl", "stage2_pseudo_labels/predictions_dev.jsonl",
                 "stage2_pseudo_labels/summary.json", "stage3_corpus/train.txt", "stage3_corpus/dev.txt",
                 "stage3_corpus/corpus_meta.json"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), (what, name)
    # stage 4: the best CPT checkpoint (the one chosen by held-out loss) and its metrics
    _assert_same_weights(out / "stage4_cpt/best/model.safetensors", ref / "stage4_cpt/best/model.safetensors",
                         (what, "cpt best"))
    _assert_same_metrics(out / "stage4_cpt/final_metrics.json", ref / "stage4_cpt/final_metrics.json", what)
    # stage 5: the final prompt-FT run from stage 4's best checkpoint
    _assert_same_weights(out / "stage5_final/final/model.safetensors", ref / "stage5_final/final/model.safetensors",
                         (what, "final"))
    _assert_same_metrics(out / "stage5_final/final_metrics.json", ref / "stage5_final/final_metrics.json", what)
    for name in ("stage1_teacher", "stage4_cpt", "stage5_final"):
        assert _train_steps(out / name) == _train_steps(ref / name), (what, name)
    _assert_same_metrics(out / "summary.json", ref / "summary.json", (what, "summary.json"))
    _assert_no_leftovers(out)


def test_pcp_killed_at_random_moments_then_rerun_equals_uninterrupted(tmp_path, tiny_model_dir):
    data_root = write_sst2_data(tmp_path / "data")
    ref_dir = _pcp_folder(tmp_path / "reference", tiny_model_dir, data_root)
    _run_here(ref_dir, ["pcp", "pcp.yaml"])
    ref = ref_dir / "out"
    seconds = {n: json.loads((ref / f"stage{n}.done.json").read_text())["seconds"] for n in range(1, 6)}
    cpt = json.loads((ref / "stage4_cpt/final_metrics.json").read_text())
    assert 0 < cpt["best_step"] < cpt["global_step"]  # the best CPT weights are not the last ones

    rng = random.Random(7)
    folders = [_pcp_folder(tmp_path / f"cut{i}", tiny_model_dir, data_root) for i in range(3)]
    out = [f / "out" for f in folders]
    trials = [  # cut 0 during the teacher, cut 1 during continued pre-training, cut 2 anywhere in the pipeline
        {"dir": folders[0], "trigger": lambda: last_checkpoint(out[0] / "stage1_teacher") is not None,
         "delay": rng.uniform(0.0, 0.3 * seconds[1])},
        {"dir": folders[1], "trigger": lambda: last_checkpoint(out[1] / "stage4_cpt") is not None,
         "delay": rng.uniform(0.0, 0.3 * seconds[4])},
        {"dir": folders[2], "trigger": lambda: (out[2] / "pipeline_config.yaml").is_file(),
         "delay": rng.uniform(0.0, 1.2 * sum(seconds.values()))},
    ]
    for t in trials:
        t["argv"] = ["pcp", "pcp.yaml"]
    (tmp_path / "logs").mkdir()
    _kill_trials(trials, tmp_path / "logs")
    killed_mid_stage = cut_short = 0
    for t in trials:
        folder = t["dir"]
        t["mid_stage"] = _mid_stage(folder / "out")
        killed_mid_stage += t["killed"] and t["mid_stage"]
        cut_short += t["killed"] and not (folder / "out" / "stage5.done.json").is_file()
        if t["killed"]:  # the same command again; it runs to the end (exit status 0) as nothing kills it here
            _run_here(folder, ["pcp", "pcp.yaml"])
        _assert_pcp_equal(folder / "out", ref, (folder.name, t["killed"], t["mid_stage"]))
    assert cut_short >= 1, "no trial was killed before it finished"
    assert killed_mid_stage >= 1, "no kill landed inside a training stage"


def test_a_cpt_stage_killed_while_writing_leaves_no_staging_behind(tmp_path, tiny_model_dir):
    """What a kill during continued pre-training can leave besides complete checkpoints (a staged checkpoint, a
    checkpoint renamed away by the rotation but not yet deleted, a staged or moved-aside best/) is removed when the
    stage runs again, and the stage still ends with an uninterrupted run's best weights."""
    from posttrain.callbacks import StopAtStepCallback
    from posttrain.pipelines.continued_pretraining import ContinuedPretrainingConfig, continued_pretraining

    (tmp_path / "train.txt").write_text("".join(f"{t} It was great .\n" for t in POS + NEG))
    (tmp_path / "dev.txt").write_text("".join(f"{t} It was terrible .\n" for t in POS[:2]))

    def cfg(name):
        return ContinuedPretrainingConfig(
            model=str(tiny_model_dir), train_file=str(tmp_path / "train.txt"), eval_file=str(tmp_path / "dev.txt"),
            output_dir=str(tmp_path / name), max_steps=3, eval_steps=1, per_device_batch_size=4,
            gradient_accumulation_steps=1, learning_rate=0.2, lr_scheduler="constant", warmup_ratio=0.0,
            save_total_limit=1, max_length=32, progress=False)

    with _one_thread():
        continued_pretraining(cfg("full"))
        continued_pretraining(cfg("cut"), callbacks=[StopAtStepCallback(2)])
        run = tmp_path / "cut"
        for leftover in ("checkpoints/.tmp-checkpoint-3/checkpoint-3", "checkpoints/.tmp-deleted-checkpoint-1",
                         ".tmp-best", ".tmp-old-best"):
            (run / leftover).mkdir(parents=True)
            (run / leftover / "model.safetensors").write_bytes(b"truncated")
        continued_pretraining(cfg("cut"))
    _assert_same_weights(run / "best/model.safetensors", tmp_path / "full/best/model.safetensors", "cpt best")
    got = json.loads((run / "final_metrics.json").read_text().replace(str(run), str(tmp_path / "full")))
    _assert_close(_stable(got), _stable(json.loads((tmp_path / "full/final_metrics.json").read_text())), "cpt")
    _assert_no_leftovers(run)


# ---------------------------------------------------------------------------------------------------------------
# the few-shot grid: cells = seeds x learning rates, best dev cell per seed, test mean ± std

GRID = {"output_dir": "out", "recipes": {"full": "full.yaml"}, "tasks": ["task.yaml"], "seeds": [1, 2],
        "axes": {"train.learning_rate": [0.05, 0.001]}}
CELLS = [f"out/full/toy-kshot/seed{s}/lr{lr}" for s in (1, 2) for lr in ("0.05", "0.001")]


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _grid_folder(folder: Path, model_dir) -> Path:
    """A two-seed toy task, a full fine-tuning recipe that checkpoints every step and evaluates every step (so the
    grid keeps the best dev weights), and a 2 seeds x 2 learning rates grid with relative paths."""
    rows = [{"text": t, "label": "pos"} for t in GOOD] + [{"text": t, "label": "neg"} for t in BAD]
    for seed in (1, 2):
        _jsonl(folder / "data" / f"16-{seed}" / "train.jsonl", rows)
        _jsonl(folder / "data" / f"16-{seed}" / "dev.jsonl", rows[seed - 1::2])
    _jsonl(folder / "data" / "test.jsonl", rows)
    (folder / "task.yaml").write_text(TASK_YAML)
    recipe = {"model": {"name_or_path": str(model_dir)}, "data": {"max_length": 32}, "adapter": {"type": "full"},
              "train": {"per_device_batch_size": 4, "max_steps": 3, "warmup_ratio": 0, "progress": False,
                        "logging_steps": 1, "save_steps": 1, "save_total_limit": 2, "eval_steps": 1}}
    (folder / "full.yaml").write_text(yaml.safe_dump(recipe))
    (folder / "grid.yaml").write_text(yaml.safe_dump(GRID))
    return folder


def _tree(cell: Path) -> list[str]:
    return sorted(p.name for p in cell.iterdir())


def _assert_grid_equal(folder: Path, ref: Path, what) -> None:
    out = folder / "out"
    assert (out / "grid_results.md").read_bytes() == (ref / "out/grid_results.md").read_bytes(), what
    report, ref_report = (json.loads((p / "grid_results.json").read_text()) for p in (out, ref / "out"))
    assert report["counts"] == ref_report["counts"] == {"done": 4, "failed": 0, "partial": 0, "pending": 0}, what
    _assert_close(_stable(report), _stable(ref_report), what)  # every cell's metrics, the selection, mean ± std
    selected = {row["run_dir"] for row in ref_report["selected"]}
    for cell in CELLS:
        _assert_same_metrics(folder / cell / "final_metrics.json", ref / cell / "final_metrics.json", (what, cell))
        assert _train_steps(folder / cell) == _train_steps(ref / cell) == [1, 2, 3], (what, cell)
        # complete, and pruned as an uninterrupted grid prunes (keep_weights: selected)
        assert _tree(folder / cell) == _tree(ref / cell), (what, cell)
        if cell in selected:
            _assert_same_weights(folder / cell / "final/model.safetensors", ref / cell / "final/model.safetensors",
                                 (what, cell))
    _assert_no_leftovers(out)


def test_grid_killed_at_random_moments_then_rerun_equals_uninterrupted(tmp_path, tiny_model_dir):
    ref = _grid_folder(tmp_path / "reference", tiny_model_dir)
    start = time.monotonic()
    _run_here(ref, ["grid", "grid.yaml"])
    window = time.monotonic() - start
    report = json.loads((ref / "out/grid_results.json").read_text())
    assert report["counts"]["done"] == 4 and len({r["run_dir"] for r in report["selected"]}) == 2
    assert all(not (ref / cell / "checkpoints").exists() for cell in CELLS)  # pruned once each seed was complete

    rng = random.Random(11)
    folders = [_grid_folder(tmp_path / f"cut{i}", tiny_model_dir) for i in range(3)]
    trials = [  # cut 0 inside a cell, cut 1 anywhere, cut 2 around the end of the last cell (pruning, tables)
        {"dir": folders[0], "trigger": lambda: any(last_checkpoint(folders[0] / c) is not None and not
                                                   (folders[0] / c / "final_metrics.json").is_file() for c in CELLS),
         "delay": rng.uniform(0.0, 0.1)},
        {"dir": folders[1], "trigger": lambda: (folders[1] / "out").is_dir(), "delay": rng.uniform(0.0, 1.2 * window)},
        {"dir": folders[2], "trigger": lambda: (folders[2] / CELLS[-1] / "final_metrics.json").is_file(),
         "delay": rng.uniform(0.0, 0.05)},
    ]
    for t in trials:
        t["argv"] = ["grid", "grid.yaml"]
    (tmp_path / "logs").mkdir()
    _kill_trials(trials, tmp_path / "logs")
    killed_mid_cell = cut_short = 0
    for t in trials:
        folder = t["dir"]
        unfinished = [c for c in CELLS if not (folder / c / "final_metrics.json").is_file()]
        t["mid_cell"] = any(last_checkpoint(folder / c) is not None for c in unfinished)
        killed_mid_cell += t["killed"] and t["mid_cell"]
        cut_short += t["killed"] and bool(unfinished)
        if t["killed"]:  # the same command again, to the end
            _run_here(folder, ["grid", "grid.yaml"])
        _assert_grid_equal(folder, ref, (folder.name, t["returncode"], t["mid_cell"]))
    assert cut_short >= 1, "no trial was killed before its last cell finished"
    assert killed_mid_cell >= 1, "no kill landed inside a cell's training"


def test_a_grid_killed_after_its_last_cell_finished_still_prunes_on_rerun(tmp_path, monkeypatch):
    """A kill between a cell's final_metrics.json and the pruning that follows it: the re-run, which has no cell
    left to train, still removes what keep_weights says to remove (here without training: a stand-in train_fn that
    writes what engine.train writes)."""
    from posttrain.pipelines import grid as grid_mod

    monkeypatch.chdir(tmp_path)
    _grid_folder(tmp_path, "unused-model")
    calls = []

    def fake_train(cfg, resume=False):
        run = Path(cfg.train.output_dir)
        (run / "checkpoints" / "checkpoint-3").mkdir(parents=True)
        (run / "checkpoints" / "checkpoint-3" / "trainer_state.json").write_text("{}")
        (run / "final").mkdir()
        metrics = {"eval_accuracy": cfg.train.learning_rate, "test_accuracy": 0.5 + cfg.task.seed / 10}
        (run / "final_metrics.json").write_text(json.dumps(metrics))
        calls.append(run)
        if len(calls) == len(CELLS):
            raise KeyboardInterrupt  # SIGKILL here: after engine.train's final_metrics.json, before the pruning
        return metrics

    grid, cells = grid_mod.load_grid(tmp_path / "grid.yaml", check_data=False)
    with pytest.raises(KeyboardInterrupt):
        grid_mod.run_grid(grid, cells, train_fn=fake_train, log=lambda *_: None)
    assert (tmp_path / CELLS[-1] / "checkpoints").is_dir()
    report = grid_mod.run_grid(grid, cells, train_fn=fake_train, log=lambda *_: None)
    assert len(calls) == len(CELLS) and report["counts"]["done"] == len(CELLS)
    kept = {row["run_dir"] for row in report["selected"]}
    assert kept == {CELLS[0], CELLS[2]}  # lr 0.05 has the higher dev value for both seeds
    for cell in CELLS:
        assert not (tmp_path / cell / "checkpoints").exists(), cell
        assert (tmp_path / cell / "final").exists() == (cell in kept), cell
