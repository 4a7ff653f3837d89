"""evaluation/im_report.py and `posttrain im-report`: summaries lined up by model, errors for bad input."""

import json

from posttrain.cli import main
from posttrain.evaluation.alpaca_format import write_summary
from posttrain.evaluation.im_report import collect


def _summaries(tmp_path):
    paths = [
        write_summary(tmp_path / "a.json", "loss_eval", "runs/it", {"train_output_loss": 1.0, "test_output_loss": 1.5,
                                                                   "gap": 0.5}),
        write_summary(tmp_path / "b.json", "loss_eval", "runs/im/", {"train_output_loss": 1.2, "test_output_loss": 1.3,
                                                                    "gap": 0.1}),
        write_summary(tmp_path / "c.json", "judge", "runs/im", {"win_rate": 55.0, "stderr": 2.5, "avg_words_a": 40}),
    ]
    assert all(isinstance(p, dict) for p in paths)
    return [str(tmp_path / n) for n in ("a.json", "b.json", "c.json")]


def test_collect_lines_up_by_normalised_model_path(tmp_path):
    table = collect(_summaries(tmp_path))
    assert set(table) == {"runs/it", "runs/im"}
    assert table["runs/im"] == {"loss_eval.train_output_loss": 1.2, "loss_eval.test_output_loss": 1.3,
                                "loss_eval.gap": 0.1, "judge.win_rate": 55.0, "judge.stderr": 2.5,
                                "judge.avg_words_a": 40}


def test_cli_writes_markdown_json_png(tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["im-report", *_summaries(tmp_path), "--out", str(out), "--label", "runs/it=IT",
                 "--label", "runs/im=IM"]) == 0
    md = (out / "report.md").read_text()
    assert md.index("| IT |") < md.index("| IM |")  # rows in --label order
    assert "| IT | 1.0000 | 1.5000 | 0.5000 | — |" in md
    assert "| IM | 1.2000 | 1.3000 | 0.1000 | 55.00 ± 2.50 |" in md
    assert (out / "report.png").stat().st_size > 1000
    assert json.loads((out / "report.json").read_text())["models"]["IM"]["judge.win_rate"] == 55.0
    capsys.readouterr()
    assert main(["im-report", *_summaries(tmp_path), "--out", str(out), "--label", "runs/x=X"]) == 2
    assert "--label: no summary has model 'runs/x'" in capsys.readouterr().err
    (tmp_path / "junk.json").write_text("[1, 2]")
    assert main(["im-report", str(tmp_path / "junk.json"), "--out", str(out)]) == 2
    assert "junk.json: expected a JSON object with 'kind', 'model' and 'metrics'" in capsys.readouterr().err
