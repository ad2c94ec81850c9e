#!/usr/bin/env bash
# Add (or change the password of) a site's user on the central broker; prints the password
# to put in that site's bridge.conf (remote_password).
#   deploy/mosquitto/central/add-site.sh SITE
set -euo pipefail
site=${1:?usage: $0 SITE}
passwd_file=${PASSWD_FILE:-/etc/mosquitto/central/passwd}
if ! [[ "$site" =~ ^[A-Za-z0-9._-]{1,32}$ ]]; then
  echo "site must be 1..32 characters of [A-Za-z0-9._-] (the gateway's site)" >&2; exit 2
fi
password=${PASSWORD:-$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')}
mkdir -p "$(dirname "$passwd_file")"
[ -f "$passwd_file" ] || { touch "$passwd_file"; chmod 0640 "$passwd_file"; }
mosquitto_passwd -b "$passwd_file" "$site" "$password"
echo "site:     $site"
echo "password: $password"
