#!/usr/bin/env bash
# Install or upgrade the shopfloor edge agent from this checkout: Debian 12, Raspberry Pi OS
# (arm64), Ubuntu 24.04. Safe to run again: it changes only what differs and says so.
#
#   /opt/shopfloor/venv                  the agent in a virtual environment (pip install <repo>)
#   /opt/shopfloor/*                     README, every option (agent.example.toml), the profiles,
#                                        uninstall.sh, and what install wrote (*.sha256)
#   /etc/shopfloor/agent.toml            written from a device profile only if missing: an
#                                        existing (edited) config is never overwritten
#   /etc/shopfloor/mqtt-password         created empty if missing (the unit's LoadCredential=)
#   /etc/systemd/system/shopfloor-agent.service   from deploy/systemd/, enabled and started
#   /var/lib/shopfloor                   checkpoints: created by systemd (StateDirectory=), never
#                                        touched here
#
# Exit codes: 0 done (or nothing to do), 1 failure, 2 bad arguments.
set -Eeuo pipefail
# The service runs as a dynamic user: everything but the credential must be world-readable,
# whatever root's umask is.
umask 022

ME=install.sh
UNIT_NAME=shopfloor-agent.service
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
  cat <<EOF
usage: edge/install.sh [--profile NAME] [--prefix DIR] [--python PYTHON] [--no-systemctl]
                       [--no-apt] [--help]

