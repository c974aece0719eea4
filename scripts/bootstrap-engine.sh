#!/usr/bin/env bash
# Build the Pulumi engine this project runs against, from Go modules only.
#
#   bash scripts/bootstrap-engine.sh                build (a no-op when cached); last line: the bin dir
#   bash scripts/bootstrap-engine.sh --update-pins  rewrite engine/*/go.mod and go.sum to the
#                                                   versions requirements.txt pins, then stop
#
# Produces, in .cache/engine/<stamp>/bin (the dir to put on PATH):
#   pulumi                          CLI, github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
#   pulumi-language-python          minimal Python language host (engine/cli/langhost)
#   pulumi-language-python-exec     exec shim the host runs the program through (engine/shims)
#   pulumi-resource-pulumi-python   launcher for dynamic providers, python -m pulumi.dynamic (engine/shims)
# and, in .cache/engine/<stamp>/plugins/resource-kubernetes-v<Y>/ (plugin-cache layout):
#   pulumi-resource-kubernetes      provider, github.com/pulumi/pulumi-kubernetes/provider/v4
# The provider is deliberately not in bin/: a provider found on PATH is used for any
# requested version and the engine warns "using pulumi-resource-kubernetes from $PATH"
# on every run. scripts/engine-env.sh links it into $PULUMI_HOME/plugins instead,
# where the engine picks it by exact version, like a normally installed plugin.
#
# Sources and pins live in engine/:
#   engine/cli/         wrapper module of the CLI (tools.go) and the language host;
#                       go.mod pins pkg/v3 and sdk/v3 at the `pulumi==X` of requirements.txt
#   engine/kubernetes/  wrapper module of the provider; go.mod pins provider/v4 at the
#                       pseudo-version of the `pulumi-kubernetes==Y` release (see
#                       k8s_provider_module_version) and sdk/v4 at vY
#   engine/shims/       the two scripts the Pulumi release archive ships beside the host
# requirements.txt (or ENGINE_PULUMI_VERSION / ENGINE_K8S_VERSION) must name the versions
# those go.mod files pin; otherwise this script stops and says to run --update-pins.
# The cache stamp is pulumi-X_kubernetes-Y_<sha256 of engine/, the pins and this script>,
# so any change to a source, a pin or a build command rebuilds; the same inputs are a
# no-op. Everything the Go toolchain prints goes to .cache/engine/<stamp>/build.log; its
# tail is shown on failure.
#
# Only the Go module proxy is used (no release downloads, no git). Notes:
#  * The upstream Python language host is its own Go module
#    (github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3) and the proxy
#    serves none of its versions, hence our own host against the SDK packages
#    (sdk/v3 proto + python/toolchain) of the same release.
#  * pkg/v3 and provider/v4 carry `replace ../sdk` directives, so `go install
#    module@version` refuses them; each is built from its wrapper module, which requires
#    it and repeats its non-local replaces.
#  * pulumi-kubernetes tags releases at the repo root, so provider/v4 exists on the proxy
#    only as a pseudo-version. Its go:embed'ed schema-embed.json is not in the module
#    archive: the command package is copied into a build copy of engine/kubernetes and
#    generated with its own generate.go.
set -euo pipefail

# provider/v4 has no tags of its own: map a pulumi-kubernetes release to the proxy
# pseudo-version of its release commit (used by --update-pins and the pin check).
# ENGINE_K8S_PROVIDER_MODULE_VERSION overrides.
k8s_provider_module_version() {
  case "$1" in
    4.25.0) echo "v4.0.0-20260115033456-f47bc2d6f199" ;;
    *) echo "v$1" ;; # in case a tag is ever served
  esac
}

SCRIPT_START=$SECONDS
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SCRIPT_PATH="$SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")"
PROJECT_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
ENGINE_SRC="$PROJECT_DIR/engine"
ENGINE_ROOT="$PROJECT_DIR/.cache/engine"
UPDATE_CMD="bash scripts/bootstrap-engine.sh --update-pins"

