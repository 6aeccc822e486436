#!/usr/bin/env bash
# Remove what edge/install.sh added: the unit (stopped and disabled first), /opt/shopfloor with
# the virtual environment, the compiled-kernel cache, and the config and the empty credential
# file if they are as install wrote them. An edited config, a password and the checkpoints in
# /var/lib/shopfloor are kept unless --purge. Safe to run again.
#
# Exit codes: 0 done (or nothing to do), 1 failure, 2 bad arguments.
set -Eeuo pipefail

ME=uninstall.sh
UNIT_NAME=shopfloor-agent.service

usage() {
  cat <<EOF
usage: uninstall.sh [--prefix DIR] [--no-systemctl] [--purge] [--help]

Remove the shopfloor agent installed by edge/install.sh.

  --prefix DIR     the --prefix the agent was installed with (default: /).
  --no-systemctl   no systemctl calls (stop and disable the unit yourself first).
  --purge          also remove the checkpoints (/var/lib/shopfloor: everything the agent has
                   learned), the config even if edited, the broker password and the unit's
                   drop-ins: nothing of shopfloor is left.
  -h, --help       this text.

Kept without --purge: an edited (or not installer-written) /etc/shopfloor/agent.toml, a
non-empty /etc/shopfloor/mqtt-password, /var/lib/shopfloor, and drop-ins in
/etc/systemd/system/$UNIT_NAME.d. Exit codes: 0 done, 1 failure, 2 bad arguments.
EOF
}

say() { printf '%s\n' "$*"; }
die() { printf '%s: error: %s\n' "$ME" "$*" >&2; exit 1; }
bad_usage() { printf '%s: %s (see --help)\n' "$ME" "$*" >&2; exit 2; }
trap 'printf "%s: failed at line %s: %s\n" "$ME" "$LINENO" "$BASH_COMMAND" >&2; exit 1' ERR

PREFIX="" SYSTEMCTL=1 PURGE=0
while [ $# -gt 0 ]; do
  case $1 in
    --prefix)
      if [ $# -lt 2 ] || [ -z "$2" ]; then bad_usage "--prefix needs a value"; fi
      PREFIX=$2; shift 2 ;;
    --prefix=?*) PREFIX=${1#*=}; shift ;;
    --no-systemctl) SYSTEMCTL=0; shift ;;
    --purge) PURGE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) bad_usage "unknown argument: $1" ;;
  esac
