// pulumi-language-python: a minimal Python language host for the Pulumi engine
// (the upstream host's Go module is not served by the module proxy, so
// scripts/bootstrap-engine.sh builds this one against the SDK packages of the same
// release). It implements what preview/up/destroy need: it runs the program through
// the `pulumi-language-python-exec` shim installed beside it, with the python chosen
// by the SDK's toolchain package: pip (default; honours the `virtualenv` runtime
// option, else PULUMI_PYTHON_CMD, else python3), uv or poetry. RunPlugin runs a
// Python plugin directory's __main__.py, which is how the CLI starts a Python policy
// pack (`pulumi preview --policy-pack DIR`) as an analyzer plugin.
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
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

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

// execShimName is the program runner installed beside this binary.
const execShimName = "pulumi-language-python-exec"

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	engineAddress string
	tracing       string
	execShim      string
}

// hostOptions is what the engine passes on the command line: --logtostderr, -v=N
// and --tracing ADDR (see buildPluginArguments in pkg/resource/plugin), then the
// engine address. The logging flags are accepted and ignored.
type hostOptions struct {
	engineAddress string
	tracing       string
}

func parseOptions(args []string) (hostOptions, error) {
	fs := flag.NewFlagSet("pulumi-language-python", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	tracing := fs.String("tracing", "", "Zipkin-compatible tracing endpoint")
	fs.Bool("logtostderr", false, "accepted for compatibility")
	fs.Int("v", 0, "accepted for compatibility")
	fs.Bool("logflow", false, "accepted for compatibility")
	fs.String("root", "", "accepted for compatibility")
	if err := fs.Parse(args); err != nil {
		return hostOptions{}, err
	}
	opts := hostOptions{tracing: *tracing}
	if rest := fs.Args(); len(rest) > 0 {
		opts.engineAddress = rest[0]
	}
	return opts, nil
}

func main() {
	opts, err := parseOptions(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-language-python: %v\n", err)
		os.Exit(2)
	}
	shim, err := findExecShim()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	h := &host{engineAddress: opts.engineAddress, tracing: opts.tracing, execShim: shim}
	exitOnInterrupt()

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

// exitOnInterrupt makes SIGINT and SIGTERM end the host at once. The engine closes a
// plugin by signalling its process group with SIGINT and waits 5 s before SIGKILL; a
// host started with SIGINT ignored (inherited from a background job, nohup, some CI
// runners) would otherwise sit out those 5 s at every close (twice per `pulumi up`).
// signal.Notify installs a handler even for a signal ignored at start.
func exitOnInterrupt() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-signals
		os.Exit(0)
	}()
}

// findExecShim looks for pulumi-language-python-exec beside this binary, then on PATH.
func findExecShim() (string, error) {
	if self, err := os.Executable(); err == nil {
		if resolved, err := filepath.EvalSymlinks(self); err == nil {
			self = resolved
		}
		candidate := filepath.Join(filepath.Dir(self), execShimName)
		if _, err := os.Stat(candidate); err == nil {
			return candidate, nil
		}
	}
	p, err := exec.LookPath(execShimName)
	if err != nil {
		return "", fmt.Errorf("could not find %s beside the language host or on PATH: %w", execShimName, err)
	}
	return p, nil
}

// pythonOptions maps the project's runtime options onto the SDK's python toolchain.
func pythonOptions(info *pulumirpc.ProgramInfo) (toolchain.PythonOptions, error) {
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
		return toolchain.PythonOptions{}, fmt.Errorf("unsupported python toolchain %q", tc)
	}
	return opts, nil
}

func resolveToolchain(info *pulumirpc.ProgramInfo) (toolchain.Toolchain, error) {
	opts, err := pythonOptions(info)
	if err != nil {
		return nil, err
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

// execArgs is the python command line of a program run: the exec shim, the
// engine's settings as its flags (empty ones left out), the entry point and the
// program's own arguments.
func (h *host) execArgs(req *pulumirpc.RunRequest, info *pulumirpc.ProgramInfo) []string {
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
	return append(args, req.GetArgs()...)
}

// configEnv is the program's configuration as the SDK reads it from the environment.
func configEnv(req *pulumirpc.RunRequest) ([]string, error) {
	var env []string
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
	return env, nil
}

// runResponse maps how the program's process ended onto the engine's answer.
func runResponse(err error) *pulumirpc.RunResponse {
	if err == nil {
		return &pulumirpc.RunResponse{}
	}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		if exitErr.ExitCode() == userActionableExitCode {
			return &pulumirpc.RunResponse{Bail: true}
		}
		return &pulumirpc.RunResponse{
			Error: fmt.Sprintf("Program exited with non-zero exit code: %d", exitErr.ExitCode()),
		}
	}
	return &pulumirpc.RunResponse{
		Error: fmt.Sprintf("Problem executing program (could not run language executor): %v", err),
	}
}

func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	info := programInfo(req.GetInfo(), req.GetPwd())
	tc, err := resolveToolchain(info)
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	cmd, err := tc.Command(ctx, h.execArgs(req, info)...)
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	extra, err := configEnv(req)
	if err != nil {
		return nil, err
	}
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	cmd.Env = append(env, extra...)
	cmd.Dir = req.GetPwd()
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	return runResponse(cmd.Run()), nil
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
	executable, version, err := aboutPython(ctx, tc)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.AboutResponse{Executable: executable, Version: version}, nil
}

