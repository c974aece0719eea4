#!/usr/bin/env bash
# The main job with no cluster: every stack of the project rendered and run in
# real named processes on loopback, zones transferred with TSIG, the gate's
# verdict printed, then everything stopped. Extra arguments go to `local up`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh requirements.txt
export PATH="$PATH:/usr/sbin"
exec python3 -m components local up --all --once "$@"
