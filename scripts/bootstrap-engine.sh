#!/usr/bin/env bash
# Build the Pulumi engine this project runs against, from Go modules only.
#
# Produces, in .cache/engine/<stamp>/bin (the dir to put on PATH):
#   pulumi                          CLI, github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
#   pulumi-language-python          minimal Python language host (our own Go code, below)
#   pulumi-language-python-exec     exec shim the host runs the program through
#   pulumi-resource-pulumi-python   launcher for dynamic providers (python -m pulumi.dynamic)
# and, in .cache/engine/<stamp>/plugins/resource-kubernetes-v<Y>/ (plugin-cache layout):
#   pulumi-resource-kubernetes      provider, github.com/pulumi/pulumi-kubernetes/provider/v4
# The provider is deliberately not in bin/: a provider found on PATH is used for any
# requested version and the engine warns "using pulumi-resource-kubernetes from $PATH"
# on every run. scripts/engine-env.sh links it into $PULUMI_HOME/plugins instead,
# where the engine picks it by exact version, like a normally installed plugin.
#
# Versions come from requirements.txt (`pulumi==X`, `pulumi-kubernetes==Y`), else
# from the defaults below; ENGINE_PULUMI_VERSION / ENGINE_K8S_VERSION override both.
# A second run with the same pins is a no-op. The last line printed is the bin dir.
# Everything the Go toolchain prints goes to .cache/engine/<stamp>/build.log; its
# tail is shown on failure.
#
# Only the Go module proxy is used (no release downloads, no git). Notes:
#  * The upstream Python language host is its own Go module
#    (github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3) and the
#    proxy serves none of its versions, so this script writes a small host of its
#    own against the SDK packages (sdk/v3 proto + python/toolchain) of the same
#    release, plus the two shell/python shims the release archive ships.
#  * pkg/v3 and provider/v4 carry `replace ../sdk` directives, so `go install
#    module@version` refuses them; each is built from a wrapper module written into
#    the cache dir that requires it and repeats its non-local replaces.
#  * pulumi-kubernetes tags releases at the repo root, so provider/v4 exists on the
#    proxy only as a pseudo-version (see k8s_provider_module_version). Its
#    go:embed'ed schema-embed.json is generated with the module's own generate.go.
set -euo pipefail

# Fallback pins, used when requirements.txt has none. pulumi: newest release
# served both as pkg/v3 on the proxy and as `pulumi` on PyPI. pulumi-kubernetes:
# the only release whose provider module the proxy serves.
DEFAULT_PULUMI_VERSION=3.260.0
DEFAULT_K8S_VERSION=4.25.0
# Bump when the recipe (shims, host source, flags) changes so caches rebuild.
RECIPE_REV=3

# provider/v4 has no tags of its own: map a pulumi-kubernetes release to the
# proxy pseudo-version of its release commit. ENGINE_K8S_PROVIDER_MODULE_VERSION
# overrides.
k8s_provider_module_version() {
  case "$1" in
    4.25.0) echo "v4.0.0-20260115033456-f47bc2d6f199" ;;
    *) echo "v$1" ;; # in case a tag is ever served
  esac
}

SCRIPT_START=$SECONDS
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROJECT_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
ENGINE_ROOT="$PROJECT_DIR/.cache/engine"

# ---------------------------------------------------------------- versions
pin_from_requirements() { # $1 = distribution name
  local req="$PROJECT_DIR/requirements.txt"
  [[ -f "$req" ]] || return 0
  sed -n -E "s/^[[:space:]]*$1[[:space:]]*==[[:space:]]*([0-9][0-9A-Za-z.+-]*).*/\1/p" "$req" | head -n1
}
PULUMI_VERSION="${ENGINE_PULUMI_VERSION:-$(pin_from_requirements pulumi)}"
PULUMI_VERSION="${PULUMI_VERSION:-$DEFAULT_PULUMI_VERSION}"
K8S_VERSION="${ENGINE_K8S_VERSION:-$(pin_from_requirements pulumi-kubernetes)}"
K8S_VERSION="${K8S_VERSION:-$DEFAULT_K8S_VERSION}"
K8S_MODULE_VERSION="${ENGINE_K8S_PROVIDER_MODULE_VERSION:-$(k8s_provider_module_version "$K8S_VERSION")}"

