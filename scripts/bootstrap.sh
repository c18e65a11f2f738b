#!/usr/bin/env bash
# Set up everything this project needs on a fresh machine, idempotently:
#   scripts/bootstrap.sh          the package and its runtime dependencies in .venv
#   scripts/bootstrap.sh --test   a separate .venv-test with the package, the test tools and the
#                                 example plugins; the real IPFS peers (js-ipfs from external/,
#                                 Debian ipfs-cid) and a running PostgreSQL
#   scripts/bootstrap.sh --py310  .venv-py310 on a Python 3.10 interpreter (PYTHON310, else pyenv's
#                                 or python3.10 on PATH): the package and pytest only
# They are kept apart so that nothing installed for the tests (the example plugins' commands,
# say) shows up in the .venv that scripts/demo.sh and users run.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1
export PIP_DISABLE_PIP_VERSION_CHECK=1

# the oldest Python the package declares (requires-python): the package and pytest, nothing else
if [ "${1:-}" = "--py310" ]; then
    py310=${PYTHON310:-}
    if [ -z "$py310" ]; then
        for candidate in /root/.pyenv/versions/3.10*/bin/python "$(command -v python3.10 || true)"; do
            if [ -x "$candidate" ]; then py310=$candidate; break; fi
        done
    fi
    if [ ! -x "$py310" ] || ! "$py310" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))'; then
        echo "no Python 3.10 interpreter found (set PYTHON310)" >&2
        exit 3
    fi
    stamp=.venv-py310/.installed
    # reinstall only when the dependencies may have changed: idempotent and quick when cached
    if [ ! -x .venv-py310/bin/python ] || [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        echo "==> installing the package with pytest in .venv-py310 ($py310)"
        [ -x .venv-py310/bin/python ] || "$py310" -m venv .venv-py310
        .venv-py310/bin/pip install -q -e . 'pytest>=8' 'pytest-timeout>=2.3' \
            'hypothesis>=6.100' 'multiformats>=0.3.1' 2>&1 | { grep -v 'is ignored' || true; }
        touch "$stamp"
    fi
    exit 0
fi

PYTHON=${PYTHON:-python3}
venv=.venv
[ "$want_test" = 1 ] && venv=.venv-test
if [ ! -x "$venv/bin/python" ]; then
    echo "==> creating $venv"
    "$PYTHON" -m venv "$venv"
fi
if [ "$want_test" = 1 ]; then
    echo "==> installing the package with test tools in $venv"
    "$venv/bin/pip" install -q -e '.[test]'
    echo "==> installing the example plugins in $venv"
    "$venv/bin/pip" install -q -e examples/rubix-integration-example-plugin \
        -e examples/rubix-integration-notifier-plugin
    echo "==> installing the ScyllaDB pin state plugin in $venv"
    "$venv/bin/pip" install -q -e plugins/rubix-integration-scylla
else
    echo "==> installing the package in $venv"
    "$venv/bin/pip" install -q -e .
    # a .venv made by an older --test run still holds the example plugin: its commands would
    # show up in the user's command line
    for example in rubix-integration-cidfolder rubix-integration-notifier; do
        if "$venv/bin/pip" show -q "$example" >/dev/null 2>&1; then
            echo "==> removing the example plugin $example from $venv (tests use .venv-test)"
            "$venv/bin/pip" uninstall -q -y "$example"
        fi
    done
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
