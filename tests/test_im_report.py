"""evaluation/im_report.py and `posttrain im-report`: summaries lined up by model, errors for bad input."""

import json

from posttrain.cli import main
from posttrain.evaluation.alpaca_format import write_summary
from posttrain.evaluation.im_report import collect

EV = "judge[text_davinci_003 | local:default]"


def _summaries(tmp_path):
    paths = [
        write_summary(tmp_path / "a.json", "loss_eval", "runs/it", {"train_output_loss": 1.0, "test_output_loss": 1.5,
                                                                   "gap": 0.5}),
        write_summary(tmp_path / "b.json", "loss_eval", "runs/im/", {"train_output_loss": 1.2, "test_output_loss": 1.3,
                                                                    "gap": 0.1}),
        write_summary(tmp_path / "c.json", "judge", "runs/im", {"win_rate": 55.0, "stderr": 2.5, "avg_words_a": 40},
                      reference="text_davinci_003", judge="local:default"),
    ]
    assert all(isinstance(p, dict) for p in paths)
    return [str(tmp_path / n) for n in ("a.json", "b.json", "c.json")]


def test_collect_lines_up_by_normalised_model_path(tmp_path):
    table = collect(_summaries(tmp_path))
    assert set(table) == {"runs/it", "runs/im"}
    assert table["runs/im"] == {"loss_eval.train_output_loss": 1.2, "loss_eval.test_output_loss": 1.3,
                                "loss_eval.gap": 0.1, "judge.win_rate": 55.0, "judge.stderr": 2.5,
                                "judge.avg_words_a": 40, f"{EV}.win_rate": 55.0, f"{EV}.stderr": 2.5,
                                f"{EV}.avg_words_a": 40}


def test_cli_writes_markdown_json_png(tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["im-report", *_summaries(tmp_path), "--out", str(out), "--label", "runs/it=IT",
                 "--label", "runs/im=IM"]) == 0
    md = (out / "report.md").read_text()
    assert md.index("| IT |") < md.index("| IM |")  # rows in --label order
    assert "| IT | 1.0000 | 1.5000 | 0.5000 |" in md and "| IM | 1.2000 | 1.3000 | 0.1000 |" in md
    judged = md.split("## Instruction following")[1]
    assert "| model | AlpacaEval 1.0 style: win rate % vs text_davinci_003 (judge `local:default`) |" in judged
    assert "| IT | — |" in judged and "| IM | 55.00 ± 2.50 |" in judged
    assert (out / "report.png").stat().st_size > 1000
    report = json.loads((out / "report.json").read_text())
    assert report["models"]["IM"]["judge.win_rate"] == 55.0 and report["models"]["IM"][f"{EV}.win_rate"] == 55.0
    assert report["evaluations"][EV]["style"] == "AlpacaEval 1.0 style"
    capsys.readouterr()
    assert main(["im-report", *_summaries(tmp_path), "--out", str(out), "--label", "runs/x=X"]) == 2
    assert "--label: no summary has model 'runs/x'" in capsys.readouterr().err
    (tmp_path / "junk.json").write_text("[1, 2]")
    assert main(["im-report", str(tmp_path / "junk.json"), "--out", str(out)]) == 2
    assert "junk.json: expected a JSON object with 'kind', 'model' and 'metrics'" in capsys.readouterr().err


def test_alpaca_eval_1_and_2_columns_side_by_side_with_their_judges(tmp_path, capsys):
    davinci = {"reference": "text_davinci_003", "judge": "http:gpt-4@https://api.openai.com/v1 (alpaca_eval 0.6.6 "
               "evaluator alpaca_eval_gpt4 (parser ranking_parser))", "judge_prompt": "alpaca_eval_gpt4"}
    turbo = {"reference": "gpt4_1106_preview", "judge": "local:default", "judge_prompt": "posttrain",
             "length_controlled": {"form": "length_controlled_minimal", "label": "AlpacaEval GLM minimal"}}
    files = []
    for name, model, metrics, extra in [
            ("it1", "IT", {"win_rate": 40.0, "stderr": 1.0}, davinci),
            ("im1", "IM", {"win_rate": 45.0, "stderr": 1.5}, davinci),
            ("it2", "IT", {"win_rate": 20.0, "stderr": 2.0, "lc_win_rate": 25.5, "lc_stderr": 0.0}, turbo),
            ("im2", "IM", {"win_rate": 30.0, "stderr": 2.5, "lc_win_rate": 31.25, "lc_stderr": 0.75}, turbo),
            ("loss", "IM", {"train_output_loss": 1.0}, {})]:
        write_summary(tmp_path / f"{name}.json", "judge" if name != "loss" else "loss_eval", model, metrics, **extra)
        files.append(str(tmp_path / f"{name}.json"))
    out = tmp_path / "rep"
    assert main(["im-report", *files, "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    header = md.split("## Instruction following")[1].splitlines()[2]
    assert header.index("AlpacaEval 1.0 style: win rate % vs text_davinci_003 (judge `http:gpt-4@") < \
        header.index("AlpacaEval 2.0 style: LC win rate % vs gpt4_1106_preview (judge `local:default`)") < \
        header.index("AlpacaEval 2.0 style: win rate % vs gpt4_1106_preview (judge `local:default`)")
    assert "| IT | 40.00 ± 1.00 | 25.50 | 20.00 ± 2.00 |" in md  # a zero LC spread is not an uncertainty
    assert "| IM | 45.00 ± 1.50 | 31.25 ± 0.75 | 30.00 ± 2.50 |" in md
    assert "(prompt alpaca_eval_gpt4)" in md and "LC: AlpacaEval GLM minimal" in md
    assert (out / "report.png").stat().st_size > 1000
    capsys.readouterr()
    assert main(["im-report", *files, "--out", str(out), "--columns", "judge.win_rate"]) == 0
    first_line = (out / "report.md").read_text().splitlines()[2]
    assert first_line.startswith("| model | judge.win_rate (judge `http:gpt-4@") and "`local:default`" in first_line
