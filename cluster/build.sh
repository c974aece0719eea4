#!/usr/bin/env bash
# Build the clusters' binaries from Go modules, each module into its own cached dir
# .cache/cluster/<stamp>/bin (the stamp hashes its sources and the Go version, so a
# second run with the same inputs is a no-op):
#   cluster/kubernetes  kube-apiserver, kube-controller-manager, kube-scheduler,
#                       kubelet, kube-proxy, kubectl; plus cluster/pause
#   cluster/metallb     MetalLB's controller and speaker (LoadBalancer addresses, L2)
#   cluster/kube-router kube-router (its NetworkPolicy firewall only)
# Then one dir of links to all of them, printed as the last line.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GO="$(command -v go || echo /usr/local/go/bin/go)"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false GOTOOLCHAIN=auto
mkdir -p "$ROOT/.cache/cluster"
GOVERSION="$("$GO" version)"

version_of() { # module dir, module path -> its required version
  sed -n -E "s|^[[:space:]]*(require )?$2 v([0-9.]+).*|\\2|p" "$ROOT/cluster/$1/go.mod" | head -n1
}

# build <name> <module dir> <version> <ldflags> <package>...: prints the bin dir.
build() {
  local name=$1 dir=$2 version=$3 ldflags=$4; shift 4
  local stamp out log start
  stamp="$name-v$version-$(cat "$ROOT/cluster/$dir"/go.{mod,sum} "$ROOT/cluster/build.sh" \
    <(echo "$GOVERSION") $([[ $dir == kubernetes ]] && echo "$ROOT"/cluster/pause/*) | sha256sum | cut -c1-12)"
  out="$ROOT/.cache/cluster/$stamp"
  if [[ ! -f "$out/.complete" ]]; then
    exec 9>"$ROOT/.cache/cluster/.lock-$name"; flock 9
    if [[ ! -f "$out/.complete" ]]; then
      rm -rf "$out"; mkdir -p "$out/bin"
      log="$out/build.log"; start=$SECONDS
      echo "cluster-build: building $name v$version ($*); log: $log" >&2
      if ! (cd "$ROOT/cluster/$dir" && "$GO" build -trimpath -ldflags "$ldflags" -o "$out/bin/" "$@") >"$log" 2>&1; then
        tail -n 40 "$log" >&2; echo "cluster-build: $name FAILED (log: $log)" >&2; exit 1
      fi
      if [[ $dir == kubernetes ]] &&
        ! (cd "$ROOT/cluster/pause" && "$GO" build -trimpath -ldflags "-s -w" -o "$out/bin/pause" .) >>"$log" 2>&1; then
        tail -n 40 "$log" >&2; echo "cluster-build: pause FAILED" >&2; exit 1
      fi
      touch "$out/.complete"
      echo "cluster-build: $name built in $((SECONDS - start))s ($stamp)" >&2
    fi
    exec 9>&-
  fi
  echo "$out/bin"
}

K8S_VERSION="$(version_of kubernetes k8s.io/kubernetes)"
minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
k8s_pkgs=()
for t in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
  k8s_pkgs+=("k8s.io/kubernetes/cmd/$t")
done
MLB_VERSION="$(version_of metallb go.universe.tf/metallb)"
KR_VERSION="$(version_of kube-router github.com/cloudnativelabs/kube-router/v2)"

# Kubernetes is most of the work (about 12 minutes cold on 2 cores); the two add-ons
# (about 2-3 minutes each) build beside it. One `go build` per module, so its commands
# share compiled packages.
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
build kubernetes kubernetes "$K8S_VERSION" "$k8s_ldflags" "${k8s_pkgs[@]}" >"$tmp/k8s" &
k8s=$!
build metallb metallb "$MLB_VERSION" "-s -w" go.universe.tf/metallb/controller go.universe.tf/metallb/speaker >"$tmp/mlb" &
mlb=$!
build kube-router kube-router "$KR_VERSION" "-s -w" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router >"$tmp/kr" &
kr=$!
fail=0
for p in $k8s $mlb $kr; do wait "$p" || fail=1; done
((fail == 0)) || exit 1

# One dir with every binary (links), named after the three stamps.
dirs=("$(cat "$tmp/k8s")" "$(cat "$tmp/mlb")" "$(cat "$tmp/kr")")
link="$ROOT/.cache/cluster/bin-$(printf '%s\n' "${dirs[@]}" | sha256sum | cut -c1-12)"
if [[ ! -d "$link" ]]; then
  mkdir -p "$link.new"
  for d in "${dirs[@]}"; do ln -sf "$d"/* "$link.new/"; done
  mv -T "$link.new" "$link"
fi
echo "cluster-build: up to date (${dirs[*]})" >&2
echo "$link"
