#!/usr/bin/env bash
# Install or upgrade the Kerbline gateway as a systemd service (`make install-gateway`, as root).
#
#   /opt/kerbline/venv                        the gateway in its own venv (system Python >= 3.11)
#   /opt/kerbline/share/                      gateway.toml.example, doc/operations.md
#   /etc/kerbline/gateway.toml                the config: the example, written only when there is none
#   /etc/kerbline/registry.toml               the device registry: empty, written only when there is none
#   /var/lib/kerbline/                        the state: spool, device state (the unit's StateDirectory=)
#   /etc/systemd/system/kerbline-gateway.service
#
# Running it again is harmless; on an upgrade the venv is rebuilt beside the old one and swapped in, and
# config, registry and state are left alone. A live install (no DESTDIR) also creates the `kerbline`
# system user, gives /etc/kerbline to root:kerbline, enables the unit and restarts the service if it was
# running; it does not start a fresh install (configure it first: docs/operations.md).
#
# Overrides (environment or make variables):
#   DESTDIR   lay everything out under this root instead of /, touching no user, group or systemd
#             (packaging, tests); the paths inside the files stay the live ones
#   PREFIX    where the venv and shared files go (default /opt/kerbline); the unit is rewritten to match
#   UNITDIR   where the unit goes (default /etc/systemd/system)
#   PYTHON    the interpreter the venv is made from (default /usr/bin/python3: the service must not run
#             on a Python under /home or /root, which ProtectHome= hides)
#   PIP_ARGS  extra pip arguments (e.g. --no-index --find-links /srv/wheels for an offline box)
# /etc/kerbline and /var/lib/kerbline are not movable: the unit's ConfigurationDirectory= and
# StateDirectory= name them.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SRC=$(pwd -P)
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/kerbline}
UNITDIR=${UNITDIR:-/etc/systemd/system}
PYTHON=${PYTHON:-/usr/bin/python3}
PIP_ARGS=${PIP_ARGS:-}
CONFDIR=/etc/kerbline
STATEDIR=/var/lib/kerbline
USER_NAME=kerbline
UNIT=kerbline-gateway.service

die() { echo "install-gateway: $*" >&2; exit 1; }
say() { echo "install-gateway: $*"; }

case "$PREFIX" in /?*) ;; *) die "PREFIX must be an absolute path other than /, got '$PREFIX'" ;; esac
PREFIX=${PREFIX%/}
[ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ] && die "run as root (or set DESTDIR to lay the files out elsewhere)"
"$PYTHON" -c 'import sys, venv, ensurepip; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null \
    || die "$PYTHON is missing, older than 3.11 or has no venv module (Debian: apt-get install python3-venv)"

root=$DESTDIR
venv=$PREFIX/venv
build=$root$PREFIX/venv.new

# --- the venv: built beside the running one, then swapped in ----------------------------------------
say "building the venv in $build"
rm -rf "$build"
mkdir -p "$root$PREFIX"
"$PYTHON" -m venv "$build"
# pip builds in the tree it is given: a clean copy of what the package holds, so no stale build/ of the
# clone gets into the venv and no root-owned build files are left in it.
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
tar -C "$SRC" -c --exclude=__pycache__ --exclude='*.pyc' --exclude='*.mpy' \
    pyproject.toml README.md firmware gateway simulator | tar -C "$src" -x
# shellcheck disable=SC2086
"$build/bin/python" -m pip install --quiet --disable-pip-version-check --no-compile $PIP_ARGS "$src"
# Scripts and activate files name the directory they were made in; make them name the final one.
{ grep -rlIF "$build" "$build/bin" "$build/pyvenv.cfg" || true; } | while read -r file; do
    sed -i "s#$build#$venv#g" "$file"
done
# Compiled once here, with the final paths in tracebacks: under ProtectSystem=strict the service
# cannot write __pycache__ itself.
"$build/bin/python" -m compileall -q -j 0 -s "$build" -p "$venv" "$build/lib" >/dev/null
if [ -d "$root$venv" ]; then
    rm -rf "$root$venv.old"
    mv "$root$venv" "$root$venv.old"
fi
mv "$build" "$root$venv"
rm -rf "$root$venv.old"

install -d -m 0755 "$root$PREFIX/share/doc"
install -m 0644 deploy/gateway.toml "$root$PREFIX/share/gateway.toml.example"
install -m 0644 docs/operations.md "$root$PREFIX/share/doc/operations.md"

# --- config and state: created when missing, never overwritten ---------------------------------------
install -d -m 0750 "$root$CONFDIR" "$root$STATEDIR"
if [ ! -e "$root$CONFDIR/gateway.toml" ]; then
    install -m 0640 deploy/gateway.toml "$root$CONFDIR/gateway.toml"
    say "wrote $CONFDIR/gateway.toml (the example: edit it)"
else
    say "kept $CONFDIR/gateway.toml"
fi
if [ ! -e "$root$CONFDIR/registry.toml" ]; then
    install -m 0640 /dev/null "$root$CONFDIR/registry.toml"
    printf '# Device registry: written by the technician tools (docs/operations.md). Holds device keys.\n' \
        > "$root$CONFDIR/registry.toml"
    say "wrote an empty $CONFDIR/registry.toml"
else
    say "kept $CONFDIR/registry.toml"
fi

# --- the unit ------------------------------------------------------------------------------------------
install -d -m 0755 "$root$UNITDIR"
sed "s#/opt/kerbline#$PREFIX#g" deploy/$UNIT > "$root$UNITDIR/$UNIT.new"
chmod 0644 "$root$UNITDIR/$UNIT.new"
mv "$root$UNITDIR/$UNIT.new" "$root$UNITDIR/$UNIT"

if [ -n "$DESTDIR" ]; then
    say "laid out under $DESTDIR (no user, ownership or systemd changes)"
    exit 0
fi

# --- live install: the user, ownership, systemd ---------------------------------------------------
if ! getent passwd "$USER_NAME" >/dev/null; then
    useradd --system --user-group --home-dir "$STATEDIR" --no-create-home --shell /usr/sbin/nologin \
        --comment "Kerbline gateway" "$USER_NAME"
    say "created the system user $USER_NAME"
fi
chown root:"$USER_NAME" "$CONFDIR" "$CONFDIR/gateway.toml" "$CONFDIR/registry.toml"
chown "$USER_NAME:$USER_NAME" "$STATEDIR"

if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable "$UNIT" >/dev/null
    if systemctl is-active --quiet "$UNIT"; then
        systemctl restart "$UNIT"
        say "upgraded and restarted $UNIT"
    else
        say "$UNIT enabled; start it with: systemctl start kerbline-gateway"
    fi
else
    say "systemd is not running here: $UNIT installed, not enabled"
fi
