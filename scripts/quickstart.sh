#!/usr/bin/env bash
# Set up (if needed) and run the main job: IT vs IM on the bundled SmolLM2-135M-Instruct, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/posttrain quickstart "$@"