done
if [ -n "$PREFIX" ]; then
  case $PREFIX in /*) ;; *) PREFIX=$PWD/$PREFIX ;; esac
  PREFIX=${PREFIX%/}
fi
if [ -z "$PREFIX" ] && [ "$(id -u)" -ne 0 ]; then
  die "removing from /opt, /etc and /var needs root: run it with sudo, or give --prefix DIR"
fi

OPT=$PREFIX/opt/shopfloor
ETC=$PREFIX/etc/shopfloor
CONFIG=$ETC/agent.toml
PASSWORD=$ETC/mqtt-password
UNIT=$PREFIX/etc/systemd/system/$UNIT_NAME
CHANGES=0

changed() { CHANGES=$((CHANGES + 1)); say "  $*"; }
remove() {  # remove PATH LABEL: rm -rf PATH if it exists (a symlink itself, not its target)
  if [ -e "$1" ] || [ -L "$1" ]; then
    rm -rf -- "$1" || die "cannot remove $1"
    changed "$2: removed $1"
  fi
}

if [ "$PURGE" -eq 1 ]; then
  say "shopfloor uninstall: ${PREFIX:-/} (purge)"
else
  say "shopfloor uninstall: ${PREFIX:-/}"
fi

# --- systemd: stop first, so nothing runs from files about to go ------------------------------

if [ "$SYSTEMCTL" -eq 0 ]; then
  say "  systemctl: skipped (--no-systemctl)"
elif ! command -v systemctl >/dev/null 2>&1; then
  die "systemctl not found: --no-systemctl removes the files without it"
elif [ -n "$PREFIX" ]; then
  if [ "$(systemctl --root="$PREFIX" is-enabled "$UNIT_NAME" 2>/dev/null || true)" = enabled ]; then
    systemctl --root="$PREFIX" --quiet disable "$UNIT_NAME"
    changed "systemctl: disabled $UNIT_NAME in $PREFIX"
  fi
elif [ -d /run/systemd/system ]; then
  if systemctl --quiet is-active "$UNIT_NAME" 2>/dev/null; then
    systemctl stop "$UNIT_NAME"  # the agent writes its last checkpoint on the way out
    changed "systemctl: stopped $UNIT_NAME"
  fi
  if systemctl --quiet is-enabled "$UNIT_NAME" 2>/dev/null; then
    systemctl --quiet disable "$UNIT_NAME"
    changed "systemctl: disabled $UNIT_NAME"
  fi
elif [ -f "$UNIT" ]; then
  systemctl --quiet disable "$UNIT_NAME" 2>/dev/null || true
fi

unit_removed=0
if [ -f "$UNIT" ]; then
  remove "$UNIT" unit
  unit_removed=1
fi
if [ -d "$UNIT.d" ]; then
  if [ "$PURGE" -eq 1 ]; then
    remove "$UNIT.d" unit
  else
    say "  unit: kept your drop-ins in $UNIT.d (--purge removes them)"
  fi
fi
if [ "$unit_removed" -eq 1 ] && [ "$SYSTEMCTL" -eq 1 ] && [ -z "$PREFIX" ] \
   && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl reset-failed "$UNIT_NAME" 2>/dev/null || true
fi

# --- config: removed only as install wrote it ---------------------------------------------------

if [ -f "$CONFIG" ]; then
  written=""
  if [ -f "$OPT/agent.toml.sha256" ]; then written=$(cat "$OPT/agent.toml.sha256"); fi
  if [ "$PURGE" -eq 1 ]; then
    remove "$CONFIG" config
  elif [ -n "$written" ] && [ "$(sha256sum "$CONFIG" | cut -d' ' -f1)" = "$written" ]; then
    remove "$CONFIG" config
  elif [ -n "$written" ]; then
    say "  config: kept $CONFIG (edited since install wrote it; --purge removes it)"
  else
    say "  config: kept $CONFIG (no record that install.sh wrote it as it is; --purge" \
        "removes it)"
  fi
fi
if [ -f "$PASSWORD" ]; then
  if [ "$PURGE" -eq 1 ] || [ ! -s "$PASSWORD" ]; then
    remove "$PASSWORD" credential
  else
    say "  credential: kept $PASSWORD (it holds a password; --purge removes it)"
  fi
fi
if [ -d "$ETC" ] && [ -z "$(ls -A "$ETC")" ]; then
  rmdir "$ETC"
  changed "config: removed $ETC (empty)"
fi

# --- the program and its caches ------------------------------------------------------------------

remove "$OPT" program
# Compiled kernels (the unit's CacheDirectory=; DynamicUser keeps the real one under private/).
remove "$PREFIX/var/cache/shopfloor" cache
remove "$PREFIX/var/cache/private/shopfloor" cache

# --- state: what the agent has learned ------------------------------------------------------------

# DynamicUser= keeps the real directory under private/ and a symlink where the config expects it.
STATE=$PREFIX/var/lib/shopfloor
PRIVATE_STATE=$PREFIX/var/lib/private/shopfloor
if [ "$PURGE" -eq 1 ]; then
  remove "$STATE" state
  remove "$PRIVATE_STATE" state
elif [ -e "$STATE" ] || [ -L "$STATE" ] || [ -e "$PRIVATE_STATE" ]; then
  say "  state: kept $STATE (checkpoints: what the agent learned; --purge removes them)"
fi

# Under --prefix the directories install made above ours go too, when nothing else is in them.
if [ -n "$PREFIX" ]; then
  for d in opt etc/systemd/system etc/systemd etc var/cache/private var/cache var/lib/private \
           var/lib var; do
    if [ -d "$PREFIX/$d" ] && [ -z "$(ls -A "$PREFIX/$d")" ]; then rmdir "$PREFIX/$d"; fi
  done
fi

if [ "$CHANGES" -eq 0 ]; then
  say "shopfloor uninstall: nothing to remove"
else
  say "shopfloor uninstall: done ($CHANGES change(s))"
fi
