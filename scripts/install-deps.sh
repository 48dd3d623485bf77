#!/usr/bin/env bash
# Installs everything retentiond needs to build, test and run its demo, from Debian 12's
# registry only. Idempotent: a second run installs nothing.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git ca-certificates
  libboost-dev libyaml-cpp-dev libspdlog-dev libfmt-dev libpqxx-dev libhiredis-dev libssl-dev
  libsystemd-dev nlohmann-json3-dev libhowardhinnant-date-dev tzdata
  libgtest-dev libgmock-dev
  postgresql-15 postgresql-contrib redis-server redis-tools
  time miller procps systemd
  chromium fonts-dejavu-core groff-base man-db bash-completion
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# The Debian postgresql package would create and start a system cluster; the tests and the demo
# make their own throwaway clusters, so keep the package from starting one.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
