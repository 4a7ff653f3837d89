"""models/precision.py: what auto resolves to, the precision a run directory records, and the autocast patch a
reloaded run gets (the same as accelerate's on a prepared model: autocast inside, fp32 outputs)."""

from __future__ import annotations

import json

import pytest
import torch

from posttrain.models import precision


def test_auto_follows_the_hardware_and_explicit_values_stay(monkeypatch):
    for has_bf16, expected in ((True, "bf16"), (False, "none")):
        monkeypatch.setattr(precision, "bf16_hardware", lambda has=has_bf16: has)
        assert precision.resolve_precision("auto") == expected
        assert [precision.resolve_precision(p) for p in ("none", "bf16", "fp16")] == ["none", "bf16", "fp16"]


@pytest.mark.parametrize("meta, expected", [
    ({"mixed_precision": {"configured": "auto", "used": "bf16"}}, "bf16"),
    ({"mixed_precision": {"configured": "none", "used": "none"}}, "none"),
    ({}, "none"),  # a run written before the record
    ({"mixed_precision": "bf16"}, "none"),  # not the recorded shape: plain passes, no crash
])
def test_run_precision_reads_run_meta(tmp_path, meta, expected):
    (tmp_path / "run_meta.json").write_text(json.dumps(meta))
    assert precision.run_precision(tmp_path) == expected
    assert precision.run_precision(tmp_path / "missing") == "none"


class TwoLayers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = torch.nn.Linear(16, 16), torch.nn.Linear(16, 4)

    def forward(self, x):
        return {"logits": self.b(torch.relu(self.a(x)))}


def test_autocast_forward_runs_bf16_inside_and_returns_fp32():
    x = torch.randn(3, 16)
    plain = TwoLayers()
    patched = precision.autocast_forward(TwoLayers(), "bf16")
    with torch.no_grad():
        out = patched(x)["logits"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected = plain(x)["logits"].float()
        fp32 = plain(x)["logits"]
    assert out.dtype == torch.float32 and torch.equal(out, expected)
    assert not torch.equal(out, fp32)  # bf16 rounding shows: the patch did something


def test_none_leaves_the_model_alone():
    model = TwoLayers()
    forward = model.forward
    assert precision.autocast_forward(model, "none") is model and model.forward == forward
