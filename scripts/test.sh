#!/usr/bin/env bash
# Run every check the project has: lint, types, the whole test suite against real services.
# Everything runs in .venv-test (see scripts/bootstrap.sh); .venv is left to the package alone.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --test
echo "==> ruff"
.venv-test/bin/ruff check rubix_integration tests bench examples
echo "==> mypy"
.venv-test/bin/mypy rubix_integration
echo "==> pytest"
.venv-test/bin/python -m pytest -q -p no:cacheprovider "$@"
