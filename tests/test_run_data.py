"""run_data.py: the seeded, disjoint eval_size split and the max_train/max_eval limits (split_examples), read_rows
on instruction data and on a declared task, and task_split's seeded subset in file order."""

from __future__ import annotations

import json

import pytest
from test_classification import task_file  # noqa: F401  (fixture: a toy task with train/dev/test jsonl files)

from posttrain.config import load_config
from posttrain.errors import ConfigError
from posttrain.run_data import read_rows, split_examples, task_split
from posttrain.tasks import load_task_file, read_split

N = 20


def _row(i):
    return {"messages": [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]}


def _index(row) -> int:
    return int(row["messages"][0]["content"].split()[1])


@pytest.fixture
def train_file(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(_row(i)) + "\n" for i in range(N)))
    return path


def _cfg(*overrides):
    return load_config(None, list(overrides))


def test_no_eval_keeps_every_row_in_order(train_file):
    train, evals = split_examples(_cfg(f"data.train_file={train_file}"))
    assert [_index(r) for r in train] == list(range(N)) and evals == []
    assert train[3] == _row(3)


def test_eval_size_split_is_seeded_disjoint_and_in_file_order(train_file):
    cfg = _cfg(f"data.train_file={train_file}", "data.eval_size=6", "data.shuffle_seed=3")
    train, evals = split_examples(cfg)
    t, e = [_index(r) for r in train], [_index(r) for r in evals]
    assert len(e) == 6 and len(t) == N - 6
    assert not set(t) & set(e) and sorted(t + e) == list(range(N))  # disjoint, nothing lost or repeated
    assert t == sorted(t) and e == sorted(e)  # both keep the file's order
    again = split_examples(_cfg(f"data.train_file={train_file}", "data.eval_size=6", "data.shuffle_seed=3"))
    assert [_index(r) for r in again[1]] == e  # the same seed gives the same split
    held = {tuple(_index(r) for r in split_examples(_cfg(f"data.train_file={train_file}", "data.eval_size=6",
                                                         f"data.shuffle_seed={s}"))[1]) for s in range(5)}
    assert len(held) > 1  # the seed chooses the rows
    assert e != list(range(6))  # a shuffled choice, not the file's first rows


def test_max_train_and_max_eval_take_the_first_rows_after_the_split(train_file):
    base = [f"data.train_file={train_file}", "data.eval_size=6", "data.shuffle_seed=3"]
    full_train, full_eval = split_examples(_cfg(*base))
    train, evals = split_examples(_cfg(*base, "data.max_train_examples=4", "data.max_eval_examples=2"))
    assert train == full_train[:4] and evals == full_eval[:2]


def test_eval_file_is_read_as_is(tmp_path, train_file):
    eval_path = tmp_path / "eval.jsonl"
    eval_path.write_text("".join(json.dumps(_row(i)) + "\n" for i in (100, 101, 102)))
    train, evals = split_examples(_cfg(f"data.train_file={train_file}", f"data.eval_file={eval_path}",
                                       "data.max_eval_examples=2"))
    assert [_index(r) for r in train] == list(range(N))
    assert [_index(r) for r in evals] == [100, 101]


@pytest.mark.parametrize("size", [N, N + 5])
def test_eval_size_leaving_no_training_rows_is_a_config_error(train_file, size):
    with pytest.raises(ConfigError, match=rf"data\.eval_size: {size} leaves no training rows \({N} in "):
        split_examples(_cfg(f"data.train_file={train_file}", f"data.eval_size={size}"))
    train, evals = split_examples(_cfg(f"data.train_file={train_file}", f"data.eval_size={N - 1}"))
    assert len(train) == 1 and len(evals) == N - 1


def test_train_file_is_required():
    with pytest.raises(ConfigError, match=r"^data\.train_file: required"):
        split_examples(_cfg())


def test_read_rows_on_instruction_data(train_file):
    cfg = _cfg(f"data.train_file={train_file}", "data.eval_size=5", "data.shuffle_seed=1")
    rows = read_rows(cfg)
    assert set(rows) == {"train", "eval"}
    train, evals = split_examples(cfg)
    assert rows["train"] == train and rows["eval"] == evals


def _task_cfg(task_path, *extra):
    return _cfg(f"task.name={task_path}", "task.train=files:train", "task.eval=files:dev", "task.test=files:test",
                *extra)


def test_task_split_limit_is_a_seeded_subset_in_file_order(task_file):  # noqa: F811
    task = load_task_file(task_file)
    full = read_split(task, "files", "train")
    assert len(full) == 32
    cfg = _task_cfg(task_file, "data.shuffle_seed=7")
    assert task_split(cfg, task, "train") == full  # no limit: every row, in order
    subset = task_split(cfg, task, "train", limit=5)
    idx = [r["idx"] for r in subset]
    assert len(subset) == 5 and idx == sorted(idx) and len(set(idx)) == 5
    assert all(r == full[r["idx"]] for r in subset)  # the file's own rows
    assert idx != list(range(5))  # not biased to the first rows
    assert task_split(cfg, task, "train", limit=5) == subset  # seeded
    others = {tuple(r["idx"] for r in task_split(_task_cfg(task_file, f"data.shuffle_seed={s}"), task, "train", 5))
              for s in range(5)}
    assert len(others) > 1
    assert [r["idx"] for r in task_split(cfg, task, "train", limit=100)] == list(range(32))  # limit above size


def test_read_rows_on_a_task_limits_eval_and_test_only(task_file):  # noqa: F811
    cfg = _task_cfg(task_file, "task.max_eval_examples=3", "task.max_test_examples=2")
    rows = read_rows(cfg)
    task = load_task_file(task_file)
    assert set(rows) == {"train", "eval", "test"}
    assert rows["train"] == read_split(task, "files", "train")
    assert rows["eval"] == task_split(cfg, task, "eval", 3) and len(rows["eval"]) == 3
    assert rows["test"] == task_split(cfg, task, "test", 2) and len(rows["test"]) == 2
    no_test = read_rows(_task_cfg(task_file, "task.test="))
    assert set(no_test) == {"train", "eval"}
