#!/usr/bin/env bash
# Set up everything this project needs on a fresh machine, idempotently:
#   scripts/bootstrap.sh          the package and its runtime dependencies in .venv
#   scripts/bootstrap.sh --test   a separate .venv-test with the package, the test tools and the
#                                 example plugin; the real IPFS peers (js-ipfs from external/,
#                                 Debian ipfs-cid) and a running PostgreSQL
# The two are kept apart so that nothing installed for the tests (the example plugin's commands,
# say) shows up in the .venv that scripts/demo.sh and users run.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

PYTHON=${PYTHON:-python3}
venv=.venv
[ "$want_test" = 1 ] && venv=.venv-test
if [ ! -x "$venv/bin/python" ]; then
    echo "==> creating $venv"
    "$PYTHON" -m venv "$venv"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ "$want_test" = 1 ]; then
    echo "==> installing the package with test tools in $venv"
    "$venv/bin/pip" install -q -e '.[test]'
    echo "==> installing the example plugin in $venv"
    "$venv/bin/pip" install -q -e examples/rubix-integration-example-plugin
else
    echo "==> installing the package in $venv"
    "$venv/bin/pip" install -q -e .
    # a .venv made by an older --test run still holds the example plugin: its commands would
    # show up in the user's command line
    if "$venv/bin/pip" show -q rubix-integration-cidfolder >/dev/null 2>&1; then
        echo "==> removing the example plugin from $venv (tests use .venv-test)"
        "$venv/bin/pip" uninstall -q -y rubix-integration-cidfolder
    fi
fi

if [ "$want_test" = 1 ]; then
    if ! command -v ipfs_cid >/dev/null 2>&1; then
        echo "==> installing Debian ipfs-cid (CID oracle)"
        if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
        timeout 600 $SUDO apt-get update -qq >/dev/null
        timeout 600 $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ipfs-cid >/dev/null
    fi
    echo "==> installing js-ipfs (external/)"
    bash external/install.sh
    if command -v pg_lsclusters >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432 -t 3; then
        echo "==> starting PostgreSQL"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
        for _ in $(seq 1 20); do pg_isready -q -h 127.0.0.1 -p 5432 -t 1 && break; sleep 0.5; done
    fi
fi