STAMP="pulumi-${PULUMI_VERSION}_kubernetes-${K8S_VERSION}_r${RECIPE_REV}"
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
WORK="$STAMP_DIR/work"
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
PY="$(command -v python3 || command -v python || true)"
[[ -n "$PY" ]] || { echo "engine: python3 is needed to build" >&2; exit 1; }

step "using $("$GO" version); log: $LOG"

# go mod download -json MODULE@VERSION; prints the path of its go.mod, or fails
# with a clear message when the proxy does not serve that version.
module_gomod() {
  local json
  echo "+ go mod download -json $1" >>"$LOG"
  json="$(cd "$WORK" && "$GO" mod download -json "$1" 2>>"$LOG" || true)"
  echo "$json" >>"$LOG"
  "$PY" -c '
import json, sys
raw = sys.stdin.read().strip()
try:
    d = json.loads(raw) if raw else {}
except ValueError:
    d = {}
if d.get("Error") or not d.get("GoMod"):
    sys.stderr.write("engine: the Go module proxy does not serve %s: %s\n" % (sys.argv[1], d.get("Error", "no answer")))
    sys.exit(1)
print(d["GoMod"] + "\t" + d.get("Dir", ""))
' "$1" <<<"$json"
}

# Print `-replace=old[@v]=new[@v]` flags for the non-local replace directives of
# a go.mod (local ones, e.g. ../sdk, are handled by explicit requires instead).
module_replaces() {
  "$GO" mod edit -json "$1" | "$PY" -c '
import json, sys
for r in json.load(sys.stdin).get("Replace") or []:
    new = r["New"]
    if not new.get("Version"):
        continue  # local directory replace
    old = r["Old"]["Path"] + ("@" + r["Old"]["Version"] if r["Old"].get("Version") else "")
    print("-replace=%s=%s@%s" % (old, new["Path"], new["Version"]))
'
}
module_go_version() { "$GO" mod edit -json "$1" | "$PY" -c 'import json,sys; print(json.load(sys.stdin).get("Go") or "")'; }

# ---------------------------------------------------------------- pulumi CLI + language host
PKG_MOD=github.com/pulumi/pulumi/pkg/v3
SDK_MOD=github.com/pulumi/pulumi/sdk/v3
step "resolving $PKG_MOD@v$PULUMI_VERSION and the kubernetes provider module"
if ! PKG_INFO="$(module_gomod "$PKG_MOD@v$PULUMI_VERSION")"; then
  echo "engine: pick a pulumi version whose Go module is served (e.g. pulumi==$DEFAULT_PULUMI_VERSION) in requirements.txt" >&2
  exit 1
fi
PKG_GOMOD="${PKG_INFO%%$'\t'*}"
module_gomod "$SDK_MOD@v$PULUMI_VERSION" >/dev/null
# Fail before the long builds if the provider module is not servable either.
K8S_PROVIDER_MOD=github.com/pulumi/pulumi-kubernetes/provider/v4
K8S_SDK_MOD=github.com/pulumi/pulumi-kubernetes/sdk/v4
if ! K8S_INFO="$(module_gomod "$K8S_PROVIDER_MOD@$K8S_MODULE_VERSION")"; then
  echo "engine: no provider module known for pulumi-kubernetes $K8S_VERSION; pin pulumi-kubernetes==$DEFAULT_K8S_VERSION" \
    "or set ENGINE_K8S_PROVIDER_MODULE_VERSION to the pseudo-version of its release commit" >&2
  exit 1
fi

CLI_DIR="$WORK/pulumi"
mkdir -p "$CLI_DIR/langhost"
(
  cd "$CLI_DIR"
  run "$GO" mod init enginebuild/pulumi
  mapfile -t replaces < <(module_replaces "$PKG_GOMOD")
  run "$GO" mod edit -go="$(module_go_version "$PKG_GOMOD")" \
    -require="$PKG_MOD@v$PULUMI_VERSION" -require="$SDK_MOD@v$PULUMI_VERSION" "${replaces[@]}"
)
cat >"$CLI_DIR/tools.go" <<'EOF'
//go:build tools

