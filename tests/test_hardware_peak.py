"""benchmarks/hardware_peak.py: FLOP counting with a fake clock, the model's step products, and a tiny real run."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import hardware_peak  # noqa: E402
import mfu  # noqa: E402
from test_benchmarks_mfu import N_TINY, tiny_config  # noqa: E402


def test_rate_is_two_m_k_n_over_the_time_of_a_product(monkeypatch):
    import torch

    clock = {"t": 0.0}
    real_matmul = torch.matmul

    def one_microsecond_matmul(a, b, out=None):  # every product takes exactly 1 us on the fake clock
        clock["t"] += 1e-6
        return real_matmul(a, b, out=out)

    monkeypatch.setattr(torch, "matmul", one_microsecond_matmul)
    monkeypatch.setattr(hardware_peak.time, "perf_counter", lambda: clock["t"])
    monkeypatch.setattr(hardware_peak, "MIN_TIMED_S", 0.0)
    row = hardware_peak.measure_matmul("t", 100, 50, 20, "fp32", warmup=1, repeats=3)
    assert row["tflops_median"] == pytest.approx(2 * 100 * 50 * 20 / 1e-6 / 1e12)  # 0.2 TFLOP/s
    assert row["calls_per_repeat"] == 1 and row["repeats"] == 3


def test_operand_layouts_give_the_requested_product_shape():
    import torch

    for layout in ("plain", "x_wT", "gT_x"):
        a, b = hardware_peak._operands(3, 5, 7, layout, torch.float32, "cpu")
        assert (a @ b).shape == (3, 7)
    a, b = hardware_peak._operands(3, 5, 7, "x_wT", torch.float32, "cpu")
    assert b.t().is_contiguous()  # W stored (out x in), as nn.Linear holds it


def test_step_products_are_six_n_t_flops():
    # forward + input grad + weight grad of every linear layer = 6 * N * T (the formula's matmul term)
    tokens = 16
    products = hardware_peak.step_products(tiny_config(), tokens)
    assert sum(2 * m * k * n * count for _, m, k, n, _, count in products) == 6 * N_TINY * tokens
    assert N_TINY == mfu.matmul_params_from_config(tiny_config())


def test_tiny_run_writes_json_markdown_and_png(tmp_path):
    model_dir = tmp_path / "model"
    tiny_config().save_pretrained(model_dir)
    out = tmp_path / "out"
    report = hardware_peak.main(["--sizes", "32", "--tokens", "8", "--model", str(model_dir), "--repeats", "2",
                                 "--warmup", "0", "--threads", "1", "--out", str(out)])
    saved = json.loads((out / "hardware_peak.json").read_text())
    assert saved["results"] == report["results"]
    names = {(r["name"], r["dtype"]) for r in saved["results"]}
    assert ("square 32", "fp32") in names and ("lm_head weight grad", "bf16") in names
    assert len(saved["results"]) == 2 * (1 + 18)  # per precision: one square + 3 products x 6 linear layers
    assert all(r["tflops_median"] > 0 for r in saved["results"])
    assert set(saved["model_step"]) == {"fp32", "bf16"}
    assert saved["machine"]["torch_threads"] == 1 and "cpu_count" in saved["machine"]
    assert "| square 32 | fp32 | 32 x 32 x 32 |" in (out / "hardware_peak.md").read_text()
    assert (out / "hardware_peak.png").stat().st_size > 1000
    peak = mfu.load_peak(out / "hardware_peak.json", "bf16")
    assert peak["tflops"] == max(r["tflops_median"] for r in saved["results"] if r["dtype"] == "bf16")