UPDATE_PINS=
case "${1:-}" in
  "") ;;
  --update-pins) UPDATE_PINS=1 ;;
  *) echo "usage: bash scripts/bootstrap-engine.sh [--update-pins]" >&2; exit 2 ;;
esac

PKG_MOD=github.com/pulumi/pulumi/pkg/v3
SDK_MOD=github.com/pulumi/pulumi/sdk/v3
K8S_PROVIDER_MOD=github.com/pulumi/pulumi-kubernetes/provider/v4
K8S_SDK_MOD=github.com/pulumi/pulumi-kubernetes/sdk/v4
CLI_GOMOD="$ENGINE_SRC/cli/go.mod"
K8S_GOMOD="$ENGINE_SRC/kubernetes/go.mod"

# ---------------------------------------------------------------- pins
pin_from_requirements() { # $1 = distribution name
  local req="$PROJECT_DIR/requirements.txt"
  [[ -f "$req" ]] || return 0
  sed -n -E "s/^[[:space:]]*$1[[:space:]]*==[[:space:]]*([0-9][0-9A-Za-z.+-]*).*/\1/p" "$req" | head -n1
}
# The version a go.mod requires of a module (one-line or block form), without Go.
gomod_version() { # $1 = go.mod, $2 = module path
  awk -v m="$2" '$1 == "require" && $2 == m { print $3; exit } $1 == m && $2 ~ /^v/ { print $2; exit }' "$1"
}
WANT_PULUMI="${ENGINE_PULUMI_VERSION:-$(pin_from_requirements pulumi)}"
WANT_K8S="${ENGINE_K8S_VERSION:-$(pin_from_requirements pulumi-kubernetes)}"
PULUMI_FROM="requirements.txt pins pulumi==" K8S_FROM="requirements.txt pins pulumi-kubernetes=="
[[ -z "${ENGINE_PULUMI_VERSION:-}" ]] || PULUMI_FROM="ENGINE_PULUMI_VERSION is "
[[ -z "${ENGINE_K8S_VERSION:-}" ]] || K8S_FROM="ENGINE_K8S_VERSION is "
WANT_K8S_MODULE=
if [[ -n "$WANT_K8S" ]]; then
  WANT_K8S_MODULE="${ENGINE_K8S_PROVIDER_MODULE_VERSION:-$(k8s_provider_module_version "$WANT_K8S")}"
fi

read_pins() {
  PIN_PKG="$(gomod_version "$CLI_GOMOD" "$PKG_MOD")"
  PIN_SDK="$(gomod_version "$CLI_GOMOD" "$SDK_MOD")"
  PIN_K8S_MODULE="$(gomod_version "$K8S_GOMOD" "$K8S_PROVIDER_MOD")"
  PIN_K8S_SDK="$(gomod_version "$K8S_GOMOD" "$K8S_SDK_MOD")"
  PULUMI_VERSION="${PIN_PKG#v}"
  K8S_VERSION="${PIN_K8S_SDK#v}"
  K8S_MODULE_VERSION="$PIN_K8S_MODULE"
}

