#!/usr/bin/env bash
# Set up everything fieldgate needs in .venv/ at the repo root.
#   deploy/setup.sh demo   runtime + simulator extras (no broker or database needed)
#   deploy/setup.sh test   + dev and train extras, and the Debian servers the tests run for real
# Safe to run again: it reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-demo}
case "$mode" in
  demo) extras="sim" ;;
  test) extras="dev,sim,train" ;;
  *) echo "usage: deploy/setup.sh demo|test" >&2; exit 2 ;;
esac

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

apt_wanted=()
sudo_arch=""
[ "$(id -u)" -eq 0 ] || sudo_arch="sudo"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "fieldgate needs Python >= 3.11 as python3 (found $(python3 --version 2>&1))" >&2; exit 1; }
python3 -m venv --help >/dev/null 2>&1 || apt_wanted+=(python3-venv)
python3 -c 'import ensurepip' >/dev/null 2>&1 || apt_wanted+=(python3-venv)
if [ "$mode" = test ]; then
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || apt_wanted+=(mosquitto)
  command -v victoria-metrics >/dev/null 2>&1 || apt_wanted+=(victoria-metrics)
  # mosquitto_pub/mosquitto_sub play a hand-made JSON node in the MQTT tests.
  command -v mosquitto_sub >/dev/null 2>&1 || apt_wanted+=(mosquitto-clients)
  # issue 15: real Zephyr SMP servers: native_sim builds are 32-bit, MCUboot ones run in QEMU
  command -v qemu-system-arm >/dev/null 2>&1 || apt_wanted+=(qemu-system-arm)
  if [ ! -e /lib/ld-linux.so.2 ]; then
    dpkg --print-foreign-architectures | grep -qx i386 || ${sudo_arch:-} dpkg --add-architecture i386
    apt_wanted+=(libc6:i386)
  fi
  # The dashboard browser tests: Playwright drives Debian's chromium (no browser download).
  command -v chromium >/dev/null 2>&1 || apt_wanted+=(chromium)
fi
if [ ${#apt_wanted[@]} -gt 0 ]; then
  say "installing Debian packages: ${apt_wanted[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${apt_wanted[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  python3 -m venv .venv
fi
stamp=".venv/.fieldgate-$mode-$( (cat pyproject.toml; echo "$extras") | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  say "installing fieldgate[$extras] into .venv (first run downloads the wheels)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$extras]"
  touch "$stamp"
else
  say ".venv is up to date"
fi
if [ "$mode" = test ]; then
  # issue 15: smpclient's sdist (PyPI) ships prebuilt Zephyr SMP servers; fetched and
  # checked against pinned sums here, never at test run time. Does nothing when present.
  .venv/bin/python -m tests.fixtures.zephyr_smp fetch
fi
