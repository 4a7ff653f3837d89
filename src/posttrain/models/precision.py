"""Mixed precision as a property of a run: which precision ``train.mixed_precision`` resolves to on this machine,
and how a reloaded run's model gets the autocast it was trained and scored under.

During training, accelerate patches the prepared model's ``forward``: autocast in the run's precision, outputs cast
back to fp32. The engine scores the test split with that patched model, so a run trained under bf16 reports bf16
scores. ``autocast_forward`` puts the same patch on a model loaded from the run directory (``generation.load_run``
reads ``run_meta.json``: ``mixed_precision.used``), so ``tasks eval``, ``loss-eval``, ``generate`` and
``posttrain.load_run`` reproduce the run's own numbers instead of fp32 ones that differ in the third decimal.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
from accelerate.utils import convert_to_fp32

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def bf16_hardware() -> bool:
    """Does this machine have bf16 matmul kernels: a CUDA GPU that supports bf16, or a CPU reporting AVX512-BF16 or
    AMX (Linux /proc/cpuinfo flags; elsewhere: assume not)?"""
    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def resolve_precision(precision: str) -> str:
    """``auto`` -> bf16 on bf16 hardware, else none; any other value as given."""
    if precision != "auto":
        return precision
    return "bf16" if bf16_hardware() else "none"


def run_precision(run_dir: str | Path) -> str:
    """The precision a run's forward passes used (``run_meta.json``; ``none`` for runs that predate the record)."""
    path = Path(run_dir) / "run_meta.json"
    try:
        used = json.loads(path.read_text()).get("mixed_precision", {}).get("used", "none")
    except (OSError, ValueError, AttributeError):
        return "none"
    return used if used in AUTOCAST_DTYPES else "none"


def autocast_forward(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """Run ``model.forward`` (and so ``model(...)`` and ``generate``'s steps through it) under autocast in
    ``precision`` with fp32 outputs, as accelerate does to a prepared model; ``none`` leaves it as it is. The
    device type is read at each call, so the model may move after this. Returns ``model``."""
    dtype = AUTOCAST_DTYPES.get(precision)
    if dtype is None:
        return model
    inner = model.forward

    @functools.wraps(inner)
    def forward(*args, **kwargs):
        device = next(model.parameters()).device.type
        with torch.autocast(device_type=device, dtype=dtype):
            outputs = inner(*args, **kwargs)
        return convert_to_fp32(outputs)

    model._posttrain_plain_forward = inner
    model.forward = forward
    return model
