#!/usr/bin/env bash
# Run the default (fast) test suite after making sure the environment is set up.
# Slow tests: `bash scripts/test.sh -m slow`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
