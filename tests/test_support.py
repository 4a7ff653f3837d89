"""support.py's packing decision: ``train.packing: auto`` packs instruction data wherever the method, the model's
family and the data settings allow it, and says why not elsewhere; an explicit setting is the user's."""

from __future__ import annotations

import json

import pytest

from posttrain import support
from posttrain.config import load_config
from test_engine import ROWS


def _cfg(tmp_path, *extra):
    return load_config(None, ["data.train_file=x.jsonl", f"train.output_dir={tmp_path / 'run'}", *extra])


@pytest.mark.parametrize("extra, kind, why", [
    ([], "causal", None),
    (["adapter.type=lora"], "causal", None),
    (["loss.mode=instruction_and_output", "loss.kl_coef=0.1"], "causal", None),
    (["train.neftune_alpha=5"], "causal", None),
    (["adapter.type=dept"], "causal", "adapter.type dept: each example needs its own soft prompt in front of it"),
    (["adapter.type=prompt_tuning"], "causal",
     "adapter.type prompt_tuning: each example needs its own soft prompt in front of it"),
    ([], "seq2seq", "encoder-decoder models: padding-free batches are for decoder-only models"),
    (["data.pad_to_max_length=true"], "causal", "data.pad_to_max_length is on"),
    (["train.group_by_length=true"], "causal", "train.group_by_length is on"),
])
def test_auto_packs_exactly_where_it_can(tmp_path, extra, kind, why):
    cfg = _cfg(tmp_path, *extra)
    assert cfg.train.packing == "auto"  # the default
    resolved, choice = support.resolve_packing(cfg, kind)
    assert resolved.train.packing is (why is None)
    assert choice == {"configured": "auto", "used": why is None, **({"why_off": why} if why else {})}
    on = "train.packing auto: on (padding-free batches, each micro-batch's examples in one row)"
    assert support.packing_line(choice) == (on if why is None else f"train.packing auto: off ({why})")


def test_a_task_is_never_packed(tmp_path):
    cfg = load_config(None, ["task.name=SST-2", f"train.output_dir={tmp_path}"])
    assert support.packing_off(cfg, "causal") == "task data: short labelled examples are scored in padded batches"


def test_unknown_family_decides_on_the_rest(tmp_path):
    assert support.packing_off(_cfg(tmp_path), None) is None


@pytest.mark.parametrize("value", ["true", "false"])
def test_an_explicit_choice_is_kept_and_not_announced(tmp_path, value):
    resolved, choice = support.resolve_packing(_cfg(tmp_path, f"train.packing={value}"), "causal")
    assert resolved.train.packing is (value == "true") and choice == {"configured": value == "true",
                                                                       "used": value == "true"}
    assert support.packing_line(choice) is None


def test_explicit_true_is_still_refused_where_it_cannot_be(tmp_path):
    from posttrain.errors import ConfigError

    with pytest.raises(ConfigError, match="train.packing: not supported with adapter.type=dept"):
        _cfg(tmp_path, "adapter.type=dept", "train.packing=true")
    with pytest.raises(ConfigError, match="train.packing: expected one of auto, true, false, got 1"):
        _cfg(tmp_path, "train.packing=1")
    cfg = _cfg(tmp_path, "train.packing=true")
    assert support.refusal(cfg, "seq2seq") == ("train.packing: padding-free batches are for decoder-only models, "
                                               "not encoder-decoder ones")


@pytest.mark.parametrize("extra, packed", [([], True), (["adapter.type=dept", "adapter.num_virtual_tokens=2",
                                                         "adapter.dept_rank=2"], False)])
def test_the_engine_trains_packed_by_default_and_records_it(tmp_path, tiny_model_dir, capsys, extra, packed):
    from posttrain.engine import train

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    cfg = load_config(None, [f"model.name_or_path={tiny_model_dir}", f"data.train_file={data}", "data.max_length=64",
                             "train.max_steps=1", "train.per_device_batch_size=4", "train.progress=false",
                             f"train.output_dir={tmp_path / 'run'}", *extra])
    trainer = train(cfg)["trainer"]
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert batch["input_ids"].shape[0] == (1 if packed else 4)  # one concatenated row, or four padded ones
    assert ("position_ids" in batch) is packed
    meta = json.loads((tmp_path / "run" / "run_meta.json").read_text())
    assert meta["packing"]["configured"] == "auto" and meta["packing"]["used"] is packed
    out = capsys.readouterr().out
    assert ("train.packing auto: on" in out) is packed and ("train.packing auto: off (adapter.type dept" in out) \
        is not packed
    assert "packing: auto" in (tmp_path / "run" / "config.yaml").read_text()  # the setting as given
    if packed:  # auto attention follows the packing decision
        assert trainer.model.config._attn_implementation == "posttrain_varlen"