# Fails, saying how to update, unless the go.mod pins are the wanted versions.
check_pins() {
  local problems=()
  if [[ -z "$PIN_PKG" || "$PIN_SDK" != "$PIN_PKG" ]]; then
    problems+=("engine/cli/go.mod must require $PKG_MOD and $SDK_MOD at one version (has '$PIN_PKG' and '$PIN_SDK')")
  elif [[ -n "$WANT_PULUMI" && "v$WANT_PULUMI" != "$PIN_PKG" ]]; then
    problems+=("$PULUMI_FROM$WANT_PULUMI but engine/cli/go.mod builds $PKG_MOD $PIN_PKG")
  fi
  if [[ -z "$PIN_K8S_MODULE" || -z "$PIN_K8S_SDK" ]]; then
    problems+=("engine/kubernetes/go.mod must require $K8S_PROVIDER_MOD and $K8S_SDK_MOD (has '$PIN_K8S_MODULE' and '$PIN_K8S_SDK')")
  elif [[ -n "$WANT_K8S" && ( "v$WANT_K8S" != "$PIN_K8S_SDK" || "$WANT_K8S_MODULE" != "$PIN_K8S_MODULE" ) ]]; then
    problems+=("$K8S_FROM$WANT_K8S (provider module $WANT_K8S_MODULE) but engine/kubernetes/go.mod builds $K8S_SDK_MOD $PIN_K8S_SDK, $K8S_PROVIDER_MOD $PIN_K8S_MODULE")
  fi
  ((${#problems[@]} == 0)) && return 0
  local p
  for p in "${problems[@]}"; do echo "engine: $p" >&2; done
  echo "engine: update the Go pins with \`$UPDATE_CMD\` (uses the Go module proxy)," \
    "then review and commit engine/cli/go.mod, engine/cli/go.sum, engine/kubernetes/go.mod and engine/kubernetes/go.sum" >&2
  exit 1
}

# sha256 of everything the build depends on: the files of an engine/ tree ($1; each
# file's path and content), the pins and this script (its build commands).
inputs_hash() {
  (
    cd "$1"
    find . -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | LC_ALL=C sort -z |
      xargs -0 sha256sum
    echo "pins pulumi=$PULUMI_VERSION kubernetes=$K8S_VERSION module=$K8S_MODULE_VERSION"
    sha256sum <"$SCRIPT_PATH"
  ) | sha256sum | cut -c1-16
}

# ---------------------------------------------------------------- tools
find_go() {
  GO="$(command -v go || true)"
  [[ -n "$GO" ]] || GO=/usr/local/go/bin/go
  if [[ ! -x "$GO" ]]; then
    echo "engine: no Go toolchain found (looked on PATH and /usr/local/go/bin/go)" >&2
    exit 1
  fi
  export GOFLAGS="-buildvcs=false${GOFLAGS:+ ${GOFLAGS//-buildvcs=false/}}"
  # Let go switch to a newer toolchain (served by the module proxy) if a module needs it.
  export GOTOOLCHAIN="${ENGINE_GOTOOLCHAIN:-auto}"
  export GOPROXY="${GOPROXY:-https://proxy.golang.org,direct}"
  export CGO_ENABLED=0
}

# ---------------------------------------------------------------- --update-pins
if [[ -n "$UPDATE_PINS" ]]; then
  find_go
  PY="$(command -v python3 || command -v python || true)"
  [[ -n "$PY" ]] || { echo "engine: python3 is needed to update the pins" >&2; exit 1; }
  read_pins
  WANT_PULUMI="${WANT_PULUMI:-$PULUMI_VERSION}"
  WANT_K8S="${WANT_K8S:-$K8S_VERSION}"
  WANT_K8S_MODULE="${WANT_K8S_MODULE:-${ENGINE_K8S_PROVIDER_MODULE_VERSION:-$(k8s_provider_module_version "$WANT_K8S")}}"
  TMP="$(mktemp -d)"
  trap 'rm -rf "$TMP"' EXIT

  # go mod download -json MODULE@VERSION; prints the path of its go.mod or fails
  # with a clear message when the proxy does not serve that version.
  module_gomod() {
    (cd "$TMP" && { "$GO" mod download -json "$1" 2>/dev/null || true; }) | "$PY" -c '
import json, sys
raw = sys.stdin.read().strip()
try:
    d = json.loads(raw) if raw else {}
except ValueError:
    d = {}
if d.get("Error") or not d.get("GoMod"):
    sys.stderr.write("engine: the Go module proxy does not serve %s: %s\n" % (sys.argv[1], d.get("Error", "no answer")))
    sys.exit(1)
print(d["GoMod"])
' "$1"
  }
  # `go mod edit` flags that make a wrapper go.mod mirror a module's go.mod: its go
  # version and its non-local replaces (local ones, e.g. ../sdk, become requires).
  mirror_flags() { # $1 = wrapper go.mod, $2 = the wrapped module's go.mod
    "$PY" - "$GO" "$1" "$2" <<'PYEOF'
import json, subprocess, sys
go, own_path, wrapped_path = sys.argv[1:]
def edit_json(path):
    out = subprocess.run([go, "mod", "edit", "-json", path], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)
own, wrapped = edit_json(own_path), edit_json(wrapped_path)
def key(old):
    return old["Path"] + ("@" + old["Version"] if old.get("Version") else "")
for r in own.get("Replace") or []:
    print("-dropreplace=" + key(r["Old"]))
for r in wrapped.get("Replace") or []:
    if r["New"].get("Version"):  # local directory replaces are covered by requires
        print("-replace=%s=%s@%s" % (key(r["Old"]), r["New"]["Path"], r["New"]["Version"]))
if wrapped.get("Go"):
    print("-go=" + wrapped["Go"])
PYEOF
  }
  # Rewrites engine/$1's go.mod/go.sum in a scratch copy: requires, mirror flags, tidy.
  update_module() { # $1 = engine subdir, $2 = wrapped module@version, $3... = -require flags
    local dir="$TMP/$1" wrapped_gomod
    local requires=("${@:3}") flags=()
    mkdir -p "$dir"
    cp -R "$ENGINE_SRC/$1/." "$dir/"
    wrapped_gomod="$(module_gomod "$2")" || exit 1
    mapfile -t flags < <(mirror_flags "$dir/go.mod" "$wrapped_gomod")
    (cd "$dir" && "$GO" mod edit "${requires[@]}" "${flags[@]}" && "$GO" mod tidy)
  }

  echo "engine: pinning pulumi $WANT_PULUMI in engine/cli"
  if ! module_gomod "$PKG_MOD@v$WANT_PULUMI" >/dev/null; then
    echo "engine: pin a pulumi version whose Go module is served in requirements.txt" >&2
    exit 1
  fi
  update_module cli "$PKG_MOD@v$WANT_PULUMI" -require="$PKG_MOD@v$WANT_PULUMI" -require="$SDK_MOD@v$WANT_PULUMI"
  echo "engine: pinning pulumi-kubernetes $WANT_K8S ($K8S_PROVIDER_MOD@$WANT_K8S_MODULE) in engine/kubernetes"
  if ! module_gomod "$K8S_PROVIDER_MOD@$WANT_K8S_MODULE" >/dev/null; then
    echo "engine: no provider module known for pulumi-kubernetes $WANT_K8S; add its release commit's" \
      "pseudo-version to k8s_provider_module_version in this script or set ENGINE_K8S_PROVIDER_MODULE_VERSION" >&2
    exit 1
  fi
  module_gomod "$K8S_SDK_MOD@v$WANT_K8S" >/dev/null || exit 1
  update_module kubernetes "$K8S_PROVIDER_MOD@$WANT_K8S_MODULE" \
    -require="$K8S_PROVIDER_MOD@$WANT_K8S_MODULE" -require="$K8S_SDK_MOD@v$WANT_K8S"

  # tidy must not have moved the pins (MVS raises them if something requires newer).
  for pair in "cli $PKG_MOD v$WANT_PULUMI" "cli $SDK_MOD v$WANT_PULUMI" \
    "kubernetes $K8S_PROVIDER_MOD $WANT_K8S_MODULE" "kubernetes $K8S_SDK_MOD v$WANT_K8S"; do
    read -r sub mod want <<<"$pair"
    got="$(gomod_version "$TMP/$sub/go.mod" "$mod")"
    [[ "$got" == "$want" ]] || { echo "engine: $mod resolved to '$got' in engine/$sub, wanted $want" >&2; exit 1; }
  done
  for sub in cli kubernetes; do
    cp "$TMP/$sub/go.mod" "$TMP/$sub/go.sum" "$ENGINE_SRC/$sub/"
  done
  echo "engine: pins updated; review \`git diff engine/\` and commit engine/*/go.mod and engine/*/go.sum"
  exit 0
fi

# ---------------------------------------------------------------- cache
read_pins
check_pins
KEY="$(inputs_hash "$ENGINE_SRC")"
STAMP="pulumi-${PULUMI_VERSION}_kubernetes-${K8S_VERSION}_${KEY}"
STAMP_DIR="$ENGINE_ROOT/$STAMP"
BIN_DIR="$STAMP_DIR/bin"
K8S_PLUGIN_REL="plugins/resource-kubernetes-v$K8S_VERSION/pulumi-resource-kubernetes"
LOG="$STAMP_DIR/build.log"
BINARIES=(bin/pulumi bin/pulumi-language-python bin/pulumi-language-python-exec
  bin/pulumi-resource-pulumi-python "$K8S_PLUGIN_REL")

is_complete() {
  [[ -f "$STAMP_DIR/.complete" ]] || return 1
  local b
  for b in "${BINARIES[@]}"; do [[ -x "$STAMP_DIR/$b" ]] || return 1; done
}

finish() {
  echo "engine: $1 in $((SECONDS - SCRIPT_START))s (pulumi $PULUMI_VERSION, pulumi-kubernetes $K8S_VERSION)"
  echo "$BIN_DIR"
}

if is_complete; then
  touch "$STAMP_DIR/.complete" 2>/dev/null || true # marks it recently used (see pruning below)
  finish "up to date"
  exit 0
fi

mkdir -p "$ENGINE_ROOT"
# Serialize concurrent bootstraps (parallel test jobs); re-check after waiting.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$ENGINE_ROOT/.lock"
  flock 9
  HAVE_LOCK=1
  if is_complete; then finish "up to date"; exit 0; fi
fi

# ---------------------------------------------------------------- build setup
# Holding the lock, any stamp dir without .complete is left over from a failed run.
if [[ -n "${HAVE_LOCK:-}" ]]; then
  for d in "$ENGINE_ROOT"/*/; do
    if [[ -d "$d" && ! -f "$d/.complete" ]]; then rm -rf "$d"; fi
  done
fi
rm -rf "$STAMP_DIR"
mkdir -p "$STAMP_DIR"
: >"$LOG"
WORK="$STAMP_DIR/work"       # a copy of engine/: the build writes generated files there
PARTIAL="$STAMP_DIR/partial" # becomes bin/ and plugins/ once everything is built
mkdir -p "$WORK" "$PARTIAL/bin" "$PARTIAL/$(dirname "$K8S_PLUGIN_REL")"

CURRENT_STEP="setup"
on_exit() {
  local rc=$?
  if [[ $rc -ne 0 ]]; then
    {
      echo "engine: FAILED during: $CURRENT_STEP (exit $rc) after $((SECONDS - SCRIPT_START))s"
      echo "engine: last lines of $LOG:"
      tail -n 60 "$LOG" 2>/dev/null | sed 's/^/  | /'
      if grep -q "missing go.sum entry\|updates to go.mod needed" "$LOG" 2>/dev/null; then
        echo "engine: engine/*/go.sum is not complete for this build; run \`$UPDATE_CMD\`"
      fi
    } >&2
  fi
}
trap on_exit EXIT

step() {
  CURRENT_STEP="$*"
  echo "engine: [$((SECONDS - SCRIPT_START))s] $*"
  echo "==== [$((SECONDS - SCRIPT_START))s] $*" >>"$LOG"
}
run() { # run a command with its output in the log
  echo "+ $*" >>"$LOG"
  "$@" >>"$LOG" 2>&1
}

find_go
step "using $("$GO" version); log: $LOG"

cp -R "$ENGINE_SRC/." "$WORK/"
chmod -R u+w "$WORK"
# The stamp names what is built: fail if engine/ changed while it was copied.
[[ "$(inputs_hash "$WORK")" == "$KEY" ]] || { echo "engine: engine/ changed while it was copied; run again" >&2; exit 1; }

# ---------------------------------------------------------------- pulumi CLI + language host
CLI_DIR="$WORK/cli"
step "building pulumi v$PULUMI_VERSION (the longest step, several minutes on a cold cache)"
(cd "$CLI_DIR" && run "$GO" build -mod=readonly -trimpath \
  -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$PULUMI_VERSION" \
  -o "$PARTIAL/bin/pulumi" "$PKG_MOD/cmd/pulumi")

step "building pulumi-language-python v$PULUMI_VERSION"
(cd "$CLI_DIR" && run "$GO" build -mod=readonly -trimpath -ldflags "-s -w -X main.Version=v$PULUMI_VERSION" \
  -o "$PARTIAL/bin/pulumi-language-python" ./langhost)

step "installing the shims"
for shim in pulumi-language-python-exec pulumi-resource-pulumi-python; do
  install -m 0755 "$WORK/shims/$shim" "$PARTIAL/bin/$shim"
done

# ---------------------------------------------------------------- kubernetes provider
step "preparing $K8S_PROVIDER_MOD@$K8S_MODULE_VERSION (pulumi-kubernetes $K8S_VERSION)"
K8S_DIR="$WORK/kubernetes"
K8S_CMD="$K8S_DIR/cmd/pulumi-resource-kubernetes"
(cd "$K8S_DIR" && run "$GO" mod download "$K8S_PROVIDER_MOD")
K8S_SRC="$(cd "$K8S_DIR" && "$GO" list -mod=readonly -m -f '{{.Dir}}' "$K8S_PROVIDER_MOD")"
[[ -d "$K8S_SRC/cmd/pulumi-resource-kubernetes" ]] || {
  echo "engine: $K8S_PROVIDER_MOD@$K8S_MODULE_VERSION has no cmd/pulumi-resource-kubernetes (looked in '$K8S_SRC')" >&2
  exit 1
}
# The command package go:embeds schema-embed.json, which its module archive lacks:
# copy the package (with its schema.json) here and run its own generator.
mkdir -p "$K8S_CMD"
for f in "$K8S_SRC/cmd/pulumi-resource-kubernetes/"*; do
  case "$f" in *_test.go) continue ;; esac
  cp "$f" "$K8S_CMD/"
done
chmod -R u+w "$K8S_CMD"

step "generating the provider's embedded schema (version $K8S_VERSION)"
(cd "$K8S_CMD" && VERSION="$K8S_VERSION" run "$GO" generate .)
[[ -s "$K8S_CMD/schema-embed.json" && -s "$K8S_CMD/terraform-mapping-embed.json" ]] || {
  echo "engine: go generate did not produce the embedded schema files" >&2
  exit 1
}

step "building pulumi-resource-kubernetes v$K8S_VERSION (several minutes on a cold cache)"
(cd "$K8S_DIR" && run "$GO" build -mod=readonly -trimpath \
  -ldflags "-s -w -X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$K8S_VERSION" \
  -o "$PARTIAL/$K8S_PLUGIN_REL" ./cmd/pulumi-resource-kubernetes)

# ---------------------------------------------------------------- finish
step "checking the binaries"
got="$("$PARTIAL/bin/pulumi" version 2>>"$LOG")"
[[ "$got" == "v$PULUMI_VERSION" ]] || { echo "engine: built pulumi reports '$got'" >&2; exit 1; }
for b in "${BINARIES[@]}"; do [[ -x "$PARTIAL/$b" ]] || { echo "engine: $b missing" >&2; exit 1; }; done

rm -rf "${STAMP_DIR:?}/bin" "${STAMP_DIR:?}/plugins"
mv "$PARTIAL/bin" "$PARTIAL/plugins" "$STAMP_DIR/"
rmdir "$PARTIAL"
rm -f "$K8S_CMD"/*.json # 13 MB of schema copies; the work copy of engine/ stays for reference
cat >"$STAMP_DIR/.complete" <<EOF
pulumi=$PULUMI_VERSION
pulumi-language-python=$PULUMI_VERSION
pulumi-kubernetes=$K8S_VERSION
pulumi-kubernetes-provider-module=$K8S_PROVIDER_MOD@$K8S_MODULE_VERSION
pulumi-kubernetes-plugin=$K8S_PLUGIN_REL
go=$("$GO" env GOVERSION)
key=$KEY
EOF
# Keep the two most recently used other builds (~300 MB each); drop older ones.
if [[ -n "${HAVE_LOCK:-}" ]]; then
  { ls -1t "$ENGINE_ROOT"/*/.complete 2>/dev/null || true; } | { grep -v -F "$STAMP_DIR/.complete" || true; } |
    tail -n +3 | while read -r marker; do rm -rf "$(dirname "$marker")"; done
fi
finish "built"
