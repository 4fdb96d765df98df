#!/usr/bin/env bash
# Set up and run the test suite (the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q "torch==2.13.0" -e ".[test]"
python -m ruff check src tests
python -m pytest -q "$@"
