"""data/stats.py and `posttrain data-stats`: the IM paper's Table 5 statistics, counted by hand."""

import json

import pytest

from posttrain.cli import main
from posttrain.data.stats import dataset_stats, example_lengths, stats_table

ROWS = [
    {"messages": [{"role": "system", "content": "be kind"}, {"role": "user", "content": "one two three"},
                  {"role": "assistant", "content": "a b"}]},
    {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "p q r s"},
                  {"role": "user", "content": "y z"}, {"role": "assistant", "content": "t\nu  v"}]},
]


def test_lengths_count_every_turn_by_role():
    assert example_lengths(ROWS[0]) == (2 + 3, 2)
    assert example_lengths(ROWS[1]) == (1 + 2, 4 + 3)


def test_dataset_means_and_ratio_of_means(tokenizer):
    stats = dataset_stats(ROWS)
    assert stats["size"] == 2 and stats["multi_turn"] == 1
    assert stats["instruction_words"] == pytest.approx((5 + 3) / 2)
    assert stats["output_words"] == pytest.approx((2 + 7) / 2)
    assert stats["ratio_words"] == pytest.approx(8 / 9)  # ratio of the means, as the paper's table
    with_tokens = dataset_stats(ROWS, tokenizer)
    count = lambda t: len(tokenizer(t, add_special_tokens=False)["input_ids"])  # noqa: E731
    assert with_tokens["output_tokens"] == pytest.approx((count("a b") + count("p q r s") + count("t\nu  v")) / 2)
    assert "| 2 | 4.50 | 4.00 | 0.8889 |" in stats_table({"d": stats})


def test_cli_prints_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert main(["data-stats", str(path), "--json", str(tmp_path / "s.json")]) == 0
    assert "| d | 2 | 4.50 | 4.00 | 0.8889 |" in capsys.readouterr().out
    assert json.loads((tmp_path / "s.json").read_text())["d"]["size"] == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    assert main(["data-stats", str(bad)]) == 2
    assert "bad.jsonl:1: has no assistant message" in capsys.readouterr().err
