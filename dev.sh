#!/usr/bin/env bash
# The two set-up commands of the README, on a fresh Debian 12 or Raspberry Pi OS machine:
#   ./dev.sh demo   the whole detection path on this machine, with a synthetic plant
#   ./dev.sh test   lint, type checks and the whole test suite (what CI runs)
# It installs what is missing (Debian packages, a virtual environment in .venv) and is safe to
# run again: a second run installs nothing. The demo takes only what it needs (Mosquitto and
# the package); the tests take everything (Prometheus, openssl, the dev extras).
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

ensure_system_packages() {
  # The Debian packages a command needs; by default, all that the test suite starts.
  local wanted=("$@") missing=()
  if [ "${#wanted[@]}" -eq 0 ]; then wanted=(mosquitto prometheus openssl systemd); fi
  # python3 may come from elsewhere (pyenv, a CI image): only working venv support matters.
  python3 -c 'import venv, ensurepip' 2>/dev/null || wanted+=(python3 python3-venv python3-pip)
  for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
    # Tests start their own brokers and servers on ephemeral ports; the packaged services
    # are not needed and must not hold the default ports.
    for svc in mosquitto prometheus; do
      as_root systemctl disable --now "$svc" >/dev/null 2>&1 || true
    done
  fi
}

ensure_venv() {
  local stamp
  stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  if [ ! -f "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e '.[dev]'
    rm -f "$VENV"/.installed-*
    touch "$stamp"
  fi
}

# The demo runs the package alone (the dev extras are for the tests, the demo extra's broker is
# for machines without Mosquitto): a test install (.installed-HASH) has it too.
ensure_demo_venv() {
  local hash
  hash=$(sha256sum pyproject.toml | cut -c1-16)
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  if [ ! -f "$VENV/.installed-$hash" ] && [ ! -f "$VENV/.installed-demo-$hash" ]; then
    "$VENV/bin/python" -m pip install -q -e .
    rm -f "$VENV"/.installed-demo-*
    touch "$VENV/.installed-demo-$hash"
  fi
}

cmd=${1:-}
case "$cmd" in
  demo)
    shift
    ensure_system_packages mosquitto
    ensure_demo_venv
    exec "$VENV/bin/shopfloor" demo "$@"
    ;;
  test)
    shift
    ensure_system_packages
    ensure_venv
    "$VENV/bin/ruff" check src tests benchmarks
    "$VENV/bin/mypy"
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *)
    echo "usage: ./dev.sh demo | ./dev.sh test [pytest arguments]" >&2
    exit 2
    ;;
esac
