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
# Two roots, as in `make install DESTDIR=... prefix=...`: --prefix is where the agent will run
# from (every path written inside the files names it: the entry points' #! lines, pyvenv.cfg,
# the unit), --destdir only where the files are written, for a system image or a package.
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
usage: edge/install.sh [--profile NAME] [--destdir DIR] [--prefix DIR] [--wheelhouse DIR]
                       [--python PYTHON] [--no-systemctl] [--no-apt] [--help]

Install or upgrade the shopfloor agent from this checkout ($REPO).

  --profile NAME   raspberry-pi or industrial-pc: the config written when
                   /etc/shopfloor/agent.toml does not exist yet (an existing one is kept).
                   Default: raspberry-pi when /proc/device-tree/model names a Raspberry Pi
                   or the machine is ARM (aarch64, armv7l), else industrial-pc.
  --destdir DIR    stage the install under DIR for a system image or a package, as
                   \`make install DESTDIR=DIR\`: the files go to DIR/opt/shopfloor,
                   DIR/etc/shopfloor and DIR/etc/systemd/system, and every path inside them
                   (the entry points' #! lines, pyvenv.cfg, the unit) is the final one,
                   /opt/shopfloor/...: the tree runs once DIR is the target's /. The target
                   needs the interpreter of --python at the same path. Needs no root.
  --prefix DIR     install to run from DIR instead of /: DIR/opt/shopfloor,
                   DIR/etc/shopfloor, DIR/etc/systemd/system, and the paths inside the files
                   (the unit's too) name DIR. For tests and trying it without root; not for an
                   image, whose paths must not name the build machine's DIR: use --destdir.
                   With both, the files go to DESTDIR/PREFIX and name PREFIX.
                   With either, systemctl only runs \`systemctl --root=DIR enable\` (offline).
  --wheelhouse DIR install the agent and every dependency from DIR, a wheelhouse that
                   edge/build-wheelhouse.sh built from this checkout on a connected machine,
                   with pip --no-index: no network. DIR/SHA256SUMS is verified first.
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

PROFILE="" PREFIX="" DESTDIR="" WHEELHOUSE="" PYTHON=python3 SYSTEMCTL=1 APT=1
while [ $# -gt 0 ]; do
  case $1 in
    --profile|--prefix|--destdir|--wheelhouse|--python)
      if [ $# -lt 2 ] || [ -z "$2" ]; then bad_usage "$1 needs a value"; fi
      case $1 in
        --profile) PROFILE=$2 ;;
        --prefix) PREFIX=$2 ;;
        --destdir) DESTDIR=$2 ;;
        --wheelhouse) WHEELHOUSE=$2 ;;
        --python) PYTHON=$2 ;;
      esac
      shift 2 ;;
    --profile=?*) PROFILE=${1#*=}; shift ;;
    --prefix=?*) PREFIX=${1#*=}; shift ;;
    --destdir=?*) DESTDIR=${1#*=}; shift ;;
    --wheelhouse=?*) WHEELHOUSE=${1#*=}; shift ;;
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
case $PREFIX in
  *[[:space:]]*) bad_usage "--prefix '$PREFIX': the unit names it, and systemd splits at spaces" ;;
esac
absolute() {  # absolute DIR: DIR from / without trailing slashes; "/" becomes "", the real root
  local dir=$1
  case $dir in /*) ;; *) dir=$PWD/$dir ;; esac
  while [ "$dir" != "${dir%/}" ]; do dir=${dir%/}; done
  printf '%s' "$dir"
}
if [ -n "$PREFIX" ]; then PREFIX=$(absolute "$PREFIX"); fi
if [ -n "$DESTDIR" ]; then DESTDIR=$(absolute "$DESTDIR"); fi

# Where the files are written (DEST, OPT, VENV, ETC, ...) and the paths written inside them,
# which the running agent sees (FINAL_*): the same unless --destdir stages them elsewhere.
DEST=$DESTDIR$PREFIX
OPT=$DEST/opt/shopfloor
VENV=$OPT/venv
ETC=$DEST/etc/shopfloor
CONFIG=$ETC/agent.toml
PASSWORD=$ETC/mqtt-password
UNIT=$DEST/etc/systemd/system/$UNIT_NAME
UNIT_SOURCE=$REPO/deploy/systemd/$UNIT_NAME
FINAL_OPT=$PREFIX/opt/shopfloor
FINAL_VENV=$FINAL_OPT/venv
FINAL_CONFIG=$PREFIX/etc/shopfloor/agent.toml
STATE=$PREFIX/var/lib/shopfloor
CHANGES=0
PACKAGE_CHANGED=0
UNIT_CHANGED=0

changed() { CHANGES=$((CHANGES + 1)); say "  $*"; }

# --- checks before anything is written -------------------------------------------------------

[ -f "$UNIT_SOURCE" ] || die "the systemd unit $UNIT_SOURCE is missing from this checkout"
[ -f "$REPO/pyproject.toml" ] || die "$REPO is not a shopfloor checkout (no pyproject.toml)"
if [ -z "$DEST" ] && [ "$(id -u)" -ne 0 ]; then
  die "installing into /opt and /etc needs root: run it with sudo, or give --destdir or" \
      "--prefix DIR"
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

# pip builds from a copy, so that a root install leaves no root-owned build files in the
# checkout. Its hash says whether the installed package is already this checkout's (with the
# Python version: another Python needs another install), and which checkout a wheelhouse was
# built from (edge/build-wheelhouse.sh uses the same edge/source-snapshot.sh).
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
SOURCE=$WORK/source
# shellcheck source=edge/source-snapshot.sh
. "$REPO/edge/source-snapshot.sh"
checkout_hash=$(snapshot_source "$REPO" "$SOURCE")
source_hash=$(printf '%s\npython %s\n' "$checkout_hash" "$py_version" | sha256sum | cut -d' ' -f1)

WHEEL=""
if [ -n "$WHEELHOUSE" ]; then
  [ -d "$WHEELHOUSE" ] || die "--wheelhouse $WHEELHOUSE: no such directory"
  WHEELHOUSE=$(cd "$WHEELHOUSE" && pwd)
  MANIFEST=$WHEELHOUSE/SHA256SUMS
  [ -f "$MANIFEST" ] || die "$WHEELHOUSE has no SHA256SUMS: is it a wheelhouse of" \
    "edge/build-wheelhouse.sh?"
  manifest() { sed -n "s/^# $1: //p" "$MANIFEST" | head -n 1; }
  WHEEL=$(manifest shopfloor)
  case $WHEEL in
    shopfloor-*.whl) ;;
    *) die "$MANIFEST names no shopfloor wheel: build it with edge/build-wheelhouse.sh" ;;
  esac
  arch=$(uname -m)
  case " $(manifest python) " in
    *" ${py_version%.*} "*) ;;
    *) die "$WHEELHOUSE has wheels for Python $(manifest python), not ${py_version%.*}:" \
           "build one with edge/build-wheelhouse.sh --python-version ${py_version%.*}" ;;
  esac
  case " $(manifest arch) " in
    *" $arch "*) ;;
    *) die "$WHEELHOUSE has wheels for $(manifest arch), not $arch: build one with" \
           "edge/build-wheelhouse.sh --arch $arch" ;;
  esac
  if ! (cd "$WHEELHOUSE" && sha256sum --check --strict --quiet SHA256SUMS) >&2; then
    die "$WHEELHOUSE: files differ from their sha256 in SHA256SUMS (copied incompletely?)"
  fi
  if [ "$(manifest source)" != "$checkout_hash" ]; then
    die "$WHEELHOUSE was built from another checkout than $REPO ($WHEEL): install with the" \
        "checkout it was built from, or build it again from this one"
  fi
fi

say "shopfloor install: $REPO -> ${DEST:-/} (profile $PROFILE: $profile_reason)"
if [ -n "$DESTDIR" ]; then
  say "  staged: the files go under $DESTDIR; the paths inside them name ${PREFIX:-/}"
elif [ -n "$PREFIX" ]; then
  say "  note: --prefix: the paths inside the files name $PREFIX, so it runs from there; to" \
      "stage a system image, use --destdir"
fi

# Debian and Ubuntu ship the venv module's pip bootstrap separately (python3.X-venv).
if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  venv_package=python${py_version%.*}-venv
  if [ "$APT" -eq 0 ]; then
    die "$PYTHON cannot create virtual environments: install $venv_package" \
        "(apt-get install $venv_package), or run without --no-apt as root"
  fi
  if [ -n "$WHEELHOUSE" ]; then  # offline: apt-get would wait for a mirror it cannot reach
    die "$PYTHON cannot create virtual environments: install $venv_package first (from the" \
        "installation media or a local mirror: apt-get install $venv_package)"
  fi
  [ "$(id -u)" -eq 0 ] || die "$PYTHON cannot create virtual environments: install" \
    "$venv_package (sudo apt-get install $venv_package), or run this script as root"
  command -v apt-get >/dev/null 2>&1 || die "no apt-get here: install $venv_package yourself"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$venv_package"
  changed "apt: installed $venv_package"
fi

# --- the package, in its virtual environment -------------------------------------------------

mkdir -p "$OPT"
VENV_CREATED=0
venv_version=""
if [ -x "$VENV/bin/python" ]; then
  venv_version=$("$VENV/bin/python" -c 'import platform; print(platform.python_version())' \
    2>/dev/null || true)
fi
if [ ! -e "$VENV" ]; then
  "$PYTHON" -m venv "$VENV" \
    || die "$PYTHON -m venv failed (is python${py_version%.*}-venv installed?)"
  VENV_CREATED=1
  changed "venv: created $VENV (Python $py_version)"
elif [ "$venv_version" != "$py_version" ]; then
  # A Python upgrade (or another --python) breaks a venv's links and leaves its packages in
  # the old version's lib directory: build it afresh.
  "$PYTHON" -m venv --clear "$VENV"
  VENV_CREATED=1
  changed "venv: rebuilt $VENV for Python $py_version (was ${venv_version:-unusable})"
else
  say "  venv: unchanged ($VENV, Python $py_version)"
fi

# The staged environment's python runs where it is (Python finds its venv next to itself);
# its entry points name the final path, which may not exist here.
shopfloor_here() { "$VENV/bin/python" -m shopfloor "$@"; }
installed_version() {
  shopfloor_here --version 2>/dev/null | awk '{print $2}' || true
}

# Under --destdir, pip writes the staging path into the entry points' #! lines, the activate
# scripts, pyvenv.cfg's command and the bytecode's file names: they get the final path.
PIP_OPTIONS=(--quiet --no-input --disable-pip-version-check --progress-bar off)
if [ "$VENV" != "$FINAL_VENV" ]; then PIP_OPTIONS+=(--no-compile); fi
pip_install() { "$VENV/bin/python" -m pip install "${PIP_OPTIONS[@]}" "$@"; }
finalize_venv() {
  [ "$VENV" != "$FINAL_VENV" ] || return 0
  "$VENV/bin/python" - "$VENV" "$FINAL_VENV" <<'PY' || die "cannot rewrite the paths in $VENV"
import sys
from pathlib import Path

staged, final = sys.argv[1].encode(), sys.argv[2].encode()
venv = Path(sys.argv[1])
for path in [venv / "pyvenv.cfg", *sorted((venv / "bin").iterdir())]:
    if path.is_file() and not path.is_symlink():
        text = path.read_bytes()
        if staged in text:
            path.write_bytes(text.replace(staged, final))
PY
  # What pip would have compiled, named by the final path (a fresh venv's own pip too: -f).
  # Its status is ignored, as pip ignores it: packages ship files that do not compile
  # (templates, test data).
  local force=()
  if [ "$VENV_CREATED" -eq 1 ]; then force=(-f); fi
  "$VENV/bin/python" -m compileall -qq -j 0 "${force[@]}" -d "$FINAL_VENV/lib" "$VENV/lib" \
    || true
}

old_version=$(installed_version)
if [ -n "$old_version" ] && [ -f "$VENV/.shopfloor-source" ] \
   && [ "$(cat "$VENV/.shopfloor-source")" = "$source_hash" ]; then
  say "  package: unchanged (shopfloor $old_version, same source)"
else
  if [ -n "$WHEELHOUSE" ]; then
    say "  package: installing $WHEEL from $WHEELHOUSE (pip --no-index: no network)"
    if [ -n "$old_version" ]; then
      # pip keeps an installed shopfloor of the same version: replace it first, so that the
      # dependencies resolved next are the new wheel's.
      pip_install --no-index --no-deps --force-reinstall "$WHEELHOUSE/$WHEEL"
    fi
    pip_install --no-index --find-links "$WHEELHOUSE" "$WHEELHOUSE/$WHEEL"
  else
    say "  package: installing from $REPO (pip; dependencies come from your package index)"
    pip_install "$SOURCE"
  fi
  new_version=$(installed_version)
  [ -n "$new_version" ] || die "the installed shopfloor in $VENV does not run"
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
if [ $((VENV_CREATED + PACKAGE_CHANGED)) -gt 0 ]; then finalize_venv; fi

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
for f in CHANGELOG.md LICENSE; do
  if [ -f "$REPO/$f" ]; then put "$REPO/$f" "$OPT/$f" 0644 docs || true; fi
done

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
  (umask 077 && : >"$PASSWORD") || die "cannot write $PASSWORD"
  changed "credential: created $PASSWORD (empty; the broker password goes there)"
fi

# The unit's directives name the final paths: /opt/shopfloor and /etc/shopfloor, under --prefix
# when given (its comments describe the standard layout and stay as they are).
UNIT_FILE=$UNIT_SOURCE
if [ -n "$PREFIX" ]; then
  UNIT_FILE=$WORK/$UNIT_NAME
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in
      '#'*|'') ;;
      *) line=${line//"/opt/shopfloor"/"$PREFIX/opt/shopfloor"}
         line=${line//"/etc/shopfloor"/"$PREFIX/etc/shopfloor"} ;;
    esac
    printf '%s\n' "$line"
  done <"$UNIT_SOURCE" >"$UNIT_FILE"
fi
if put "$UNIT_FILE" "$UNIT" 0644 unit; then
  UNIT_CHANGED=1
else
  say "  unit: unchanged ($UNIT)"
fi

# --- the config must pass before systemd starts anything ---------------------------------------

if ! check_output=$(shopfloor_here check --config "$CONFIG" 2>&1); then
  printf '%s\n' "$check_output" >&2
  die "$CONFIG does not pass the check: fix it, then run this script again"
fi
say "  check: $check_output"

# --- systemd -----------------------------------------------------------------------------------

if [ "$SYSTEMCTL" -eq 0 ]; then
  say "  systemctl: skipped (--no-systemctl): the unit is neither enabled nor started"
elif ! command -v systemctl >/dev/null 2>&1; then
  die "systemctl not found: is this a systemd system? --no-systemctl installs without it"
elif [ -n "$DEST" ]; then
  if [ "$(systemctl --root="$DEST" is-enabled "$UNIT_NAME" 2>/dev/null || true)" = enabled ]; then
    say "  systemctl: unchanged ($UNIT_NAME enabled in $DEST)"
  else
    systemctl --root="$DEST" --quiet enable "$UNIT_NAME"
    changed "systemctl: enabled $UNIT_NAME in $DEST (it starts when that system boots)"
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

from shopfloor.agent.config import load_agent_config

m = load_agent_config(sys.argv[1]).metrics
host = m.host if m.host not in ("0.0.0.0", "::", "") else "THIS-DEVICE"
host = f"[{host}]" if ":" in host else host
port = m.port or "PORT"  # 0: a free port, named in the agent's log at start
print(f"{'https' if m.cert_file else 'http'}://{host}:{port}/metrics")
PY
)
changelog=""
if [ -f "$OPT/CHANGELOG.md" ]; then changelog=$FINAL_OPT/CHANGELOG.md; fi
if [ "$CHANGES" -eq 0 ]; then
  say "shopfloor install: nothing changed"
else
  say "shopfloor install: done ($CHANGES change(s))"
fi
cat <<EOF

  status     systemctl status shopfloor-agent     journalctl -u shopfloor-agent -f
  metrics    $metrics_url   (curl -s $metrics_url | grep shopfloor_mqtt_connected)
  config     $FINAL_CONFIG: your broker and topics; then
             $FINAL_VENV/bin/shopfloor check --config $FINAL_CONFIG
             systemctl restart shopfloor-agent
  options    $FINAL_OPT/agent.example.toml${changelog:+ (what changed: $changelog)}
  state      $STATE (checkpoints; uninstall keeps them unless --purge)
  uninstall  $FINAL_OPT/uninstall.sh${PREFIX:+ --prefix $PREFIX}
EOF
if [ -n "$DESTDIR" ]; then
  home=$(sed -n 's/^home = //p' "$VENV/pyvenv.cfg")
  cat <<EOF
  staged     these paths exist once $DESTDIR is the target's /; the environment runs
             $home/python${py_version%.*}: the target needs Python ${py_version%.*} there.
             To remove the staged files: edge/uninstall.sh --prefix $DEST --no-systemctl
EOF
fi
