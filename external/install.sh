#!/usr/bin/env bash
# Install the pinned third-party components under external/ (today: the js-ipfs reference peer).
# Idempotent: does nothing when node_modules is already in step with package-lock.json.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
jsipfs_dir="$here/js-ipfs"
bin="$jsipfs_dir/node_modules/.bin/jsipfs"
lock="$jsipfs_dir/package-lock.json"
installed_lock="$jsipfs_dir/node_modules/.package-lock.json"

die() {
    echo "external/install.sh: $*" >&2
    exit 1
}

command -v npm >/dev/null 2>&1 || die "npm is not on PATH (Node.js 20 with npm is required)"
[[ -f "$lock" ]] || die "$lock is missing; run 'npm install --no-audit --no-fund' in $jsipfs_dir once and commit the lock file"

if [[ -x "$bin" && -f "$installed_lock" && ! "$lock" -nt "$installed_lock" ]]; then
    echo "js-ipfs: up to date ($bin)"
    exit 0
fi

echo "js-ipfs: installing from package-lock.json (a few minutes, ~300 MB)"
# Not `npm ci`: an optional dependency deep in the tree (electron-eval -> headless) points at a
# tarball that no registry serves, so it is absent from the lock and `npm ci` refuses the lock.
# `npm install --no-save` installs exactly what the lock pins and leaves the lock untouched.
(cd "$jsipfs_dir" && timeout 1200 npm install --no-audit --no-fund --no-save --prefer-offline) \
    || die "npm install failed in $jsipfs_dir"
[[ -x "$bin" ]] || die "npm install finished but $bin does not exist"
echo "js-ipfs: installed ($bin)"
