"""benchmarks/mfu.py: the model-FLOPs formula against a hand computation and against a real model's modules."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import mfu  # noqa: E402

# d=8, 2 query heads and 1 key-value head of 4, d_ff=12, 3 layers, vocab 20
TINY = dict(vocab_size=20, hidden_size=8, intermediate_size=12, num_hidden_layers=3, num_attention_heads=2,
            num_key_value_heads=1, head_dim=4, tie_word_embeddings=True)
# per layer: q 8x8 + o 8x8 = 128, k 8x4 + v 8x4 = 64, gate/up/down 3 x 8x12 = 288 -> 480; x3 layers + head 8x20
N_TINY = 3 * 480 + 160


def tiny_config():
    from transformers import LlamaConfig

    return LlamaConfig(**TINY)


def test_matmul_params_match_hand_count():
    assert mfu.matmul_params_from_config(tiny_config()) == N_TINY == 1600
    assert mfu.attention_width(tiny_config()) == 8


def test_training_flops_hand_computation():
    # two sequences of 6 and 4 tokens, full fine-tuning: 6*N*10 + 12 * 3 layers * 8 * (36 + 16)
    assert mfu.training_flops(10, 6**2 + 4**2, 3, 8, frozen=0, trainable=N_TINY) == 96_000 + 14_976
    # everything frozen but 100 adapter weights: 4 FLOPs per frozen weight, 6 per trainable one
    assert mfu.training_flops(10, 52, 3, 8, frozen=N_TINY, trainable=100) == 4 * 1600 * 10 + 6 * 100 * 10 + 14_976


def test_linear_params_of_a_real_model_equal_the_config_formula():
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(tiny_config())
    assert mfu.linear_params(model) == (0, N_TINY)  # the tied head counted once, as a product
    for p in model.parameters():
        p.requires_grad_(False)
    model.lm_head.weight.requires_grad_(True)
    assert mfu.linear_params(model) == (N_TINY - 160, 160)


def test_linear_params_count_lora_adapters_as_trainable():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    model = get_peft_model(LlamaForCausalLM(tiny_config()), LoraConfig(r=2, target_modules=["q_proj", "down_proj"]))
    frozen, trainable = mfu.linear_params(model)
    assert frozen == N_TINY
    assert trainable == 3 * (2 * (8 + 8) + 2 * (12 + 8))  # r * (in + out) for A and B, per targeted layer


def test_sequence_lengths_padded_packed_and_plain():
    ids = torch.zeros(2, 5, dtype=torch.long)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert mfu.sequence_lengths(ids, attention_mask=mask) == [3, 5]
    packed = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])
    assert mfu.sequence_lengths(packed, position_ids=packed) == [3, 2, 4]
    assert mfu.sequence_lengths(ids) == [5, 5]


def test_mfu_and_peak_file(tmp_path):
    # 1000 tokens/s x 6e9 FLOPs/token = 6 TFLOP/s against a 12 TFLOP/s peak
    assert mfu.mfu(1000, 6e9, 12e12) == pytest.approx(0.5)
    report = {"machine": {"cpu_model": "test cpu", "torch_threads": 2}, "results": [
        {"name": "square 2048", "dtype": "bf16", "tflops_median": 1.5},
        {"name": "square 4096", "dtype": "bf16", "tflops_median": 2.0},
        {"name": "square 4096", "dtype": "fp32", "tflops_median": 0.5}]}
    path = tmp_path / "peak.json"
    path.write_text(json.dumps(report))
    peak = mfu.load_peak(path, "bf16")
    assert (peak["tflops"], peak["shape"], peak["machine"]) == (2.0, "square 4096", "test cpu")
    assert mfu.mfu_fields(4e12, 2.0, peak) == {"model_tflops_per_s": 2.0, "mfu": 1.0}
    assert mfu.mfu_fields(4e12, 2.0, None)["mfu"] is None
    with pytest.raises(ValueError, match="no fp16"):
        mfu.load_peak(path, "fp16")
    assert mfu.resolve_peak("none", "fp32")[0] is None
    assert mfu.resolve_peak(str(path), "fp32")[0]["tflops"] == 0.5
