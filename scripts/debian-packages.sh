#!/usr/bin/env bash
# Install Debian packages the tests run for real (e.g. nginx) when what they provide is missing; as root, or sudo.
# Usage: scripts/debian-packages.sh WHAT:PACKAGE ...   WHAT is a command or an absolute path, e.g. nginx:nginx
# Services are not started on install (the tests start their own, on loopback ports).
set -euo pipefail
missing=()
for pair in "$@"; do
    what=${pair%%:*}
    command -v "$what" >/dev/null 2>&1 || [ -x "/usr/sbin/$what" ] || [ -e "$what" ] || missing+=("${pair#*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing from Debian: ${missing[*]}"
policy=/usr/sbin/policy-rc.d  # tells the packages' scripts not to start their services
made_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod +x "$policy" && made_policy=1
fi
trap '[ -n "$made_policy" ] && $sudo rm -f "$policy"' EXIT
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
