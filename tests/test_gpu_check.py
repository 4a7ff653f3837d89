"""benchmarks/gpu_check.sh --dry-run: the GPU check's code path on the CPU (tiny random model, 1 + 1 steps).

Runs the shell script as the GPU machine would (minus the install), then checks the summary JSON has every part,
the GPU-only comparisons are skipped with their reason, the comparisons that can run on a CPU ran and agree
where they must (fused cross-entropy = eager), and the per-part files were packed.
"""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return out, json.loads((out / "gpu_check.json").read_text())


def test_every_part_ran_or_says_why_not(dry_run):
    out, report = dry_run
    assert report["dry_run"] is True and report["device"] == "cpu"
    assert set(report["parts"]) == {"peak", "sft", "attention", "cross_entropy", "dept"}
    errors = {name: part.get("error") for name, part in report["parts"].items() if part["status"] != "ok"}
    assert not errors, errors
    assert "Triton GPU kernels" in report["parts"]["sft"]["skipped"]["trl-full-bf16-liger"]
    assert "CUDA" in report["parts"]["attention"]["skipped"]["posttrain-full-bf16-packing-flash"]
    assert "liger" in report["parts"]["cross_entropy"]["skipped"]
    assert (out / "gpu_check.png").stat().st_size > 1000


def test_sft_and_attention_report_throughput_memory_and_mfu(dry_run):
    _, report = dry_run
    sft = {r["name"]: r for r in report["parts"]["sft"]["results"]}
    assert set(sft) == {"posttrain-full-bf16", "trl-full-bf16"}
    attention = {r["name"] for r in report["parts"]["attention"]["results"]}
    assert attention == {"posttrain-full-bf16-packing", "posttrain-full-bf16-packing-varlen"}
    for r in [*sft.values(), *report["parts"]["attention"]["results"]]:
        assert r["error"] is None and r["tokens_per_s"] > 0 and r["peak_rss_mb"] > 0
        assert 0 < r["mfu"] and r["model_tflops_per_s"] > 0  # against the peak the check measured first
    assert "posttrain-full-bf16 / trl-full-bf16" in report["parts"]["sft"]["ratios"]
    assert set(report["parts"]["peak"]["model_step"]) == {"fp32", "bf16"}


def test_fused_cross_entropy_matches_eager(dry_run):
    _, report = dry_run
    (shape,) = report["parts"]["cross_entropy"]["shapes"]
    runs = shape["runs"]
    assert set(runs) == {"eager", "posttrain"}
    assert runs["posttrain"]["loss_rel_diff_vs_eager"] < 1e-5
    assert runs["posttrain"]["max_abs_grad_diff_vs_eager"] < 1e-4
    assert all(r["ms_median"] > 0 for r in runs.values())


def test_dept_vs_peft_prompt_tuning(dry_run):
    _, report = dry_run
    dept = report["parts"]["dept"]
    names = [r["name"] for r in dept["results"]]
    assert "PT(100)" in names and "PEFT PromptTuning(100)" in names and any(n.startswith("DePT(60") for n in names)
    assert all(r["error"] is None and r["mfu"] > 0 for r in dept["results"])
    assert dept["ratios"]["posttrain PT vs PEFT PT first-step loss |diff|"] < 1e-4  # same inputs, same prompt


def test_details_are_packed_for_the_device_tool(dry_run):
    out, _ = dry_run
    with tarfile.open(out / "gpu_check_details.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"sft/sft_throughput.json", "dept/dept_efficiency.json", "peak/hardware_peak.json",
            "cross_entropy/cross_entropy.json"} <= names
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.png", "gpu_check_details.tar.gz"]


def test_gpu_only_configurations_name_their_reason(monkeypatch):
    monkeypatch.setattr(gpu_check, "cuda", lambda: False)
    assert "no CUDA device" in gpu_check.gpu_only_reason("trl-full-bf16-liger")
    assert gpu_check.gpu_only_reason("posttrain-full-bf16") is None
    monkeypatch.setattr(gpu_check, "cuda", lambda: True)
    monkeypatch.setattr(gpu_check.importlib.util, "find_spec", lambda name: None)
    assert "flash-attn is not installed" in gpu_check.gpu_only_reason("posttrain-full-bf16-packing-flash")
