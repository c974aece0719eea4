#!/usr/bin/env bash
# Everything the project needs on a fresh Debian machine: BIND 9 from Debian's
# packages and the pinned Python packages. Safe to run again (fast no-op).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v named >/dev/null 2>&1 && [ ! -x /usr/sbin/named ] \
   || ! command -v dig >/dev/null 2>&1 || ! command -v named-checkzone >/dev/null 2>&1; then
  echo "installing bind9, bind9-utils, bind9-dnsutils from Debian's packages"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    bind9 bind9-utils bind9-dnsutils >/dev/null
fi
# Debian starts named as a service on install; our tests run their own.
as_root systemctl disable --now named >/dev/null 2>&1 || true

# The tests (requirements-dev.txt) also run Knot DNS and NSD for interop.
if [ "${1:-requirements-dev.txt}" = requirements-dev.txt ] \
   && { [ ! -x /usr/sbin/knotd ] || [ ! -x /usr/sbin/nsd ]; }; then
  echo "installing knot, nsd from Debian's packages (interop tests)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq knot nsd >/dev/null
  as_root systemctl disable --now knot nsd >/dev/null 2>&1 || true
fi

# tests/test_alerts.py checks the alerting rules with promtool (Debian's prometheus package;
# its server is not used: the service is disabled as named's is).
if [ "${1:-requirements-dev.txt}" = requirements-dev.txt ] && ! command -v promtool >/dev/null 2>&1; then
  echo "installing prometheus from Debian's packages (promtool, rule tests)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    prometheus >/dev/null
  as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

# scripts/test.sh runs shellcheck on the engine's shell sources.
if [ "${1:-requirements-dev.txt}" = requirements-dev.txt ] && ! command -v shellcheck >/dev/null 2>&1; then
  echo "installing shellcheck from Debian's packages (script checks)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -r "${1:-requirements-dev.txt}"
