#!/usr/bin/env bash
# Set up the package and run the main job on the embedded default store: create a realistic sample
# of Rubix nodes (demo/ in the data dir), sync it, print the summary and the per-node report.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/rubix-integration status
.venv/bin/rubix-integration demo "$@"
