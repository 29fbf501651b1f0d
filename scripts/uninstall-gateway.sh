#!/usr/bin/env bash
# Remove the Kerbline gateway service (`make uninstall-gateway`, as root): the unit and /opt/kerbline.
#
# The data stays: /etc/kerbline (config, device registry with its keys), /var/lib/kerbline (the spool,
# which may hold reports not yet delivered), local drop-ins and the `kerbline` user, so a reinstall
# carries on where this one stopped. PURGE=1 removes those too. DESTDIR, PREFIX and UNITDIR as for install-gateway.sh.
# Running it again, or on a box where nothing is installed, is harmless.
set -euo pipefail

DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/kerbline}
UNITDIR=${UNITDIR:-/etc/systemd/system}
PURGE=${PURGE:-0}
CONFDIR=/etc/kerbline
STATEDIR=/var/lib/kerbline
USER_NAME=kerbline
UNIT=kerbline-gateway.service

die() { echo "uninstall-gateway: $*" >&2; exit 1; }
say() { echo "uninstall-gateway: $*"; }

case "$PREFIX" in /?*) ;; *) die "PREFIX must be an absolute path other than /, got '$PREFIX'" ;; esac
PREFIX=${PREFIX%/}
[ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ] && die "run as root (or set DESTDIR)"
root=$DESTDIR
live=0
[ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && live=1

if [ "$live" = 1 ]; then
    # Stopping drains upstream and closes the spool cleanly (SIGTERM, within TimeoutStopSec).
    systemctl disable --now "$UNIT" >/dev/null 2>&1 || true
fi
rm -f "$root$UNITDIR/$UNIT"
[ "$live" = 1 ] && systemctl daemon-reload
rm -rf "$root$PREFIX"
say "removed $UNITDIR/$UNIT and $PREFIX"

if [ "$PURGE" != 1 ]; then
    say "kept $CONFDIR, $STATEDIR (config, registry, spool) and any drop-ins; PURGE=1 removes them"
    exit 0
fi
rm -rf "$root$CONFDIR" "$root$STATEDIR" "$root$UNITDIR/$UNIT.d"
if [ -z "$DESTDIR" ] && getent passwd "$USER_NAME" >/dev/null; then
    userdel "$USER_NAME" >/dev/null 2>&1 || true
    if getent group "$USER_NAME" >/dev/null; then
        groupdel "$USER_NAME" >/dev/null 2>&1 || true
    fi
fi
say "purged $CONFDIR, $STATEDIR and the $USER_NAME user"
