#!/usr/bin/env bash
# Build a wheelhouse for devices without network access (air-gapped OT networks): on a connected
# machine, every wheel the agent needs for the target systems - manylinux aarch64 and x86_64,
# CPython 3.11 to 3.13 by default - and the shopfloor wheel of this checkout, with a manifest,
# DIR/SHA256SUMS (a sha256 per file, and what the wheelhouse was built for). On the device, in a
# copy of the same checkout:
#
#     sudo edge/install.sh --wheelhouse DIR     # pip install --no-index --find-links DIR
#
# Every wheel is a binary for its target: nothing is compiled on the device, and the machine
# that builds the wheelhouse may be any Linux with Python 3 and pip, of any architecture. Each
# target is checked at the end: pip resolves the agent from DIR alone, with no index.
#
# Exit codes: 0 done, 1 failure, 2 bad arguments.
set -Eeuo pipefail
umask 022

ME=build-wheelhouse.sh
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEFAULT_ARCHES=(aarch64 x86_64)
DEFAULT_VERSIONS=(3.11 3.12 3.13)
# The oldest glibc among the systems install.sh supports: Ubuntu 22.04 (with python3.11) has
# 2.35; Debian 12 and Raspberry Pi OS bookworm 2.36, Ubuntu 24.04 2.39.
DEFAULT_GLIBC=2.35

usage() {
  cat <<EOF
usage: edge/build-wheelhouse.sh [--arch ARCH]... [--python-version X.Y]... [--glibc X.Y]
                                [--python PYTHON] [--help] DIR

Download every wheel the shopfloor agent needs, for each target, and build the shopfloor
wheel of this checkout ($REPO), into DIR, with the manifest DIR/SHA256SUMS. Then copy this
checkout and DIR to the device and run: sudo edge/install.sh --wheelhouse DIR

  DIR                 the wheelhouse: a new or empty directory, or an earlier wheelhouse,
                      which is replaced once the new one is complete.
  --arch ARCH         aarch64 (Raspberry Pi OS 64-bit, ARM boards) or x86_64; repeat for
                      several. Default: ${DEFAULT_ARCHES[*]}.
  --python-version X.Y
                      the devices' Python (Debian 12 and Raspberry Pi OS bookworm: 3.11,
                      Ubuntu 24.04: 3.12); repeat for several. Default: ${DEFAULT_VERSIONS[*]}.
  --glibc X.Y         the oldest glibc of the devices: only manylinux wheels that run on it
                      are taken. Default: $DEFAULT_GLIBC (Ubuntu 22.04; Debian 12 has 2.36).
  --python PYTHON     the interpreter whose pip downloads and builds (default: python3; pip
                      22.2 or later).
  -h, --help          this text.

Each architecture and Python version adds about 110 MB. Exit codes: 0 done, 1 failure,
2 bad arguments.
EOF
}

say() { printf '%s\n' "$*"; }
die() { printf '%s: error: %s\n' "$ME" "$*" >&2; exit 1; }
bad_usage() { printf '%s: %s (see --help)\n' "$ME" "$*" >&2; exit 2; }
trap 'printf "%s: failed at line %s: %s\n" "$ME" "$LINENO" "$BASH_COMMAND" >&2; exit 1' ERR

ARCHES=() VERSIONS=() GLIBC=$DEFAULT_GLIBC PYTHON=python3 OUT=""
while [ $# -gt 0 ]; do
  case $1 in
    --arch|--python-version|--glibc|--python)
      if [ $# -lt 2 ] || [ -z "$2" ]; then bad_usage "$1 needs a value"; fi
      case $1 in
        --arch) ARCHES+=("$2") ;;
        --python-version) VERSIONS+=("$2") ;;
        --glibc) GLIBC=$2 ;;
        --python) PYTHON=$2 ;;
      esac
      shift 2 ;;
    --arch=?*) ARCHES+=("${1#*=}"); shift ;;
    --python-version=?*) VERSIONS+=("${1#*=}"); shift ;;
    --glibc=?*) GLIBC=${1#*=}; shift ;;
    --python=?*) PYTHON=${1#*=}; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) bad_usage "unknown argument: $1" ;;
    *)
      if [ -n "$OUT" ]; then bad_usage "one DIR only (got $OUT and $1)"; fi
      OUT=$1; shift ;;
  esac
