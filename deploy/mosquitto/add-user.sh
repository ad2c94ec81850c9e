#!/usr/bin/env bash
# Add (or change the password of) a broker user for fieldgate.
#   deploy/mosquitto/add-user.sh NODE_ID              a node; prints a new random password
#   deploy/mosquitto/add-user.sh fieldgate-gateway    the gateway (put the password in
#                                                     FIELDGATE_MQTT__PASSWORD or a file)
# PASSWD_FILE (default /etc/mosquitto/fieldgate/passwd) is created if missing. mosquitto
# rereads it on SIGHUP (systemctl reload mosquitto); the script does that when it can.
set -euo pipefail
user=${1:?usage: $0 NODE_ID|fieldgate-gateway|fieldgate-observer}
passwd_file=${PASSWD_FILE:-/etc/mosquitto/fieldgate/passwd}
if ! [[ "$user" =~ ^[A-Za-z0-9._-]{1,32}$ ]]; then
  echo "user name must be 1..32 characters of [A-Za-z0-9._-] (a node id)" >&2; exit 2
fi
password=${PASSWORD:-$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')}
mkdir -p "$(dirname "$passwd_file")"
[ -f "$passwd_file" ] || { touch "$passwd_file"; chmod 0640 "$passwd_file"; }
mosquitto_passwd -b "$passwd_file" "$user" "$password"
if [ -d /run/systemd/system ] && systemctl is-active --quiet mosquitto; then
  systemctl reload mosquitto
fi
echo "user:     $user"
echo "password: $password"
