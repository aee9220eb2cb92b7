#!/bin/sh
# Lint, type-check and test aiport (after `sh scripts/setup.sh --test`).
set -eu
cd "$(dirname "$0")/.."
.venv/bin/ruff check core plugins contrib_providers tests bench
.venv/bin/mypy core
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
