#!/usr/bin/env bash
# Installs what the tests need (BIND, Python packages, the Pulumi engine built
# from Go modules) and runs every test tier. Extra arguments go to pytest,
# e.g. `bash scripts/test.sh -m unit` for the fast subset.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh requirements-dev.txt
export PATH="$PATH:/usr/sbin"
if [ -z "${SKIP_ENGINE:-}" ] && [ -f scripts/bootstrap-engine.sh ]; then
  bash scripts/bootstrap-engine.sh
fi
ruff check components tests bench
mypy components
exec python3 -m pytest "$@"
