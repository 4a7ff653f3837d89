"""quickstart.py: the IT-vs-IM job end to end on a tiny local model (the real one runs in `posttrain quickstart`)."""

import json

from posttrain.quickstart import bundled_data, quickstart_configs, run_quickstart


def test_bundled_slice_is_packaged():
    rows = bundled_data().read_text(encoding="utf-8").splitlines()
    assert len(rows) == 400 and "messages" in json.loads(rows[0])


def test_both_runs_share_everything_but_the_loss(tmp_path):
    configs = quickstart_configs(str(tmp_path), 20, None, "default", [])
    it, im = configs["IT"], configs["IM"]
    assert it.loss.mode == "output_only" and im.loss.mode == "instruction_and_output"
    assert (it.model, it.data, it.adapter) == (im.model, im.data, im.adapter)
    assert {k: v for k, v in vars(it.train).items() if k != "output_dir"} == \
           {k: v for k, v in vars(im.train).items() if k != "output_dir"}


def test_quickstart_runs_and_reports_both_losses(tmp_path, tiny_model_dir, capsys):
    data = tmp_path / "rows.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                          {"role": "assistant", "content": f"{2 * i}."}]} for i in range(60)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = run_quickstart(str(tmp_path / "qs"), steps=2, data_file=str(data), model=str(tiny_model_dir),
                             extra=["train.progress=false"])
    out = capsys.readouterr().out
    assert set(results) == {"IT", "IM"}
    for name, r in results.items():
        assert r["eval_output_loss"] > 0 and f"\n{name} " in out and f"[{name}]" in out
    assert "\nstart " in out  # the starting model's held-out loss
    assert (tmp_path / "qs" / "IM" / "loss_curve.png").is_file()
