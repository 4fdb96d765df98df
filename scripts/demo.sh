#!/usr/bin/env bash
# Set up and run the main job (the README's demo command).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q "torch==2.13.0" -e .
ptmoe demo "$@"