// Keeps the CLI's main package in this wrapper module's dependency graph.
package tools

import _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
EOF
cat >"$CLI_DIR/langhost/main.go" <<'EOF'
// pulumi-language-python: a minimal Python language host for the Pulumi engine,
// written by scripts/bootstrap-engine.sh (the upstream host's Go module is not
// served by the module proxy). It implements what preview/up/destroy need: it runs
// the program through the `pulumi-language-python-exec` shim installed beside it,
// with the python chosen by the SDK's toolchain package: pip (default; honours the
// `virtualenv` runtime option, else PULUMI_PYTHON_CMD, else python3), uv or poetry.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Version is set with -ldflags "-X main.Version=vX.Y.Z".
var Version = "v0.0.0-dev"

// The exec shim exits with this code once it has reported the error to the user.
const userActionableExitCode = 32

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	engineAddress string
	tracing       string
	execShim      string
}

func main() {
	// The engine may pass --logtostderr, -v=N and --tracing ADDR before the engine
	// address; the SDK's logging package (glog) already defines the first two.
	tracing := flag.String("tracing", "", "Zipkin-compatible tracing endpoint")
	if flag.Lookup("logtostderr") == nil {
		flag.Bool("logtostderr", false, "accepted for compatibility")
	}
	if flag.Lookup("v") == nil {
		flag.Int("v", 0, "accepted for compatibility")
	}
	flag.Bool("logflow", false, "accepted for compatibility")
	flag.String("root", "", "accepted for compatibility")
	flag.Parse()

	h := &host{tracing: *tracing}
	if args := flag.Args(); len(args) > 0 {
		h.engineAddress = args[0]
	}
	shim, err := findExecShim()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	h.execShim = shim

	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, h)
			return nil
		},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "could not start language host RPC server: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("%d\n", handle.Port) // the engine reads our port from the first stdout line
	if err := <-handle.Done; err != nil {
		fmt.Fprintf(os.Stderr, "language host RPC stopped serving: %v\n", err)
		os.Exit(1)
	}
}

// findExecShim looks for pulumi-language-python-exec beside this binary, then on PATH.
func findExecShim() (string, error) {
	const name = "pulumi-language-python-exec"
	if self, err := os.Executable(); err == nil {
		if resolved, err := filepath.EvalSymlinks(self); err == nil {
			self = resolved
		}
		candidate := filepath.Join(filepath.Dir(self), name)
		if _, err := os.Stat(candidate); err == nil {
			return candidate, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("could not find %s beside the language host or on PATH: %w", name, err)
	}
	return p, nil
}

// resolveToolchain maps the project's runtime options onto the SDK's python toolchain.
func resolveToolchain(info *pulumirpc.ProgramInfo) (toolchain.Toolchain, error) {
	opts := toolchain.PythonOptions{
		Root:       info.GetRootDirectory(),
		ProgramDir: info.GetProgramDirectory(),
		Toolchain:  toolchain.Pip,
	}
	if opts.ProgramDir == "" {
		opts.ProgramDir = opts.Root
	}
	var options map[string]any
	if s := info.GetOptions(); s != nil {
		options = s.AsMap()
	}
	if v, ok := options["virtualenv"].(string); ok && v != "" {
		opts.Virtualenv = v
		if !filepath.IsAbs(v) {
			opts.Virtualenv = filepath.Join(opts.Root, v)
		}
	}
	switch tc, _ := options["toolchain"].(string); strings.ToLower(tc) {
	case "", "pip":
		opts.Toolchain = toolchain.Pip
	case "uv":
		opts.Toolchain = toolchain.Uv
	case "poetry":
		opts.Toolchain = toolchain.Poetry
	default:
		return nil, fmt.Errorf("unsupported python toolchain %q", tc)
	}
	return toolchain.ResolveToolchain(opts)
}

func programInfo(info *pulumirpc.ProgramInfo, dir string) *pulumirpc.ProgramInfo {
	if info != nil {
		return info
	}
	if dir == "" {
		dir, _ = os.Getwd()
	}
	return &pulumirpc.ProgramInfo{RootDirectory: dir, ProgramDirectory: dir, EntryPoint: "."}
}

func (h *host) Handshake(_ context.Context,
	req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	if req.GetEngineAddress() != "" {
		h.engineAddress = req.GetEngineAddress()
	}
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: Version}, nil
}

