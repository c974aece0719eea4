#!/usr/bin/env bash
# Installs what the tests need (BIND, Python packages, the Pulumi engine and the
# local Kubernetes cluster built from Go modules and Debian's packages) and runs
# every test tier. Extra arguments go to pytest, e.g. `bash scripts/test.sh -m unit`
# for the fast subset.
#
#   SKIP_ENGINE=1   no engine build; the engine and cluster tiers are skipped
#   SKIP_CLUSTER=1  no cluster build; the cluster tier is skipped (also without root)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh requirements-dev.txt
export PATH="$PATH:/usr/sbin"
if [ "$(id -u)" != 0 ]; then export SKIP_CLUSTER=1; fi
if [ -n "${SKIP_ENGINE:-}" ]; then export SKIP_CLUSTER=1; fi

# The two long builds run side by side (each caches by version under .cache/, so a
# second run is a no-op): the engine's Go build, and the cluster's Go build plus
# its images (debootstrap, mostly network and disk, overlaps well with compiling).
mkdir -p .cache/logs
start=$SECONDS
build_pids=() build_names=()
if [ -z "${SKIP_ENGINE:-}" ]; then
  bash scripts/bootstrap-engine.sh >.cache/logs/engine-build.log 2>&1 &
  build_pids+=($!) build_names+=(engine)
fi
if [ -z "${SKIP_CLUSTER:-}" ]; then
  bash scripts/cluster.sh build >.cache/logs/cluster-build.log 2>&1 &
  build_pids+=($!) build_names+=(cluster)
fi
for i in "${!build_pids[@]}"; do
  if ! wait "${build_pids[$i]}"; then
    echo "test.sh: the ${build_names[$i]} build failed:" >&2
    tail -n 60 ".cache/logs/${build_names[$i]}-build.log" >&2
    exit 1
  fi
  echo "test.sh: ${build_names[$i]} build ready after $((SECONDS - start))s"
done

# The engine's own sources (engine/): Go gofmt-clean, `go vet` clean and the language
# host's unit tests (seconds once the build above has warmed Go's caches); the shell
# shim parses and, with shellcheck installed, passes it; ruff also reads the python shim
# and, with mypy, the policy pack (policy/).
GO="$(command -v go || echo /usr/local/go/bin/go)"
if [ -x "$GO" ]; then
  unformatted="$("$("$GO" env GOROOT)/bin/gofmt" -l engine)"
  if [ -n "$unformatted" ]; then
    echo "test.sh: not gofmt-clean (run gofmt -w): $unformatted" >&2
    exit 1
  fi
  (cd engine/cli && CGO_ENABLED=0 GOFLAGS=-buildvcs=false "$GO" vet -trimpath ./... &&
    CGO_ENABLED=0 GOFLAGS=-buildvcs=false "$GO" test -trimpath -count=1 ./...)
elif [ -z "${SKIP_ENGINE:-}" ]; then
  echo "test.sh: no Go toolchain for the engine's checks" >&2
  exit 1
fi
sh -n engine/shims/pulumi-resource-pulumi-python
if command -v shellcheck >/dev/null 2>&1; then
  shellcheck engine/shims/pulumi-resource-pulumi-python scripts/bootstrap-engine.sh
fi
ruff check engine policy
mypy policy  # the policy pack's own run: its rules import as a top-level module

ruff check components bind9_topology tests bench scripts cluster
mypy components bind9_topology
exec python3 -m pytest "$@"