done
[ -n "$OUT" ] || bad_usage "DIR, the wheelhouse to build, is missing"
if [ "${#ARCHES[@]}" -eq 0 ]; then ARCHES=("${DEFAULT_ARCHES[@]}"); fi
if [ "${#VERSIONS[@]}" -eq 0 ]; then VERSIONS=("${DEFAULT_VERSIONS[@]}"); fi
for a in "${ARCHES[@]}"; do
  case $a in
    aarch64|x86_64) ;;
    *) bad_usage "--arch $a: aarch64 or x86_64 (numba publishes no 32-bit ARM wheels)" ;;
  esac
done
for v in "${VERSIONS[@]}"; do
  [[ $v =~ ^3\.(1[1-9]|[2-9][0-9])$ ]] || bad_usage "--python-version $v: 3.11 or later, as X.Y"
done
if ! [[ $GLIBC =~ ^2\.([0-9]+)$ ]] || [ "${BASH_REMATCH[1]}" -lt 17 ]; then
  bad_usage "--glibc $GLIBC: 2.17 or later, as 2.Y"
fi
GLIBC_MINOR=${GLIBC#2.}

# --- checks before anything is written -------------------------------------------------------

[ -f "$REPO/pyproject.toml" ] || die "$REPO is not a shopfloor checkout (no pyproject.toml)"
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (give another with --python)"
pip_version=$("$PYTHON" -m pip --version 2>/dev/null | awk '{print $2}') \
  || die "$PYTHON has no pip: apt-get install python3-pip, or --python a venv's python"
"$PYTHON" - "$pip_version" <<'PY' || die "$PYTHON's pip is $pip_version: 22.2 or later is needed"
import re
import sys

sys.exit(tuple(int(n) for n in re.findall(r"\d+", sys.argv[1])[:2]) < (22, 2))
PY
case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac
while [ "$OUT" != "${OUT%/}" ]; do OUT=${OUT%/}; done
[ -n "$OUT" ] || bad_usage "DIR cannot be /"
if [ -e "$OUT" ] && [ ! -d "$OUT" ]; then die "$OUT exists and is not a directory"; fi
if [ -d "$OUT" ] && [ -n "$(ls -A "$OUT")" ] \
   && ! head -n 1 "$OUT/SHA256SUMS" 2>/dev/null | grep -q '^# shopfloor wheelhouse'; then
  die "$OUT holds files and is no wheelhouse of this script: give a new or empty directory"
fi
mkdir -p "$(dirname "$OUT")"

# The new wheelhouse is built beside DIR and takes its place only when complete.
WORK=$(mktemp -d)
BUILD=$(mktemp -d "$(dirname "$OUT")/.wheelhouse.XXXXXX")
trap 'rm -rf "$WORK" "$BUILD"' EXIT
chmod 0755 "$BUILD"

# The same files, hashed the same way, as install.sh: it installs a wheelhouse only with the
# checkout it was built from, whose unit, profiles and docs go with that wheel.
SOURCE=$WORK/source
# shellcheck source=edge/source-snapshot.sh
. "$REPO/edge/source-snapshot.sh"
checkout_hash=$(snapshot_source "$REPO" "$SOURCE")

PIP=("$PYTHON" -m pip --disable-pip-version-check --no-input)
say "shopfloor wheelhouse: $REPO -> $OUT"
say "  targets: ${ARCHES[*]}; Python ${VERSIONS[*]}; glibc $GLIBC or later"

# --- the shopfloor wheel --------------------------------------------------------------------

"${PIP[@]}" wheel --quiet --no-deps --wheel-dir "$WORK/dist" "$SOURCE" \
  || die "pip could not build the shopfloor wheel from $REPO"
wheels=("$WORK"/dist/shopfloor-*.whl)
[ -f "${wheels[0]}" ] || die "pip built no shopfloor wheel in $WORK/dist"
WHEEL=$(basename "${wheels[0]}")
say "  built: $WHEEL"

# --- the dependencies, target by target -----------------------------------------------------

# pip's --platform: every manylinux tag that runs on glibc $GLIBC, the newest first (pip takes
# the listed tags only, not the older ones each implies).
platforms() {
  local arch=$1 floor=17 m
  if [ "$arch" = x86_64 ]; then floor=5; fi
  for ((m = GLIBC_MINOR; m >= floor; m--)); do
    printf -- '--platform\nmanylinux_2_%s_%s\n' "$m" "$arch"
  done
  printf -- '--platform\nmanylinux2014_%s\n' "$arch"
  if [ "$arch" = x86_64 ]; then
    printf -- '--platform\nmanylinux2010_x86_64\n--platform\nmanylinux1_x86_64\n'
  fi
}
target_options() {  # target_options ARCH X.Y: pip's options for that target, one a line
  platforms "$1"
  printf -- '--only-binary=:all:\n--implementation\ncp\n--python-version\n%s\n--abi\ncp%s\n' \
    "$2" "${2/./}"
}

for arch in "${ARCHES[@]}"; do
  for version in "${VERSIONS[@]}"; do
    mapfile -t target < <(target_options "$arch" "$version")
    "${PIP[@]}" download --quiet --progress-bar off "${target[@]}" --dest "$BUILD" \
      "$WORK/dist/$WHEEL" \
      || die "pip found no complete set of wheels for $arch, Python $version (see above)"
    say "  downloaded: $arch, Python $version"
  done
done

# --- check: each target resolves from the wheelhouse alone ----------------------------------

for arch in "${ARCHES[@]}"; do
  for version in "${VERSIONS[@]}"; do
    mapfile -t target < <(target_options "$arch" "$version")
    # No configuration, no other index or links: only what is in the wheelhouse.
    env -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_FIND_LINKS -u PIP_CONSTRAINT \
      PIP_CONFIG_FILE=/dev/null \
      "${PIP[@]}" install --quiet --dry-run --ignore-installed --no-index --find-links "$BUILD" \
      "${target[@]}" --target "$WORK/target" "$BUILD/$WHEEL" \
      || die "the wheelhouse does not hold everything for $arch, Python $version (see above)"
  done
done
say "  checked: every target installs from the wheelhouse alone (pip --no-index)"

# --- the manifest ---------------------------------------------------------------------------

{
  printf '# shopfloor wheelhouse, built by edge/build-wheelhouse.sh on %s\n' \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  printf '# install it, offline, from the checkout it was built from:\n'
  printf '#     sudo edge/install.sh --wheelhouse DIR\n'
  printf '# check it by hand: cd DIR && sha256sum --check SHA256SUMS\n'
  printf '# shopfloor: %s\n' "$WHEEL"
  printf '# source: %s\n' "$checkout_hash"
  printf '# arch: %s\n' "${ARCHES[*]}"
  printf '# python: %s\n' "${VERSIONS[*]}"
  printf '# glibc: %s\n' "$GLIBC"
  (cd "$BUILD" && find . -maxdepth 1 -type f -name '*.whl' -printf '%f\n' | LC_ALL=C sort \
    | xargs -d '\n' sha256sum --)
} >"$WORK/SHA256SUMS"
mv "$WORK/SHA256SUMS" "$BUILD/SHA256SUMS"

if [ -d "$OUT" ]; then rm -rf "$OUT"; fi
mv "$BUILD" "$OUT"
count=$(grep -c '^[0-9a-f]\{64\}  ' "$OUT/SHA256SUMS")
say "shopfloor wheelhouse: done ($count wheels, $(du -sh "$OUT" | cut -f1)) in $OUT"
cat <<EOF

  next       copy this checkout and the wheelhouse to the device; there, in the checkout:
             sudo edge/install.sh --wheelhouse PATH/TO/$(basename "$OUT")
  verify     cd $OUT && sha256sum --check SHA256SUMS
EOF