Install or upgrade the shopfloor agent from this checkout ($REPO).

  --profile NAME   raspberry-pi or industrial-pc: the config written when
                   /etc/shopfloor/agent.toml does not exist yet (an existing one is kept).
                   Default: raspberry-pi when /proc/device-tree/model names a Raspberry Pi
                   or the machine is ARM (aarch64, armv7l), else industrial-pc.
  --prefix DIR     install under DIR (DIR/opt/shopfloor, DIR/etc/shopfloor,
                   DIR/etc/systemd/system) instead of /: for tests and system images. The
                   unit and the paths inside it still name /opt and /etc. Needs no root.
                   With systemctl, only \`systemctl --root=DIR enable\` runs (offline).
  --python PYTHON  the interpreter for the virtual environment (default: python3); it must
                   be Python 3.11 or later (Ubuntu 22.04: apt-get install python3.11
                   python3.11-venv, then --python python3.11).
  --no-systemctl   no systemctl calls: the unit is installed but neither enabled nor started.
  --no-apt         never run apt-get; without it, a missing venv module is installed with
                   apt-get (as root; otherwise the script stops and names the package).
  -h, --help       this text.

An upgrade (a second run) reinstalls the package into the existing environment when the
checkout changed, updates the unit, restarts a running agent, and never touches an existing
config or the state. Exit codes: 0 done, 1 failure, 2 bad arguments.
EOF
}

say() { printf '%s\n' "$*"; }
die() { printf '%s: error: %s\n' "$ME" "$*" >&2; exit 1; }
bad_usage() { printf '%s: %s (see --help)\n' "$ME" "$*" >&2; exit 2; }
trap 'printf "%s: failed at line %s: %s\n" "$ME" "$LINENO" "$BASH_COMMAND" >&2; exit 1' ERR

PROFILE="" PREFIX="" PYTHON=python3 SYSTEMCTL=1 APT=1
while [ $# -gt 0 ]; do
  case $1 in
    --profile|--prefix|--python)
      if [ $# -lt 2 ] || [ -z "$2" ]; then bad_usage "$1 needs a value"; fi
      case $1 in
        --profile) PROFILE=$2 ;;
        --prefix) PREFIX=$2 ;;
        --python) PYTHON=$2 ;;
      esac
      shift 2 ;;
    --profile=?*) PROFILE=${1#*=}; shift ;;
    --prefix=?*) PREFIX=${1#*=}; shift ;;
    --python=?*) PYTHON=${1#*=}; shift ;;
    --no-systemctl) SYSTEMCTL=0; shift ;;
    --no-apt) APT=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) bad_usage "unknown argument: $1" ;;
  esac
done
case $PROFILE in
  ""|raspberry-pi|industrial-pc) ;;
  *) bad_usage "unknown profile '$PROFILE': raspberry-pi or industrial-pc" ;;
esac
if [ -n "$PREFIX" ]; then
  case $PREFIX in /*) ;; *) PREFIX=$PWD/$PREFIX ;; esac
  PREFIX=${PREFIX%/}  # "/" becomes "", the real root
fi

OPT=$PREFIX/opt/shopfloor
VENV=$OPT/venv
ETC=$PREFIX/etc/shopfloor
CONFIG=$ETC/agent.toml
PASSWORD=$ETC/mqtt-password
UNIT=$PREFIX/etc/systemd/system/$UNIT_NAME
UNIT_SOURCE=$REPO/deploy/systemd/$UNIT_NAME
STATE=$PREFIX/var/lib/shopfloor
CHANGES=0
PACKAGE_CHANGED=0
UNIT_CHANGED=0

changed() { CHANGES=$((CHANGES + 1)); say "  $*"; }

# --- checks before anything is written -------------------------------------------------------

[ -f "$UNIT_SOURCE" ] || die "the systemd unit $UNIT_SOURCE is missing from this checkout"
[ -f "$REPO/pyproject.toml" ] || die "$REPO is not a shopfloor checkout (no pyproject.toml)"
if [ -z "$PREFIX" ] && [ "$(id -u)" -ne 0 ]; then
  die "installing into /opt and /etc needs root: run it with sudo, or give --prefix DIR"
fi

profile_reason=""
if [ -z "$PROFILE" ]; then
  model=""
  if [ -r /proc/device-tree/model ]; then model=$(tr -d '\0' </proc/device-tree/model); fi
  arch=$(uname -m)
  case $model in
    *"Raspberry Pi"*) PROFILE=raspberry-pi; profile_reason="device-tree model: $model" ;;
    *)
      case $arch in
        aarch64|arm*) PROFILE=raspberry-pi; profile_reason="$arch: an ARM board, sized like a Pi" ;;
        *) PROFILE=industrial-pc; profile_reason="$arch" ;;
      esac ;;
  esac
else
  profile_reason="--profile"
fi
PROFILE_FILE=$REPO/edge/profiles/$PROFILE.toml
[ -f "$PROFILE_FILE" ] || die "profile $PROFILE_FILE is missing from this checkout"
case $(uname -m) in
  armv6l|armv7l)
    say "warning: 32-bit ARM: numba and llvmlite publish no wheels for it on PyPI; the 64-bit" \
        "Raspberry Pi OS is the supported system" >&2 ;;
esac

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (give another with --python)"
PYTHON=$(command -v "$PYTHON")
py_version=$("$PYTHON" -c 'import platform; print(platform.python_version())')
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  die "shopfloor needs Python 3.11 or later; $PYTHON is $py_version. Debian 12 and Raspberry" \
      "Pi OS bookworm ship 3.11; on Ubuntu 22.04: apt-get install python3.11 python3.11-venv," \
      "then --python python3.11"
fi

say "shopfloor install: $REPO -> ${PREFIX:-/} (profile $PROFILE: $profile_reason)"

# Debian and Ubuntu ship the venv module's pip bootstrap separately (python3.X-venv).
if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  venv_package=python${py_version%.*}-venv
  if [ "$APT" -eq 0 ]; then
    die "$PYTHON cannot create virtual environments: install $venv_package" \
        "(apt-get install $venv_package), or run without --no-apt as root"
  fi
  [ "$(id -u)" -eq 0 ] || die "$PYTHON cannot create virtual environments: install" \
    "$venv_package (sudo apt-get install $venv_package), or run this script as root"
  command -v apt-get >/dev/null 2>&1 || die "no apt-get here: install $venv_package yourself"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$venv_package"
  changed "apt: installed $venv_package"
fi

# --- the package, in its virtual environment -------------------------------------------------

# pip builds from a copy, so that a root install leaves no root-owned build files in the
# checkout; the copy's hash says whether the installed package is already this checkout's.
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
sources=(pyproject.toml README.md src)
for f in "$REPO"/LICENSE* "$REPO"/NOTICE*; do
  if [ -f "$f" ]; then sources+=("$(basename "$f")"); fi
done
tar -C "$REPO" --exclude=__pycache__ --exclude='*.egg-info' --exclude='*.py[co]' \
  --exclude='*.nb[ic]' -cf - "${sources[@]}" | tar -C "$STAGE" -xf -
source_hash=$(
  cd "$STAGE" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum \
    | { cat; printf 'python %s\n' "$py_version"; } | sha256sum | cut -d' ' -f1
)

mkdir -p "$OPT"
venv_version=""
if [ -x "$VENV/bin/python" ]; then
  venv_version=$("$VENV/bin/python" -c 'import platform; print(platform.python_version())' \
    2>/dev/null || true)
fi
if [ ! -e "$VENV" ]; then
  "$PYTHON" -m venv "$VENV" \
    || die "$PYTHON -m venv failed (is python${py_version%.*}-venv installed?)"
  changed "venv: created $VENV (Python $py_version)"
elif [ "$venv_version" != "$py_version" ]; then
  # A Python upgrade (or another --python) breaks a venv's links and leaves its packages in
  # the old version's lib directory: build it afresh.
  "$PYTHON" -m venv --clear "$VENV"
  changed "venv: rebuilt $VENV for Python $py_version (was ${venv_version:-unusable})"
else
  say "  venv: unchanged ($VENV, Python $py_version)"
fi

installed_version() {
  "$VENV/bin/shopfloor" --version 2>/dev/null | awk '{print $2}' || true
}
old_version=$(installed_version)
if [ -n "$old_version" ] && [ -f "$VENV/.shopfloor-source" ] \
   && [ "$(cat "$VENV/.shopfloor-source")" = "$source_hash" ]; then
  say "  package: unchanged (shopfloor $old_version, same source)"
else
  say "  package: installing from $REPO (pip; dependencies come from your package index)"
  "$VENV/bin/python" -m pip install --quiet --no-input --disable-pip-version-check \
    --progress-bar off "$STAGE"
  new_version=$(installed_version)
  [ -n "$new_version" ] || die "the installed $VENV/bin/shopfloor does not run"
  printf '%s\n' "$source_hash" >"$VENV/.shopfloor-source"
  PACKAGE_CHANGED=1
  if [ "$old_version" = "$new_version" ]; then
    changed "package: reinstalled shopfloor $new_version (the checkout changed)"
  elif [ -n "$old_version" ]; then
    changed "package: upgraded shopfloor $old_version -> $new_version"
  else
    changed "package: installed shopfloor $new_version"
  fi
fi

# --- files: copied only when they differ ---------------------------------------------------------

# put SOURCE TARGET MODE LABEL: install SOURCE as TARGET unless it is identical already;
# status 1 when it was. (Called in a condition, so set -e does not reach inside: errors die.)
put() {
  local source=$1 target=$2 mode=$3 label=$4 verb=installed
  if [ -f "$target" ] && cmp -s "$source" "$target"; then
    return 1
  fi
  if [ -e "$target" ]; then verb=updated; fi
  mkdir -p "$(dirname "$target")" || die "cannot create $(dirname "$target")"
  install -m "$mode" "$source" "$target" || die "cannot write $target"
  changed "$label: $verb $target"
}

put "$REPO/README.md" "$OPT/README.md" 0644 docs || true
put "$REPO/edge/agent.example.toml" "$OPT/agent.example.toml" 0644 docs || true
for p in "$REPO"/edge/profiles/*.toml; do
  put "$p" "$OPT/profiles/$(basename "$p")" 0644 docs || true
done
put "$REPO/edge/uninstall.sh" "$OPT/uninstall.sh" 0755 docs || true

mkdir -p "$ETC"
if [ -f "$CONFIG" ]; then
  if cmp -s "$CONFIG" "$PROFILE_FILE"; then
    say "  config: unchanged ($CONFIG, as profile $PROFILE)"
  else
    say "  config: kept $CONFIG (it exists: never overwritten; profile $PROFILE not applied)"
  fi
else
  install -m 0644 "$PROFILE_FILE" "$CONFIG"
  # What install wrote, so that uninstall removes the config only if nobody edited it.
  sha256sum "$CONFIG" | cut -d' ' -f1 >"$OPT/agent.toml.sha256"
  changed "config: wrote $CONFIG from profile $PROFILE"
fi
if [ -e "$PASSWORD" ]; then
  say "  credential: kept $PASSWORD"
else
  # The unit's LoadCredential= refuses to start without the file, password or not.
  install -m 0600 /dev/null "$PASSWORD"
  changed "credential: created $PASSWORD (empty; the broker password goes there)"
fi

if put "$UNIT_SOURCE" "$UNIT" 0644 unit; then
  UNIT_CHANGED=1
else
  say "  unit: unchanged ($UNIT)"
fi

# --- the config must pass before systemd starts anything ---------------------------------------

if ! check_output=$("$VENV/bin/shopfloor" check --config "$CONFIG" 2>&1); then
  printf '%s\n' "$check_output" >&2
  die "$CONFIG does not pass the check: fix it, then run this script again"
fi
say "  check: $check_output"

# --- systemd -----------------------------------------------------------------------------------

if [ "$SYSTEMCTL" -eq 0 ]; then
  say "  systemctl: skipped (--no-systemctl): the unit is neither enabled nor started"
elif ! command -v systemctl >/dev/null 2>&1; then
  die "systemctl not found: is this a systemd system? --no-systemctl installs without it"
elif [ -n "$PREFIX" ]; then
  if [ "$(systemctl --root="$PREFIX" is-enabled "$UNIT_NAME" 2>/dev/null || true)" = enabled ]; then
    say "  systemctl: unchanged ($UNIT_NAME enabled in $PREFIX)"
  else
    systemctl --root="$PREFIX" --quiet enable "$UNIT_NAME"
    changed "systemctl: enabled $UNIT_NAME in $PREFIX (it starts when that system boots)"
  fi
elif [ ! -d /run/systemd/system ]; then
  systemctl --quiet enable "$UNIT_NAME"
  say "  systemctl: enabled $UNIT_NAME; systemd is not running here, so it was not started"
else
  if [ "$UNIT_CHANGED" -eq 1 ]; then systemctl daemon-reload; fi
  if ! systemctl --quiet is-enabled "$UNIT_NAME" 2>/dev/null; then
    systemctl --quiet enable "$UNIT_NAME"
    changed "systemctl: enabled $UNIT_NAME"
  fi
  # --no-block: a first start compiles the kernels before READY=1, minutes on a Pi.
  if ! systemctl --quiet is-active "$UNIT_NAME"; then
    systemctl --no-block start "$UNIT_NAME"
    changed "systemctl: starting $UNIT_NAME (a first start compiles kernels: up to minutes)"
  elif [ $((PACKAGE_CHANGED + UNIT_CHANGED)) -gt 0 ]; then
    systemctl --no-block restart "$UNIT_NAME"
    changed "systemctl: restarting $UNIT_NAME with the new version"
  else
    say "  systemctl: unchanged ($UNIT_NAME enabled and running)"
  fi
fi

# --- what next -----------------------------------------------------------------------------------

metrics_url=$("$VENV/bin/python" - "$CONFIG" <<'PY'
import sys

from shopfloor.agent_config import load_agent_config

m = load_agent_config(sys.argv[1]).metrics
host = m.host if m.host not in ("0.0.0.0", "::", "") else "THIS-DEVICE"
host = f"[{host}]" if ":" in host else host
port = m.port or "PORT"  # 0: a free port, named in the agent's log at start
print(f"{'https' if m.cert_file else 'http'}://{host}:{port}/metrics")
PY
)
if [ "$CHANGES" -eq 0 ]; then
  say "shopfloor install: nothing changed"
else
  say "shopfloor install: done ($CHANGES change(s))"
fi
cat <<EOF

  status     systemctl status shopfloor-agent     journalctl -u shopfloor-agent -f
  metrics    $metrics_url   (curl -s $metrics_url | grep shopfloor_mqtt_connected)
  config     $CONFIG: your broker and topics; then
             $VENV/bin/shopfloor check --config $CONFIG
             systemctl restart shopfloor-agent
  options    $OPT/agent.example.toml
  state      $STATE (checkpoints; uninstall keeps them unless --purge)
  uninstall  $OPT/uninstall.sh${PREFIX:+ --prefix $PREFIX}
EOF
