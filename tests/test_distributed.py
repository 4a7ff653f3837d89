"""Multi-process training (DDP over gloo on 2 CPU processes) equals one process with the same global batch; only
rank 0 writes the run files; eval metrics are gathered over processes. Plus the accelerate presets, the
``--accelerate-config`` relaunch and the full-parameter save of a sharded soft prompt (docs/distributed.md)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from posttrain import cli, distributed
from posttrain.config import load_config
from posttrain.engine import train

TOL = 1e-5  # final weights, 2 processes vs 1 (float32 sums in another order); eval loss: 1e-6

ROWS = [
    {"messages": [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}]},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Write a poem about the sea."},
                  {"role": "assistant", "content": "The sea is wide and blue."}]},
    {"messages": [{"role": "user", "content": "Translate to French: good morning."}, {"role": "assistant", "content": "Bonjour."}]},
    {"messages": [{"role": "user", "content": "Summarize the text below in one sentence, please."},
                  {"role": "assistant", "content": "The quick brown fox jumps over the lazy dog."},
                  {"role": "user", "content": "And?"}, {"role": "assistant", "content": "0 1 2 3 4 5 6 7 8 9"}]},
]


def _can_spawn() -> str | None:
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        return "torch.distributed with the gloo backend is not available"
    if sys.platform == "win32":
        return "torchrun with gloo is not supported on this platform"
    return None


def _overrides(tmp_path, model_dir, name, batch):
    return [
        f"model.name_or_path={model_dir}", f"data.train_file={tmp_path / 'train.jsonl'}",
        f"data.eval_file={tmp_path / 'eval.jsonl'}", "data.max_length=64", f"train.per_device_batch_size={batch}",
        "train.max_steps=3", "train.learning_rate=1e-2", "train.warmup_ratio=0.25", "train.logging_steps=1",
        "train.eval_steps=2", "train.save_steps=2", "train.progress=false", f"train.output_dir={tmp_path / name}",
        "train.mixed_precision=none",  # fp32: per-device batches of 2 and 4 agree to float rounding, not bf16's
    ]


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.skipif(_can_spawn() is not None, reason=str(_can_spawn()))
def test_two_processes_equal_one_process_with_the_same_global_batch(tmp_path, tiny_model_dir):
    # 12 training rows = 3 global batches of 4 (no padding duplicates); 5 eval rows: uneven over 2 processes x 2
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS * 3))
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (ROWS * 2)[:5]))
    (tmp_path / "base.yaml").write_text("{}\n")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "posttrain", "train", str(tmp_path / "base.yaml"), *_overrides(tmp_path, tiny_model_dir, "ddp", 2)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done: ") == 1  # the summary line comes from rank 0 only

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = train(load_config(None, _overrides(tmp_path, tiny_model_dir, "single", 4)))
    finally:
        torch.set_num_threads(threads)
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"

    # the same update: final weights within TOL
    a, b = load_file(str(single_dir / "final" / "model.safetensors")), load_file(str(ddp_dir / "final" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=TOL, rtol=0), key

    # both processes trained (one RNG state per rank), rank 0 alone wrote the checkpoints and the run files
    ckpt = ddp_dir / "checkpoints" / "checkpoint-2"
    assert (ckpt / "rng_state_0.pth").is_file() and (ckpt / "rng_state_1.pth").is_file()
    assert not (ckpt / "rng_state.pth").exists()
    assert sorted(p.name for p in ddp_dir.iterdir()) == sorted(p.name for p in single_dir.iterdir())
    assert not [p for p in ddp_dir.rglob("*") if p.name.startswith(distributed.STAGING_PREFIX)]
    ddp, one = _records(ddp_dir), _records(single_dir)
    # no record written twice: the same records (step and fields) as the one-process run, in the same order. (Not
    # "all lines distinct": the final evaluation after training repeats the last periodic one at the same step and
    # its line is identical whenever the two eval_runtime values round alike.)
    shape = lambda records: [(r.get("step"), sorted(r)) for r in records]  # noqa: E731
    assert shape(ddp) == shape(one)
    assert [r["step"] for r in ddp if "loss" in r] == [1, 2, 3]

    # eval metrics over the whole eval set, gathered across processes (the padding repeat of row 5 dropped)
    evals = [(r["step"], r["eval_output_tokens"], r["eval_output_loss"]) for r in ddp if "eval_output_loss" in r]
    ref = [(r["step"], r["eval_output_tokens"], r["eval_output_loss"]) for r in one if "eval_output_loss" in r]
    assert [e[:2] for e in evals] == [e[:2] for e in ref] and len(evals) >= 2
    for (_, _, x), (_, _, y) in zip(evals, ref):
        assert x == pytest.approx(y, abs=1e-6)
    for r_ddp, r_one in zip([r for r in ddp if "loss" in r], [r for r in one if "loss" in r]):
        assert r_ddp["loss"] == pytest.approx(r_one["loss"], abs=1e-5)  # the logged loss is the global one
    final = json.loads((ddp_dir / "final_metrics.json").read_text())
    assert final["eval_output_loss"] == pytest.approx(single["eval_output_loss"], abs=1e-6)


def test_presets_are_shipped_and_unknown_names_fail_on_one_line(tmp_path, capsys):
    import yaml

    for name, (filename, _) in distributed.PRESETS.items():
        data = yaml.safe_load(distributed.preset_path(name).read_text())
        assert data["compute_environment"] == "LOCAL_MACHINE", name
    assert yaml.safe_load(distributed.preset_path("fsdp").read_text())["fsdp_config"]["fsdp_state_dict_type"] \
        == "FULL_STATE_DICT"
    assert yaml.safe_load(distributed.preset_path("zero3").read_text())["deepspeed_config"]["zero3_save_16bit_model"]
    (tmp_path / "base.yaml").write_text("{}\n")
    assert cli.main(["train", str(tmp_path / "base.yaml"), "--accelerate-config", "zero4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --accelerate-config: unknown preset 'zero4'")
    assert all(name in err for name in distributed.PRESETS)
    assert cli.main(["train", str(tmp_path / "base.yaml"), "--accelerate-config", "fsdp", "--num-processes", "0"]) == 2
    assert "--num-processes" in capsys.readouterr().err
    assert cli.main(["train", str(tmp_path / "base.yaml"), "--num-processes", "2"]) == 2
    assert "need --accelerate-config" in capsys.readouterr().err


def test_accelerate_config_relaunches_through_accelerate_launch(tmp_path, monkeypatch):
    (tmp_path / "base.yaml").write_text("{}\n")
    seen = []
    monkeypatch.setattr(distributed.subprocess, "run",
                        lambda cmd, check: seen.append(cmd) or subprocess.CompletedProcess(cmd, 3))
    code = cli.main(["train", str(tmp_path / "base.yaml"), "train.max_steps=2", "--resume",
                     "--accelerate-config", "zero3", "--num-processes", "4",
                     "--launch-args", "--num_machines 2 --machine_rank 1 --main_process_ip 10.0.0.1"])
    assert code == 3  # the launcher's exit status
    assert seen == [[sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                     str(distributed.PRESET_DIR / "zero3.yaml"), "--num_processes", "4", "--num_machines", "2",
                     "--machine_rank", "1", "--main_process_ip", "10.0.0.1", "-m", "posttrain", "train",
                     str(tmp_path / "base.yaml"), "train.max_steps=2", "--resume"]]
    # a config error is reported before any process is launched
    assert cli.main(["train", str(tmp_path / "base.yaml"), "train.nope=1", "--accelerate-config", "zero3"]) == 2
    assert len(seen) == 1


def test_soft_prompt_save_gathers_sharded_parameters(tmp_path, tiny_llama):
    """Under FSDP / ZeRO-3 the process holds shards (ZeRO-3: empty placeholders); the saver must write the full
    tensors that Trainer.save_model gathered, and the shards must be back afterwards."""
    from posttrain.methods.soft_prompt import SoftPromptModel
    from posttrain.methods.soft_prompt import load_soft_prompt

    model = SoftPromptModel(tiny_llama, num_virtual_tokens=4, rank=2, max_length=16)
    full = {k: v.detach().clone() for k, v in model.state_dict().items()}
    placeholders = {}
    for name in ("prompt", "offset_a", "offset_b"):  # what ZeRO-3 leaves in the module between forward passes
        param = getattr(model, name)
        placeholders[name] = torch.empty(0, dtype=param.dtype)
        param.data = placeholders[name]
    with distributed.full_parameters(model, full):
        model.posttrain_save(tmp_path / "adapter")
    assert all(getattr(model, n).shape == (0,) for n in placeholders)  # the shards are back
    loaded = load_soft_prompt(tiny_llama, tmp_path / "adapter")
    for name in placeholders:
        assert torch.equal(getattr(loaded, name), full[name]), name
    with pytest.raises(Exception, match="stage3_gather_16bit_weights_on_model_save"):
        with distributed.full_parameters(model, {}):
            pass


def test_wrapper_names_map_to_state_dict_keys():
    assert distributed.clean_name("_fsdp_wrapped_module.base.model.layers.0._fsdp_wrapped_module.mlp.weight") \
        == "base.model.layers.0.mlp.weight"
    assert distributed.clean_name("base.dense_module.weight") == "base.dense_module.weight"


FSDP2_SCRIPT = r'''
import json, sys, torch, torch.distributed as dist
from safetensors.torch import load_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import fully_shard
from transformers import LlamaConfig, LlamaForCausalLM
from posttrain import distributed
from posttrain.methods.soft_prompt import SoftPromptModel

out = sys.argv[1]
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
base = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2))
model = SoftPromptModel(base, num_virtual_tokens=5, rank=3, max_length=16)
model.offset_b.data.normal_()
expected = {k: model.state_dict()[k].clone() for k in ("prompt", "offset_a", "offset_b")}
for layer in model.base.model.layers:  # the fsdp preset: each transformer layer a unit, then the root
    fully_shard(layer)
fully_shard(model)
local = tuple(model.prompt.to_local().shape)
assert local[0] < 5, local  # P is really sharded over the 2 processes
# what Trainer.save_model does for FSDP2 with FULL_STATE_DICT (accelerator.get_state_dict), then engine._save
state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
if rank == 0:
    with distributed.full_parameters(model, state):
        model.posttrain_save(out)
    got = load_file(out + "/soft_prompt.safetensors")
    assert all(torch.equal(got[k], expected[k]) for k in expected), {k: tuple(got[k].shape) for k in got}
    assert json.load(open(out + "/soft_prompt_config.json"))["hidden_size"] == 32
    assert tuple(model.prompt.to_local().shape) == local  # the shard is back
dist.barrier()
loss = model(input_ids=torch.tensor([[1, 2, 3, 4]]), labels=torch.tensor([[1, 2, 3, 4]])).loss
loss.backward()  # the sharded model still trains after the save
assert model.prompt.grad is not None
dist.destroy_process_group()
print(f"ok{rank}", flush=True)  # one token per rank: the two processes' lines may interleave
'''


@pytest.mark.skipif(_can_spawn() is not None, reason=str(_can_spawn()))
def test_soft_prompt_saved_whole_from_fsdp2_shards_on_cpu(tmp_path):
    """Real FSDP2 sharding (torch fully_shard over gloo, 2 CPU processes): P, A, B saved whole, not as shards.
    (accelerate itself sets FSDP up only on GPUs, so the Trainer path runs on GPUs; this checks the gather.)"""
    script = tmp_path / "fsdp2_soft_prompt.py"
    script.write_text(FSDP2_SCRIPT)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(tmp_path / "adapter")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ok0" in proc.stdout and "ok1" in proc.stdout


FSDP2_HEAD_SCRIPT = '''
import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from transformers import LlamaConfig, LlamaForCausalLM
from posttrain.methods.verbalizer_head import head_logits

dist.init_process_group("gloo")
rank = dist.get_rank()
ids = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
where, pos, rows = torch.tensor([0, 1]), torch.tensor([4, 3]), torch.tensor([11, 12, 13])
target = torch.tensor([0, 2])
for tied in (True, False):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied)
    model, ref = LlamaForCausalLM(cfg), LlamaForCausalLM(cfg)
    ref.load_state_dict(model.state_dict())
    for layer in model.model.layers:  # the fsdp preset: each decoder layer a unit, the rest (embeddings, head) the root
        fully_shard(layer)
    fully_shard(model)
    opt, ref_opt = torch.optim.SGD(model.parameters(), lr=0.5), torch.optim.SGD(ref.parameters(), lr=0.5)
    for step in range(3):  # restricted logits under FSDP2 == full logits unsharded, through updates
        expected = ref(**inputs).logits[where, pos][:, rows]
        got = head_logits(model, inputs, where, pos, rows)
        assert torch.allclose(got, expected, atol=1e-5), (tied, step, (got - expected).abs().max())
        for loss, o in ((torch.nn.functional.cross_entropy(got, target), opt),
                        (torch.nn.functional.cross_entropy(expected, target), ref_opt)):
            o.zero_grad()
            loss.backward()
            o.step()
    with torch.no_grad():
        assert torch.allclose(head_logits(model, inputs, where, pos, rows),
                              ref(**inputs).logits[where, pos][:, rows], atol=1e-5)
dist.destroy_process_group()
print(f"ok{rank}", flush=True)
'''


@pytest.mark.skipif(_can_spawn() is not None, reason=str(_can_spawn()))
def test_restricted_head_logits_under_fsdp2_equal_full_logits_through_updates(tmp_path):
    """Prompt-FT's restricted head (W[rows] after the forward) under real FSDP2 sharding with the fsdp preset's
    wrapping (decoder layers as units; embeddings and LM head in the root, unsharded from the root's forward until
    its backward): the logits and three SGD updates equal full logits on an unsharded copy, tied and untied."""
    script = tmp_path / "fsdp2_head.py"
    script.write_text(FSDP2_HEAD_SCRIPT)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script)], env=env, capture_output=True, text=True, timeout=300)
    # both streams in the message: this test failed once in ~12 full-suite runs (session 7) without a record of why
    assert proc.returncode == 0, f"rc {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-4000:]}"
    assert "ok0" in proc.stdout and "ok1" in proc.stdout


def test_fsdp_or_deepspeed_launch_that_did_not_take_effect_fails(monkeypatch):
    from types import SimpleNamespace

    from posttrain.errors import TrainingError

    trainer = SimpleNamespace(is_fsdp_enabled=False, is_deepspeed_enabled=False,
                              args=SimpleNamespace(device=torch.device("cpu")))
    distributed.check_engine(trainer)  # plain DDP / one process: nothing asked for
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(TrainingError, match="asked for FSDP but accelerate did not set it up on this device"):
        distributed.check_engine(trainer)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(TrainingError, match="launched as 2 processes but the Trainer set up world size 1"):
        distributed.check_world_size(SimpleNamespace(world_size=1))


def test_per_example_eval_sums_are_the_same_packed_or_padded(tokenizer, tiny_llama):
    """The eval loss is gathered per example (so padding repeats can be dropped); packing must not change it."""
    from posttrain.config import LossConfig
    from posttrain.data.chat import resolve_template
    from posttrain.data.sft import SFTCollator, build_sft_dataset
    from posttrain.engine import per_example_nll
    from posttrain.losses import token_nll

    data, _ = build_sft_dataset(tokenizer, ROWS, resolve_template(tokenizer, "tokenizer"),
                                LossConfig(mode="output_only"), 64)
    features = [data[i] for i in range(len(data))]
    padded = SFTCollator(tokenizer.pad_token_id)(features)
    packed = SFTCollator(tokenizer.pad_token_id, packing=True)(features)
    with torch.no_grad():
        sums, counts = per_example_nll(tiny_llama, padded)
        psums, pcounts = per_example_nll(tiny_llama, packed)
        total = token_nll(tiny_llama, padded)[0].double().sum()
    assert sums.shape == psums.shape == (len(ROWS),)
    assert torch.equal(counts, pcounts) and bool((counts > 0).all())
    assert torch.allclose(sums, psums, atol=1e-4, rtol=0)
    assert float(sums.sum()) == pytest.approx(float(total), rel=1e-9)