// Provider plugins are loaded on demand from resource registrations (and found on
// PATH), so no up-front requirements are reported.
func (h *host) GetRequiredPlugins(context.Context,
	*pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	return &pulumirpc.GetRequiredPluginsResponse{}, nil
}

func (h *host) GetRequiredPackages(context.Context,
	*pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	return &pulumirpc.GetRequiredPackagesResponse{}, nil
}

func (h *host) RuntimeOptionsPrompts(context.Context,
	*pulumirpc.RuntimeOptionsRequest,
) (*pulumirpc.RuntimeOptionsResponse, error) {
	return &pulumirpc.RuntimeOptionsResponse{}, nil
}

func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	info := programInfo(req.GetInfo(), req.GetPwd())
	tc, err := resolveToolchain(info)
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	program := info.GetEntryPoint()
	if program == "" {
		program = "."
	}
	args := []string{"-u", h.execShim}
	add := func(k, v string) {
		if v != "" {
			args = append(args, "--"+k, v)
		}
	}
	add("monitor", req.GetMonitorAddress())
	add("engine", h.engineAddress)
	add("project", req.GetProject())
	add("stack", req.GetStack())
	add("pwd", req.GetPwd())
	add("dry_run", fmt.Sprintf("%v", req.GetDryRun()))
	add("parallel", fmt.Sprint(req.GetParallel()))
	add("tracing", h.tracing)
	add("organization", req.GetOrganization())
	add("root_directory", info.GetRootDirectory())
	args = append(args, program)
	args = append(args, req.GetArgs()...)

	cmd, err := tc.Command(ctx, args...)
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	if cfg := req.GetConfig(); len(cfg) > 0 {
		b, err := json.Marshal(cfg)
		if err != nil {
			return nil, fmt.Errorf("failed to serialize configuration: %w", err)
		}
		env = append(env, "PULUMI_CONFIG="+string(b))
	}
	if keys := req.GetConfigSecretKeys(); len(keys) > 0 {
		b, err := json.Marshal(keys)
		if err != nil {
			return nil, fmt.Errorf("failed to serialize secret config keys: %w", err)
		}
		env = append(env, "PULUMI_CONFIG_SECRET_KEYS="+string(b))
	}
	cmd.Env = env
	cmd.Dir = req.GetPwd()
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr

	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			if exitErr.ExitCode() == userActionableExitCode {
				return &pulumirpc.RunResponse{Bail: true}, nil
			}
			return &pulumirpc.RunResponse{
				Error: fmt.Sprintf("Program exited with non-zero exit code: %d", exitErr.ExitCode()),
			}, nil
		}
		return &pulumirpc.RunResponse{
			Error: fmt.Sprintf("Problem executing program (could not run language executor): %v", err),
		}, nil
	}
	return &pulumirpc.RunResponse{}, nil
}

// streamWriter forwards toolchain output to the engine as InstallDependencies responses.
type streamWriter struct {
	server pulumirpc.LanguageRuntime_InstallDependenciesServer
	stderr bool
}

func (w streamWriter) Write(p []byte) (int, error) {
	data := append([]byte(nil), p...)
	resp := &pulumirpc.InstallDependenciesResponse{Stdout: data}
	if w.stderr {
		resp = &pulumirpc.InstallDependenciesResponse{Stderr: data}
	}
	if err := w.server.Send(resp); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (h *host) InstallDependencies(req *pulumirpc.InstallDependenciesRequest,
	server pulumirpc.LanguageRuntime_InstallDependenciesServer,
) error {
	info := programInfo(req.GetInfo(), req.GetDirectory())
	tc, err := resolveToolchain(info)
	if err != nil {
		return err
	}
	dir := info.GetProgramDirectory()
	if dir == "" {
		dir = req.GetDirectory()
	}
	var out, errOut io.Writer = streamWriter{server: server}, streamWriter{server: server, stderr: true}
	return tc.InstallDependencies(server.Context(), dir, req.GetUseLanguageVersionTools(),
		true /*showOutput*/, out, errOut)
}

func (h *host) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	tc, err := resolveToolchain(programInfo(req.GetInfo(), ""))
	if err != nil {
		return nil, err
	}
	about, err := tc.About(ctx)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.AboutResponse{
		Executable: about.PythonExecutable,
		Version:    about.PythonVersion.String(),
	}, nil
}

