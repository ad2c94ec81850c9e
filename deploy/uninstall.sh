#!/usr/bin/env bash
# Remove the fieldgate service. Keeps the data (journal, alert history) and the config
# unless --purge is given.
#   sudo deploy/uninstall.sh [--purge]
set -euo pipefail
PREFIX=${PREFIX:-/opt/fieldgate}
ETC=${ETC:-/etc/fieldgate}
DATA=${DATA:-/var/lib/fieldgate}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}
purge=0
for arg in "$@"; do
  case "$arg" in
    --purge) purge=1 ;;
    -h|--help) sed -n '2,4p' "$0"; exit 0 ;;
    *) echo "unknown option: $arg (try --help)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "run as root (sudo $0)" >&2; exit 1; }
if [ -d /run/systemd/system ]; then
  systemctl disable --now fieldgate.service 2>/dev/null || true
fi
rm -f "$UNIT_DIR/fieldgate.service"
[ -d /run/systemd/system ] && systemctl daemon-reload
rm -rf "$PREFIX"
if [ "$purge" -eq 1 ]; then
  rm -rf "$ETC" "$DATA"
  userdel fieldgate 2>/dev/null || true
  getent group fieldgate >/dev/null && groupdel fieldgate 2>/dev/null || true
  echo "removed fieldgate, its config and its data"
else
  echo "removed fieldgate; kept $ETC and $DATA (and the fieldgate user): --purge removes them"
fi
