#!/usr/bin/env bash
# Idempotent set-up of a development/CI machine (Debian): the project's venv and the Debian tools the tests
# run for real. `make demo` and `make test` call it first, so a fresh clone needs nothing else.
#
#   - .venv from python3 (>= 3.11; override with PYTHON=/path/to/python3.x)
#   - pip install -e '.[dev]', only when pyproject.toml or the set of package folders changed since the
#     last install (stamp in .venv)
#   - Debian packages whose binaries the tests start (mosquitto; add systemd-analyze etc. in DEBIAN_TOOLS)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd -P)
VENV="$ROOT/.venv"
STAMP="$VENV/.kerbline-bootstrap-stamp"
PYTHON=${PYTHON:-python3}
# The editable install maps only the top-level packages that exist when it runs (see pyproject.toml's
# packages.find), so a package folder that appears later must trigger a reinstall.
PACKAGE_ROOTS=(firmware/kerbline gateway simulator)

die() { echo "bootstrap: $*" >&2; exit 1; }

# "<absolute binary path> <Debian package>" pairs.
DEBIAN_TOOLS=(
    "/usr/sbin/mosquitto mosquitto"
    "/usr/bin/openssl openssl"
    # tests/deploy: `systemd-analyze verify` on the gateway's unit
    "/usr/bin/systemd-analyze systemd"
)

ensure_python() {
    command -v "$PYTHON" >/dev/null 2>&1 || die "no '$PYTHON' on PATH; install Python >= 3.11 (Debian: sudo apt-get install python3 python3-venv)"
    "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
        || die "$("$PYTHON" -V 2>&1) is too old: Kerbline needs Python >= 3.11 (set PYTHON=/path/to/python3.11)"
}

# A venv is only usable at the path it was created at (its scripts' shebangs are absolute).
venv_usable() {
    [ -x "$VENV/bin/python" ] || return 1
    local prefix
    prefix=$("$VENV/bin/python" -c 'import sys; print(sys.prefix)' 2>/dev/null) || return 1
    [ "$(cd "$prefix" && pwd -P)" = "$(cd "$VENV" && pwd -P)" ] || return 1
    "$VENV/bin/python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'
}

ensure_venv() {
    if ! venv_usable; then
        ensure_python
        echo "bootstrap: creating $VENV with $("$PYTHON" -V 2>&1)"
        "$PYTHON" -m venv --clear "$VENV" \
            || die "'$PYTHON -m venv' failed (Debian: sudo apt-get install python3-venv)"
    fi
    local want have=""
    want="$(sha256sum pyproject.toml | cut -d' ' -f1) $ROOT"
    for package in "${PACKAGE_ROOTS[@]}"; do
        [ -f "$package/__init__.py" ] && want="$want $package"
    done
    [ -f "$STAMP" ] && have=$(cat "$STAMP")
    if [ "$want" != "$have" ]; then
        echo "bootstrap: pip install -e '.[dev]' (first run, or pyproject.toml or package folders changed)"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install -qq -e ".[dev]"
        echo "$want" > "$STAMP"
    fi
}

# The Debian package's own service must not run: tests start their brokers themselves on free ports.
stop_package_service() {
    local service=$1
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$service" 2>/dev/null; then
        systemctl disable --now "$service" >/dev/null 2>&1 || true
    fi
    if [ -x "/etc/init.d/$service" ] && "/etc/init.d/$service" status >/dev/null 2>&1; then
        "/etc/init.d/$service" stop >/dev/null 2>&1 || true
    fi
}

ensure_debian_tool() {
    local binary=$1 package=$2
    [ -x "$binary" ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        die "$binary is missing: install the Debian package '$package' (sudo apt-get install $package), then re-run"
    fi
    echo "bootstrap: apt-get install $package (for $binary)"
    # Keep the package's maintainer scripts from starting its service (standard Debian policy hook).
    local policy=/usr/sbin/policy-rc.d added_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && added_policy=1
    fi
    local rc=0
    {
        apt-cache show "$package" >/dev/null 2>&1 || apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >/dev/null
    } || rc=$?
    [ "$added_policy" = 1 ] && rm -f "$policy"
    [ "$rc" = 0 ] || die "apt-get install $package failed (exit $rc)"
    stop_package_service "$package"
    [ -x "$binary" ] || die "package '$package' installed but $binary is still missing"
}

ensure_venv
for tool in "${DEBIAN_TOOLS[@]}"; do
    # shellcheck disable=SC2086
    ensure_debian_tool $tool
done