// aboutPythonScript prints what About returns: the interpreter's path and version.
const aboutPythonScript = "import sys; print(sys.executable); " +
	"print('%d.%d.%d' % sys.version_info[:3])"

// aboutPython asks the toolchain's python for its path and version in one process. The
// engine calls About at the start of every command; the toolchain's own About also runs
// `python -m pip --version` (about 1 s, and the response has no field for it).
func aboutPython(ctx context.Context, tc toolchain.Toolchain) (string, string, error) {
	cmd, err := tc.Command(ctx, "-c", aboutPythonScript)
	if err != nil {
		return "", "", err
	}
	out, err := cmd.Output()
	if err != nil {
		return "", "", fmt.Errorf("asking %s for its version: %w", cmd.Path, err)
	}
	lines := strings.Split(strings.TrimRight(string(out), "\r\n"), "\n")
	if len(lines) != 2 || lines[0] == "" || lines[1] == "" {
		return "", "", fmt.Errorf("unexpected answer from %s: %q", cmd.Path, out)
	}
	return lines[0], lines[1], nil
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

// pluginArgs is the python command line of a plugin run, as upstream's host builds
// it for a plugin directory with a __main__.py (policy packs are such directories):
// `python DIR ARGS...`, where ARGS is the engine address for an analyzer. -u keeps
// stdout unbuffered: the analyzer's first line, its port, must reach the engine at once.
// Plugins packaged without a __main__.py (upstream runs those through
// `python -m pulumi.run.plugin`) are not supported.
func pluginArgs(info *pulumirpc.ProgramInfo, args []string) ([]string, error) {
	dir := info.GetProgramDirectory()
	if dir == "" {
		dir = info.GetRootDirectory()
	}
	if dir == "" {
		return nil, errors.New("RunPlugin: the request names no plugin directory")
	}
	if _, err := os.Stat(filepath.Join(dir, "__main__.py")); err != nil {
		return nil, fmt.Errorf("RunPlugin: the plugin directory %s has no __main__.py: %w", dir, err)
	}
	return append([]string{"-u", dir}, args...), nil
}

// pluginInfo is the plugin's ProgramInfo; engines before ProgramInfo sent only the
// deprecated program path.
func pluginInfo(req *pulumirpc.RunPluginRequest) *pulumirpc.ProgramInfo {
	if info := req.GetInfo(); info != nil {
		return info
	}
	dir := req.GetProgram()
	return &pulumirpc.ProgramInfo{RootDirectory: dir, ProgramDirectory: dir, EntryPoint: "."}
}

// pluginStream sends a plugin's output to the engine as RunPlugin responses. The
// process's stdout and stderr are copied by two goroutines and a gRPC stream must
// not be sent on concurrently, so both writers share one lock.
type pluginStream struct {
	mu     *sync.Mutex
	server pulumirpc.LanguageRuntime_RunPluginServer
	stderr bool
}

func (w pluginStream) Write(p []byte) (int, error) {
	data := append([]byte(nil), p...)
	resp := &pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Stdout{Stdout: data}}
	if w.stderr {
		resp = &pulumirpc.RunPluginResponse{Output: &pulumirpc.RunPluginResponse_Stderr{Stderr: data}}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.server.Send(resp); err != nil {
		return 0, err
	}
	return len(p), nil
}

// pluginExit maps how the plugin's process ended onto the end of the stream: a
// clean exit ends it (the engine reads exit code 0), a non-zero exit sends the code,
// a process that could not run is an error.
func pluginExit(err error) (*pulumirpc.RunPluginResponse, error) {
	if err == nil {
		return nil, nil
	}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return &pulumirpc.RunPluginResponse{
			Output: &pulumirpc.RunPluginResponse_Exitcode{Exitcode: int32(exitErr.ExitCode())},
		}, nil
	}
	return nil, fmt.Errorf("problem executing plugin program (could not run language executor): %w", err)
}

// RunPlugin runs a Python plugin (for a policy pack: an analyzer) with the
// project's toolchain, in the engine's working directory and environment, streaming
// its stdout and stderr to the engine until it exits or the engine cancels the call.
// Unlike upstream, whose host defaults the `virtualenv` option to `venv` for plugins,
// the interpreter is chosen as for programs (PULUMI_PYTHON_CMD, python3), so a pack
// runs with the packages this project installs.
func (h *host) RunPlugin(req *pulumirpc.RunPluginRequest, server pulumirpc.LanguageRuntime_RunPluginServer) error {
	info := pluginInfo(req)
	args, err := pluginArgs(info, req.GetArgs())
	if err != nil {
		return err
	}
	tc, err := resolveToolchain(info)
	if err != nil {
		return err
	}
	cmd, err := tc.Command(server.Context(), args...)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	cmd.Dir = req.GetPwd()
	// The toolchain's environment (a virtualenv's activation) first, the engine's last.
	cmd.Env = append(cmd.Env, req.GetEnv()...)
	cmd.Stdout = pluginStream{mu: &mu, server: server}
	cmd.Stderr = pluginStream{mu: &mu, server: server, stderr: true}
	last, err := pluginExit(cmd.Run())
	if err != nil || last == nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	return server.Send(last)
}
