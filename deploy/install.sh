#!/usr/bin/env bash
# Install fieldgate as a systemd service on Debian / Raspberry Pi OS. Safe to run again
# (an upgrade): it never overwrites an existing config or touches the data directory.
#
#   sudo deploy/install.sh            # install or upgrade from this checkout
#   sudo deploy/install.sh --no-start # install, do not (re)start the service
#
# What it does: a system user `fieldgate` (groups dialout, bluetooth), a venv in
# $PREFIX (/opt/fieldgate) with this checkout installed, /etc/fieldgate/gateway.toml from
# deploy/gateway.example.toml (data_dir = /var/lib/fieldgate), /var/lib/fieldgate (0750),
# and the unit deploy/systemd/fieldgate.service. See docs/operations.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/opt/fieldgate}
ETC=${ETC:-/etc/fieldgate}
DATA=${DATA:-/var/lib/fieldgate}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}
start=1
for arg in "$@"; do
  case "$arg" in
    --no-start) start=0 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown option: $arg (try --help)" >&2; exit 2 ;;
  esac
done
say() { printf '\033[1m[install]\033[0m %s\n' "$*"; }
[ "$(id -u)" -eq 0 ] || { echo "run as root (sudo $0)" >&2; exit 1; }

if ! getent group fieldgate >/dev/null; then
  say "creating group fieldgate"; groupadd --system fieldgate
fi
if ! id fieldgate >/dev/null 2>&1; then
  say "creating user fieldgate"
  useradd --system --gid fieldgate --home-dir "$DATA" --no-create-home \
    --shell /usr/sbin/nologin --comment "fieldgate gateway" fieldgate
fi
for group in dialout bluetooth; do
  if getent group "$group" >/dev/null && ! id -nG fieldgate | tr ' ' '\n' | grep -qx "$group"; then
    say "adding fieldgate to $group"; usermod -aG "$group" fieldgate
  fi
done

install -d -m 0755 "$PREFIX" "$ETC"
install -d -m 0750 -o fieldgate -g fieldgate "$DATA"

if [ "${FIELDGATE_INSTALL_SKIP_PIP:-0}" = 1 ]; then
  # For the install test and for sites that manage $PREFIX/.venv themselves.
  say "using the existing $PREFIX/.venv as it is"
else
  say "installing fieldgate into $PREFIX/.venv"
  [ -x "$PREFIX/.venv/bin/python" ] || python3 -m venv "$PREFIX/.venv"
  "$PREFIX/.venv/bin/python" -m pip install -q --upgrade pip
  "$PREFIX/.venv/bin/python" -m pip install -q "$PWD"
fi
rm -rf "$PREFIX/docs" && cp -r docs "$PREFIX/docs"

if [ ! -f "$ETC/gateway.toml" ]; then
  say "writing $ETC/gateway.toml (edit it, then: systemctl restart fieldgate)"
  sed "s#^data_dir = \"var\" .*#data_dir = \"$DATA\"        \# journal, alert history, baselines#" \
    deploy/gateway.example.toml > "$ETC/gateway.toml"
  chown root:fieldgate "$ETC/gateway.toml"; chmod 0640 "$ETC/gateway.toml"
else
  say "keeping existing $ETC/gateway.toml"
fi
"$PREFIX/.venv/bin/fieldgate" run --check --config "$ETC/gateway.toml" >/dev/null

sed -e "s#/opt/fieldgate#$PREFIX#g" -e "s#/etc/fieldgate/#$ETC/#g" -e "s#/var/lib/fieldgate#$DATA#g" \
  deploy/systemd/fieldgate.service > "$UNIT_DIR/fieldgate.service"
say "installed $UNIT_DIR/fieldgate.service"
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable fieldgate.service >/dev/null
  if [ "$start" -eq 1 ]; then systemctl restart fieldgate.service && say "started: journalctl -u fieldgate -f"; fi
else
  say "systemd is not running here: start it later with systemctl enable --now fieldgate"
fi
