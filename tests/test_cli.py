"""cli.py: subcommands end to end on a tiny local model; user errors are one line with exit status 2."""

import json

import pytest

from posttrain.cli import main

ROW = {"messages": [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}]}


@pytest.fixture
def recipe(tmp_path, tiny_model_dir):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(ROW) + "\n" for _ in range(8)))
    path = tmp_path / "recipe.yaml"
    path.write_text(
        f"model:\n  name_or_path: {tiny_model_dir}\ndata:\n  train_file: {data}\n  max_length: 64\n"
        f"train:\n  max_steps: 2\n  per_device_batch_size: 4\n  progress: false\n  output_dir: {tmp_path / 'run'}\n"
    )
    return path


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for command in ("train", "inspect-data", "generate", "quickstart", "stepgame", "dept-budget", "tasks", "config",
                    "grid", "self-train", "pcp", "tapt", "cpt", "generate-set", "bleu-train", "judge", "data-stats",
                    "loss-eval", "im-report"):
        assert command in text


def test_train_then_generate_from_run_dir(capsys, recipe, tmp_path):
    code, out, _ = run(capsys, "train", str(recipe), "adapter.type=lora", "adapter.lora_r=2")
    assert code == 0 and "global_step=2" in out
    code, out, _ = run(capsys, "generate", "--model", str(tmp_path / "run"), "--prompt", "What is the capital?",
                       "--max-new-tokens", "3")
    assert code == 0 and out.startswith(">>> What is the capital?\n")


def test_inspect_data_plain_output(capsys, recipe):
    code, out, _ = run(capsys, "inspect-data", str(recipe), "-n", "1", "--all-modes", "--color", "never")
    assert code == 0
    assert "{+Paris.<|im_end|>+}" in out and "instruction_and_output, im_mask=paper (IM)" in out
    assert "instruction/output length ratio" in out


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.learnig_rate=1", "unknown key 'train.learnig_rate'; did you mean 'train.learning_rate'?"),
        ("loss.mode=im", "loss.mode: expected one of"),
        ("model.name_or_path=./no/such/model", "./no/such/model: no such file or directory"),
        ("adapter.lora_target_modules=[nope]", None),
    ],
)
def test_user_errors_are_one_line_exit_2(capsys, recipe, override, message):
    extra = ["adapter.type=lora"] if "lora" in override else []
    code, _, err = run(capsys, "train", str(recipe), override, *extra)
    assert code == 2
    last = err.replace("\r", "\n").rstrip("\n").split("\n")[-1]  # progress bars may precede it
    assert last.startswith("error: ") and err.count("error: ") == 1
    if message:
        assert message in last


def test_bad_data_row_names_file_and_line(capsys, recipe, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ROW) + "\n" + '{"messages": [{"role": "user"}]}\n')
    code, _, err = run(capsys, "train", str(recipe), f"data.train_file={bad}")
    assert code == 2 and f"{bad}:2: messages[0].content must be a string" in err
    assert not (tmp_path / "run" / "config.yaml").exists()  # nothing half-written


def test_config_command_lists_keys(capsys):
    code, out, _ = run(capsys, "config")
    assert code == 0 and "prompt_loss_weight" in out and "im_mask" in out


def test_dept_budget_prints_the_papers_pairs(capsys):
    assert main(["dept-budget", "--hidden-size", "768", "--max-length", "256", "--m", "60,40"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()[2:]]
    assert rows == [["60", "30", "76,800", "1.0000"], ["40", "45", "76,800", "1.0000"]]


def test_dept_budget_reads_the_width_of_a_model_directory(capsys, tiny_model_dir):
    assert main(["dept-budget", "--model", str(tiny_model_dir), "--length", "10", "--max-length", "16", "--m", "5"]) == 0
    out = capsys.readouterr().out
    assert "d=32" in out and out.splitlines()[-1].split("\t")[:2] == ["5", str(5 * 32 // (16 + 32))]
    assert main(["dept-budget", "--hidden-size", "8", "--m", "x"]) == 2
    assert "--m 'x': expected comma-separated integers" in capsys.readouterr().err
