#!/usr/bin/env bash
# Run every check the project has: lint, types, the whole test suite against real services.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --test
echo "==> ruff"
.venv/bin/ruff check rubix_integration tests bench examples
echo "==> mypy"
.venv/bin/mypy rubix_integration
echo "==> pytest"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
