"""data/instruction.py: every format through datasets, and bad rows reported as file:line."""

import json

import pytest

from posttrain.data.instruction import load_examples
from posttrain.errors import DataError


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


MESSAGES = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}


def test_formats_are_detected_and_normalised(tmp_path):
    rows = load_examples(write_jsonl(tmp_path / "m.jsonl", [MESSAGES, MESSAGES]))
    assert rows[0] == {"messages": MESSAGES["messages"]}
    alpaca = load_examples(write_jsonl(tmp_path / "a.jsonl", [{"instruction": "Add", "input": "1 1", "output": "2"},
                                                              {"instruction": "Say hi", "input": "", "output": "hi"}]))
    assert [m["content"] for m in alpaca[0]["messages"]] == ["Add\n\n1 1", "2"]
    assert [m["content"] for m in alpaca[1]["messages"]] == ["Say hi", "hi"]
    pc = load_examples(write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Q", "completion": "A"}]))
    assert pc[0]["messages"] == [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    text = load_examples(write_jsonl(tmp_path / "t.jsonl", [{"text": "plain"}]))
    assert text == [{"text": "plain"}]
    share = load_examples(write_jsonl(tmp_path / "s.jsonl", [{"conversations": [{"from": "human", "value": "Q"},
                                                                               {"from": "gpt", "value": "A"}]}]))
    assert share[0]["messages"][1] == {"role": "assistant", "content": "A"}


def test_csv_parquet_and_json_array(tmp_path):
    import pandas as pd

    frame = pd.DataFrame([{"prompt": "Q1", "completion": "A1"}, {"prompt": "Q2", "completion": "A2"}])
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet")
    (tmp_path / "d.json").write_text(json.dumps(frame.to_dict("records")))
    for name in ("d.csv", "d.parquet", "d.json"):
        rows = load_examples(tmp_path / name)
        assert rows[1]["messages"][1]["content"] == "A2", name


def test_real_lima_file_reads(tmp_path):
    from pathlib import Path

    lima = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "instruction" / "lima_data.jsonl"
    if not lima.is_file():
        pytest.skip("shared/data not present")
    rows = load_examples(lima)
    assert len(rows) == 1030 and all(any(m["role"] == "assistant" for m in r["messages"]) for r in rows)


@pytest.mark.parametrize(
    "rows, message",
    [
        ([MESSAGES, '{"messages": [', MESSAGES], r"bad\.jsonl:2: malformed JSON"),
        ([MESSAGES, {"messages": [{"role": "user", "content": "Hi"}]}], r"bad\.jsonl:2: has no assistant"),
        ([MESSAGES, {"messages": [{"role": "robot", "content": "x"}]}], r"bad\.jsonl:2: messages\[0\]\.role must be one of"),
        ([MESSAGES, MESSAGES, {"messages": [{"role": "user", "content": 3}]}], r"bad\.jsonl:3: messages\[0\]\.content must be a string"),
        ([{"instruction": "x", "output": "y"}, {"instruction": "x"}], r"bad\.jsonl:2: missing field 'output'"),
        ([{"foo": 1}], r"bad\.jsonl:1: cannot tell the row format"),
        ([MESSAGES, "[1, 2]"], r"bad\.jsonl:2: expected a JSON object"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, rows, message):
    with pytest.raises(DataError, match=message):
        load_examples(write_jsonl(tmp_path / "bad.jsonl", rows))


def test_blank_lines_do_not_shift_line_numbers(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(MESSAGES) + "\n\n" + json.dumps({"messages": [{"role": "user", "content": "x"}]}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:3:"):
        load_examples(path)


def test_file_level_errors(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="empty.jsonl: file is empty"):
        load_examples(tmp_path / "empty.jsonl")
    with pytest.raises(DataError, match="missing.jsonl: data file not found"):
        load_examples(tmp_path / "missing.jsonl")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="unsupported file type '.txt'"):
        load_examples(tmp_path / "x.txt")
    (tmp_path / "latin.jsonl").write_bytes(json.dumps(MESSAGES).encode() + b"\n" + b'{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin\.jsonl:2: not valid UTF-8"):
        load_examples(tmp_path / "latin.jsonl")
