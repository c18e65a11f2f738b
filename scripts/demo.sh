#!/usr/bin/env bash
# Set up the package and run the main job on the embedded default store.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/rubix-integration status