func (h *host) GetProgramDependencies(ctx context.Context,
	req *pulumirpc.GetProgramDependenciesRequest,
) (*pulumirpc.GetProgramDependenciesResponse, error) {
	tc, err := resolveToolchain(programInfo(req.GetInfo(), req.GetPwd()))
	if err != nil {
		return nil, err
	}
	pkgs, err := tc.ListPackages(ctx, req.GetTransitiveDependencies())
	if err != nil {
		return nil, err
	}
	deps := make([]*pulumirpc.DependencyInfo, 0, len(pkgs))
	for _, p := range pkgs {
		deps = append(deps, &pulumirpc.DependencyInfo{Name: p.Name, Version: p.Version})
	}
	return &pulumirpc.GetProgramDependenciesResponse{Dependencies: deps}, nil
}
EOF

step "resolving dependencies of the CLI wrapper module"
(cd "$CLI_DIR" && run "$GO" mod tidy)
# tidy must not have moved the pins (MVS could raise them if something required newer).
for m in "$PKG_MOD" "$SDK_MOD"; do
  got="$(cd "$CLI_DIR" && "$GO" list -m -f '{{.Version}}' "$m")"
  [[ "$got" == "v$PULUMI_VERSION" ]] || { echo "engine: $m resolved to $got, wanted v$PULUMI_VERSION" >&2; exit 1; }
done

