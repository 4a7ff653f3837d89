"""cli/tasks.py: `posttrain tasks list` and `posttrain tasks show` through register(), as cli.main wires them."""

import argparse
import dataclasses
from pathlib import Path

import pytest
import yaml

from posttrain.errors import PosttrainError
from posttrain.tasks import get_task, task_from_dict, task_names
from posttrain.cli.tasks import register

FIXTURES = Path(__file__).parent / "fixtures" / "tasks"
FIX = FIXTURES / "data"
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def run(capsys, *argv):
    """What posttrain.cli.main does with a handler: PosttrainError -> one line on stderr, status 2."""
    parser = argparse.ArgumentParser(prog="posttrain")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    try:
        code = args.func(args)
    except PosttrainError as err:
        print(f"error: {err}", file=__import__("sys").stderr)
        code = 2
    out = capsys.readouterr()
    return code, out.out, out.err


def _rows(out: str) -> dict[str, list[str]]:
    lines = out.splitlines()
    header = lines[0]
    starts = [header.index(col) for col in ("NAME", "KIND", "LABELS", "METRIC", "K-SHOT", "POOL", "SUPERGLUE")]
    rows = {}
    for line in lines[1:]:
        if not line.strip():
            break
        cells = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
        rows[cells[0]] = cells
    return rows


def test_list_on_fixture_root(capsys):
    code, out, _ = run(capsys, "tasks", "list", "--data-root", str(FIX))
    assert code == 0
    rows = _rows(out)
    assert list(rows) == task_names()
    assert rows["SST-2"] == ["SST-2", "single", "2: terrible/great", "accuracy", "-", "dev", ""]
    assert rows["STS-B"][1:4] == ["pair, regression", "2: No/Yes", "pearson, spearman"]
    assert rows["MRPC"][3] == "f1, accuracy"
    assert rows["TREC"][2] == "6: Description/Entity/Expression/Human/Location/Number"
    assert rows["WiC"][4:] == ["", "", "train, unlabeled"]
    assert rows["MR"][4:] == ["-", "-", ""]
    assert f"data root: {FIX} (set $POSTTRAIN_DATA or --data-root)" in out


@pytest.mark.skipif(not (DATA / "lm_bff_kshot").is_dir(), reason="../shared/data not present")
def test_list_on_shared_data(capsys):
    rows = _rows(run(capsys, "tasks", "list", "--data-root", str(DATA))[1])
    assert rows["SST-2"][4:] == ["5 seeds + test", "train, dev", ""]
    assert rows["QQP"][4:] == rows["MNLI-mm"][4:] == ["5 seeds, no test", "train, dev", ""]
    assert rows["MPQA"][4:] == ["-", "-", ""]
    assert rows["BoolQ"][4:] == ["", "", "train, dev32, val"]


def test_show_renders_first_example(capsys):
    code, out, _ = run(capsys, "tasks", "show", "sst2", "--data-root", str(FIX))
    assert code == 0
    assert out.startswith("# SST-2: Stanford Sentiment Treebank, binary movie-review sentiment.\nname: SST-2\n")
    assert "template: '{text_a} It was {mask} .'\n" in out
    tail = out.split("\nfirst example ")[1]
    assert tail == (
        "(kshot train, seed 13):\n"
        "  text_a: 'nothing happens , and it happens to flat characters .'\n"
        "  text_b: None\n"
        "  label: '0'\n"
        "  idx: 0\n"
        "template, mask:       nothing happens , and it happens to flat characters . It was <mask> .\n"
        "template, gold word:  nothing happens , and it happens to flat characters . It was terrible .\n"
        "text-to-text input:   sentence: nothing happens , and it happens to flat characters .\n"
        "text-to-text target:  terrible\n")
    code, out, _ = run(capsys, "tasks", "show", "STS-B", "--data-root", str(FIX), "--source", "pool")
    assert "(pool dev):" in out and "text-to-text target:  4.4\n" in out and "gold word" not in out


@pytest.mark.parametrize("name", ["SST-2", "STS-B", "MNLI-mm", "WiC", "MR"])
def test_show_prints_a_declaration_that_loads_back(capsys, name):
    out = run(capsys, "tasks", "show", name, "--data-root", str(FIX))[1]
    text = out.split("\n\n")[0]
    back = task_from_dict(yaml.safe_load(text), "show output")
    original = dataclasses.asdict(get_task(name))
    assert dataclasses.asdict(back) == original


def test_show_user_file_missing_data_and_errors(capsys, tmp_path):
    code, out, _ = run(capsys, "tasks", "show", str(FIXTURES / "user" / "reviews.yaml"))
    assert code == 0 and "name: my-reviews" in out
    assert "template, mask:       Review: She said \"great\", then left Verdict: <mask>!" in out
    code, out, _ = run(capsys, "tasks", "show", "mr", "--data-root", str(tmp_path))
    assert code == 0 and out.rstrip().endswith(f"(no data of MR under {tmp_path}; set $POSTTRAIN_DATA or --data-root)")
    code, _, err = run(capsys, "tasks", "show", "sst3")
    assert code == 2 and err.startswith("error: unknown task 'sst3'; did you mean 'SST-2'?")
    code, _, err = run(capsys, "tasks", "show", "sst2", "--source", "superglue", "--data-root", str(FIX))
    assert (code, err) == (2, "error: task 'SST-2' declares no 'superglue' data (it has: kshot, pool)\n")
    code, _, err = run(capsys, "tasks", "show", "sst2", "--seed", "7", "--data-root", str(FIX))
    assert (code, err) == (2, "error: task 'SST-2': seed 7 is not one of 13, 21, 42, 87, 100\n")
    assert run(capsys, "tasks")[0] == 2  # no subcommand: help, status 2
