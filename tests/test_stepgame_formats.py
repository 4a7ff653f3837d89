"""StepGame readers/writers (official JSON, JSONL, bAbI), malformed-input errors, and the CLI module."""

import argparse
import json
from pathlib import Path

import pytest

from posttrain.errors import DataError
from posttrain.cli import main
from posttrain.cli.stepgame import register
from posttrain.stepgame.formats import parse_k_range
from posttrain.stepgame.formats import dumps, read_babi, read_examples, read_json, read_jsonl, write_examples
from posttrain.stepgame.generator import generate

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "stepgame"
SUFFIX = {"json": "qa3_test.json", "jsonl": "qa3_test.jsonl", "babi": "qa3_test.txt"}


@pytest.mark.parametrize("fmt", ["json", "jsonl", "babi"])
def test_round_trip(tmp_path, fmt):
    examples = generate(3, 40, seed=0, noise=True)
    path = write_examples(tmp_path / SUFFIX[fmt], examples, fmt)
    back = read_examples(path)
    assert [(e["story"], e["question"], e["label"], e["k_hop"]) for e in back] == [
        (e["story"], e["question"], e["label"], 3) for e in examples]
    assert dumps(back, fmt) == path.read_text(encoding="utf-8")


def test_jsonl_is_hf_style(tmp_path):
    path = write_examples(tmp_path / "x.jsonl", generate(2, 2, seed=0), "jsonl")
    row = json.loads(path.read_text().splitlines()[0])
    assert set(row) == {"story", "question", "label", "k_hop"} and row["k_hop"] == "2"


@pytest.mark.skipif(not DATA.is_dir(), reason="released StepGame data not present")
def test_released_json_rewrites_byte_identical():
    path = DATA / "clean" / "qa1_valid.json"
    examples = read_json(path)
    assert len(examples) == 1000 and examples[0]["k_hop"] == 1
    assert dumps(examples, "json") == path.read_text(encoding="utf-8")


GOOD = {"story": ["A is to the left of B."], "question": "What is the relation of the agent A to the agent B?",
        "label": "left"}


@pytest.mark.parametrize("bad, message", [
    ({**GOOD, "label": "north"}, "unknown label 'north'"),
    ({k: v for k, v in GOOD.items() if k != "question"}, "missing question"),
    ({**GOOD, "story": []}, "empty story"),
    ({**GOOD, "story": "A is left of B."}, "'story' must be a list"),
])
def test_json_errors_name_file_and_record(tmp_path, bad, message):
    path = tmp_path / "qa1_x.json"
    path.write_text(json.dumps({"0": GOOD, "1": bad}))
    with pytest.raises(DataError, match=message) as err:
        read_json(path)
    assert str(path) in str(err.value) and "record '1'" in str(err.value)
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text(json.dumps(GOOD) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match="line 2"):
        read_jsonl(jsonl)


def test_malformed_json_and_babi(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"0": {"story": [')
    with pytest.raises(DataError, match="malformed JSON"):
        read_json(path)
    with pytest.raises(DataError, match="file not found"):
        read_json(tmp_path / "missing.json")
    babi = tmp_path / "bad.txt"
    babi.write_text("1 A is to the left of B.\n2 What is the relation of the agent A to the agent B?\tup\t1\n")
    with pytest.raises(DataError, match="line 2: unknown label 'up'"):
        read_babi(babi)
    babi.write_text("1 A is to the left of B.\n1 B is above C.\n")
    with pytest.raises(DataError, match="line 2: story of line 1 has no question"):
        read_babi(babi)
    babi.write_text("1 What is the relation of the agent A to the agent B?\tleft\t1\n")
    with pytest.raises(DataError, match="empty story"):
        read_babi(babi)
    with pytest.raises(DataError, match="unknown StepGame format"):
        read_examples(tmp_path / "x.csv")


def test_cli_register_generate_and_solve(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="posttrain")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["stepgame", "generate", "--k", "1-2", "--n", "30", "--both", "--format", "babi",
                              "--templates", "corrected", "--out", str(tmp_path)])
    assert args.func(args) == 0
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.txt"))
    assert files == ["clean/qa1_test.txt", "clean/qa2_test.txt", "noise/qa1_test.txt", "noise/qa2_test.txt"]
    out = tmp_path / "report.json"
    assert main(["stepgame", "solve", str(tmp_path / "noise" / "qa2_test.txt"), "--json", str(out)]) == 0
    assert "accuracy 1.0000 (30/30" in capsys.readouterr().out
    assert json.loads(out.read_text())[str(tmp_path / "noise" / "qa2_test.txt")]["unexplained"] == 0
    assert main(["stepgame", "solve", str(tmp_path / "nope.json")]) == 2
    assert "error:" in capsys.readouterr().err
    assert parse_k_range("1-3,5") == [1, 2, 3, 5]
    assert main(["stepgame", "generate", "--k", "0-12", "--out", str(tmp_path)]) == 2


def test_non_utf8_and_non_object_lines_are_data_errors(tmp_path):
    bad = tmp_path / "latin.json"
    bad.write_bytes(b'{"0": {"story": ["caf\xe9"]}}')
    with pytest.raises(DataError, match="not valid UTF-8"):
        read_json(bad)
    lines = tmp_path / "x.jsonl"
    lines.write_text(json.dumps(GOOD) + "\n[1, 2]\n")
    with pytest.raises(DataError, match=r"x\.jsonl:2: expected a JSON object"):
        read_jsonl(lines)