step "building pulumi v$PULUMI_VERSION (the longest step, several minutes on a cold cache)"
(cd "$CLI_DIR" && run "$GO" build -trimpath \
  -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$PULUMI_VERSION" \
  -o "$PARTIAL/bin/pulumi" "$PKG_MOD/cmd/pulumi")

step "building pulumi-language-python v$PULUMI_VERSION"
(cd "$CLI_DIR" && run "$GO" build -trimpath -ldflags "-s -w -X main.Version=v$PULUMI_VERSION" \
  -o "$PARTIAL/bin/pulumi-language-python" ./langhost)

step "writing python shims"
cat >"$PARTIAL/bin/pulumi-language-python-exec" <<'EOF'
#!/usr/bin/env python3
# Runs a Pulumi Python program for pulumi-language-python (written by
# scripts/bootstrap-engine.sh, mirroring the shim in the Pulumi release archive):
# configures the SDK runtime from the engine's arguments and runs the program.
import argparse
import asyncio
import inspect
import logging
import os
import runpy
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor

try:
    import pulumi
    import pulumi.runtime
except ImportError:
    print(traceback.format_exc(), file=sys.stderr)
    print("The Pulumi SDK is not installed for %s; run pip install -r requirements.txt"
          % sys.executable, file=sys.stderr)
    sys.exit(1)

USER_ACTIONABLE_EXIT_CODE = 32  # tells the host the error was already shown

ap = argparse.ArgumentParser(description="Execute a Pulumi Python program")
for flag in ("project", "root_directory", "stack", "parallel", "dry_run", "pwd",
             "monitor", "engine", "tracing", "organization"):
    ap.add_argument("--" + flag)
ap.add_argument("PROGRAM")
ap.add_argument("ARGS", nargs="*")
args = ap.parse_args()

config_env = pulumi.runtime.get_config_env()
if hasattr(pulumi.runtime, "get_config_secret_keys_env") and hasattr(pulumi.runtime, "set_all_config"):
    pulumi.runtime.set_all_config(config_env, pulumi.runtime.get_config_secret_keys_env())
else:
    for k, v in config_env.items():
        pulumi.runtime.set_config(k, v)

settings_kwargs = {
    "monitor": args.monitor,
    "engine": args.engine,
    "project": args.project,
    "stack": args.stack,
    "parallel": int(args.parallel or 0),
    "dry_run": args.dry_run == "true",
    "organization": args.organization,
    "root_directory": args.root_directory,
}
accepted = inspect.signature(pulumi.runtime.Settings.__init__).parameters
settings = pulumi.runtime.Settings(**{k: v for k, v in settings_kwargs.items() if k in accepted})
pulumi.runtime.configure(settings)

sys.argv = [args.PROGRAM] + args.ARGS
if args.pwd:
    os.chdir(args.pwd)

loop = asyncio.new_event_loop()
asyncio.set_event_loop(loop)
executor = ThreadPoolExecutor(max_workers=max(settings.parallel or 1, 1) * 4)
loop.set_default_executor(executor)
# Unobserved futures are expected when a program fails part-way; keep asyncio quiet.
logging.getLogger("asyncio").setLevel(logging.CRITICAL)

exit_code = 1
try:
    loop.run_until_complete(
        pulumi.runtime.run_in_stack(lambda: runpy.run_path(args.PROGRAM, run_name="__main__")))
    exit_code = 0
except pulumi.RunError as e:
    pulumi.log.error(str(e))
except Exception:  # noqa: BLE001 - report anything the program raised
    pulumi.log.error("Program failed with an unhandled exception:\n" + traceback.format_exc())
    exit_code = USER_ACTIONABLE_EXIT_CODE
finally:
    executor.shutdown(wait=True)
    loop.close()
    sys.stdout.flush()
    sys.stderr.flush()
sys.exit(exit_code)
EOF
cat >"$PARTIAL/bin/pulumi-resource-pulumi-python" <<'EOF'
#!/bin/sh
# Dynamic-provider plugin for Pulumi Python programs (written by
# scripts/bootstrap-engine.sh, mirroring the launcher in the Pulumi release
# archive): runs `python -m pulumi.dynamic` with the project's interpreter.
# The engine sets PULUMI_RUNTIME_VIRTUALENV / PULUMI_RUNTIME_TOOLCHAIN from the
# project's runtime options.
if [ -z "${PULUMI_RUNTIME_VIRTUALENV:-}" ] && [ "${PULUMI_RUNTIME_TOOLCHAIN:-}" = "uv" ]; then
    PULUMI_RUNTIME_VIRTUALENV=.venv
elif [ -z "${PULUMI_RUNTIME_VIRTUALENV:-}" ] && [ "${PULUMI_RUNTIME_TOOLCHAIN:-}" = "poetry" ]; then
    PULUMI_RUNTIME_VIRTUALENV=$(poetry env info --path)
fi
if [ -n "${PULUMI_RUNTIME_VIRTUALENV:-}" ]; then
    venv=${PULUMI_RUNTIME_VIRTUALENV%/}
    case $venv in /*) ;; *) venv=$PWD/$venv ;; esac
    if [ ! -x "$venv/bin/python" ]; then
        echo "virtualenv \"$venv\" (from Pulumi.yaml) has no bin/python" >&2
        exit 1
    fi
    PATH="$venv/bin:$PATH" VIRTUAL_ENV="$venv"
    export PATH VIRTUAL_ENV
    unset PYTHONHOME
    exec "$venv/bin/python" -u -m pulumi.dynamic "$@"
fi
exec "${PULUMI_PYTHON_CMD:-python3}" -u -m pulumi.dynamic "$@"
EOF
chmod +x "$PARTIAL/bin/pulumi-language-python-exec" "$PARTIAL/bin/pulumi-resource-pulumi-python"

# ---------------------------------------------------------------- kubernetes provider
step "preparing $K8S_PROVIDER_MOD@$K8S_MODULE_VERSION (pulumi-kubernetes $K8S_VERSION)"
K8S_GOMOD="${K8S_INFO%%$'\t'*}"
K8S_SRC="${K8S_INFO#*$'\t'}"
K8S_DIR="$WORK/kubernetes"
K8S_CMD="$K8S_DIR/cmd/pulumi-resource-kubernetes"
mkdir -p "$K8S_CMD"
(
  cd "$K8S_DIR"
  run "$GO" mod init enginebuild/kubernetes
  mapfile -t replaces < <(module_replaces "$K8S_GOMOD")
  requires=(-require="$K8S_PROVIDER_MOD@$K8S_MODULE_VERSION")
  # The provider replaces its sdk/v4 with ../sdk; use the same release's sdk module if served.
  if module_gomod "$K8S_SDK_MOD@v$K8S_VERSION" >/dev/null 2>>"$LOG"; then
    requires+=(-require="$K8S_SDK_MOD@v$K8S_VERSION")
  fi
  run "$GO" mod edit -go="$(module_go_version "$K8S_GOMOD")" "${requires[@]}" "${replaces[@]}"
)
# The command package go:embeds schema-embed.json, which its module archive lacks:
# copy the package (with its schema.json) here and run its own generator.
for f in "$K8S_SRC/cmd/pulumi-resource-kubernetes/"*; do
  case "$f" in *_test.go) continue ;; esac
  cp "$f" "$K8S_CMD/"
done
chmod -R u+w "$K8S_DIR"
cat >"$K8S_DIR/tools.go" <<'EOF'
//go:build tools

// Keeps what cmd/pulumi-resource-kubernetes/generate.go imports in go.sum.
package tools

import _ "github.com/pulumi/pulumi/pkg/v3/codegen/schema"
EOF

step "resolving dependencies of the kubernetes wrapper module"
(cd "$K8S_DIR" && run "$GO" mod tidy)
got="$(cd "$K8S_DIR" && "$GO" list -m -f '{{.Version}}' "$K8S_PROVIDER_MOD")"
[[ "$got" == "$K8S_MODULE_VERSION" ]] || { echo "engine: provider resolved to $got, wanted $K8S_MODULE_VERSION" >&2; exit 1; }

step "generating the provider's embedded schema (version $K8S_VERSION)"
(cd "$K8S_CMD" && VERSION="$K8S_VERSION" run "$GO" generate .)
[[ -s "$K8S_CMD/schema-embed.json" && -s "$K8S_CMD/terraform-mapping-embed.json" ]] || {
  echo "engine: go generate did not produce the embedded schema files" >&2
  exit 1
}

step "building pulumi-resource-kubernetes v$K8S_VERSION (several minutes on a cold cache)"
(cd "$K8S_DIR" && run "$GO" build -trimpath \
  -ldflags "-s -w -X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$K8S_VERSION" \
  -o "$PARTIAL/$K8S_PLUGIN_REL" ./cmd/pulumi-resource-kubernetes)

# ---------------------------------------------------------------- finish
step "checking the binaries"
got="$("$PARTIAL/bin/pulumi" version 2>>"$LOG")"
[[ "$got" == "v$PULUMI_VERSION" ]] || { echo "engine: built pulumi reports '$got'" >&2; exit 1; }
for b in "${BINARIES[@]}"; do [[ -x "$PARTIAL/$b" ]] || { echo "engine: $b missing" >&2; exit 1; }; done

rm -rf "$STAMP_DIR/bin" "$STAMP_DIR/plugins"
mv "$PARTIAL/bin" "$PARTIAL/plugins" "$STAMP_DIR/"
rmdir "$PARTIAL"
rm -f "$K8S_CMD"/*.json # 13 MB of schema copies; the wrapper go.mod/go.sum stay for reference
cat >"$STAMP_DIR/.complete" <<EOF
pulumi=$PULUMI_VERSION
pulumi-language-python=$PULUMI_VERSION
pulumi-kubernetes=$K8S_VERSION
pulumi-kubernetes-provider-module=$K8S_PROVIDER_MOD@$K8S_MODULE_VERSION
pulumi-kubernetes-plugin=$K8S_PLUGIN_REL
go=$("$GO" env GOVERSION)
recipe=$RECIPE_REV
EOF
# Keep the two most recently used other builds (~300 MB each); drop older ones.
if [[ -n "${HAVE_LOCK:-}" ]]; then
  { ls -1t "$ENGINE_ROOT"/*/.complete 2>/dev/null || true; } | { grep -v -F "$STAMP_DIR/.complete" || true; } |
    tail -n +3 | while read -r marker; do rm -rf "$(dirname "$marker")"; done
fi
finish "built"
