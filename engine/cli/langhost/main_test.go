package main

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestParseOptionsTakesTheEngineFlagsAndAddress(t *testing.T) {
	// What buildPluginArguments passes with --logflow, -v and tracing on.
	opts, err := parseOptions([]string{
		"--logtostderr", "-v=9", "--tracing", "http://127.0.0.1:9411", "127.0.0.1:40000",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := hostOptions{engineAddress: "127.0.0.1:40000", tracing: "http://127.0.0.1:9411"}
	if opts != want {
		t.Fatalf("parseOptions = %+v, want %+v", opts, want)
	}

	opts, err = parseOptions([]string{"127.0.0.1:1"})
	if err != nil || opts.engineAddress != "127.0.0.1:1" || opts.tracing != "" {
		t.Fatalf("parseOptions(address only) = %+v, %v", opts, err)
	}
	if _, err := parseOptions([]string{"--no-such-flag", "127.0.0.1:1"}); err == nil {
		t.Fatal("an unknown flag was accepted")
	}
}

func TestExecArgsPassTheRunRequestToTheShim(t *testing.T) {
	h := &host{engineAddress: "127.0.0.1:1", tracing: "http://t", execShim: "/bin/shim"}
	req := &pulumirpc.RunRequest{
		MonitorAddress: "127.0.0.1:2",
		Project:        "proj",
		Stack:          "dev",
		Pwd:            "/work/proj",
		DryRun:         true,
		Parallel:       8,
		Organization:   "org",
		Args:           []string{"a", "b"},
	}
	info := &pulumirpc.ProgramInfo{RootDirectory: "/work/proj", EntryPoint: "src"}
	got := h.execArgs(req, info)
	want := []string{
		"-u", "/bin/shim",
		"--monitor", "127.0.0.1:2",
		"--engine", "127.0.0.1:1",
		"--project", "proj",
		"--stack", "dev",
		"--pwd", "/work/proj",
		"--dry_run", "true",
		"--parallel", "8",
		"--tracing", "http://t",
		"--organization", "org",
		"--root_directory", "/work/proj",
		"src", "a", "b",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("execArgs =\n  %q\nwant\n  %q", got, want)
	}

	// Empty settings are left out; no entry point means the program directory.
	got = (&host{execShim: "/bin/shim"}).execArgs(&pulumirpc.RunRequest{}, &pulumirpc.ProgramInfo{})
	want = []string{"-u", "/bin/shim", "--dry_run", "false", "--parallel", "0", "."}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("execArgs(empty) = %q, want %q", got, want)
	}
}

func TestConfigEnvIsJSON(t *testing.T) {
	env, err := configEnv(&pulumirpc.RunRequest{
		Config:           map[string]string{"proj:a": "1"},
		ConfigSecretKeys: []string{"proj:a"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`PULUMI_CONFIG={"proj:a":"1"}`, `PULUMI_CONFIG_SECRET_KEYS=["proj:a"]`}
	if !reflect.DeepEqual(env, want) {
		t.Fatalf("configEnv = %q, want %q", env, want)
	}
	if env, _ := configEnv(&pulumirpc.RunRequest{}); len(env) != 0 {
		t.Fatalf("configEnv(no config) = %q, want nothing", env)
	}
}

func TestPythonOptions(t *testing.T) {
	opts := func(m map[string]any) *structpb.Struct {
		s, err := structpb.NewStruct(m)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	got, err := pythonOptions(&pulumirpc.ProgramInfo{
		RootDirectory: "/p", Options: opts(map[string]any{"virtualenv": "venv"}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.Virtualenv != filepath.Join("/p", "venv") || got.ProgramDir != "/p" ||
		got.Toolchain != toolchain.Pip {
		t.Fatalf("pythonOptions(virtualenv) = %+v", got)
	}
	got, err = pythonOptions(&pulumirpc.ProgramInfo{
		RootDirectory: "/p", ProgramDirectory: "/p/src",
		Options: opts(map[string]any{"toolchain": "UV", "virtualenv": "/abs/env"}),
	})
	if err != nil || got.Toolchain != toolchain.Uv || got.Virtualenv != "/abs/env" || got.ProgramDir != "/p/src" {
		t.Fatalf("pythonOptions(uv) = %+v, %v", got, err)
	}
	_, err = pythonOptions(&pulumirpc.ProgramInfo{Options: opts(map[string]any{"toolchain": "conda"})})
	if err == nil || !strings.Contains(err.Error(), "conda") {
		t.Fatalf("pythonOptions(conda) err = %v, want unsupported toolchain", err)
	}
}

func TestRunResponseFromExitCodes(t *testing.T) {
	exit := func(code string) error { return exec.Command("sh", "-c", "exit "+code).Run() }
	if r := runResponse(nil); r.GetError() != "" || r.GetBail() {
		t.Fatalf("success -> %v", r)
	}
	if r := runResponse(exit("32")); !r.GetBail() || r.GetError() != "" {
		t.Fatalf("exit 32 (already reported) -> %v, want bail", r)
	}
	if r := runResponse(exit("3")); r.GetBail() || !strings.Contains(r.GetError(), "exit code: 3") {
		t.Fatalf("exit 3 -> %v", r)
	}
	notFound := exec.Command("/nonexistent/python").Run()
	if r := runResponse(notFound); !strings.Contains(r.GetError(), "could not run language executor") {
		t.Fatalf("missing python -> %v", r)
	}
}

// serve registers the host on a real gRPC server, as main does, and returns a client.
func serve(t *testing.T, h *host) pulumirpc.LanguageRuntimeClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	pulumirpc.RegisterLanguageRuntimeServer(srv, h)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return pulumirpc.NewLanguageRuntimeClient(conn)
}

func TestGetPluginInfoReportsTheBuildVersion(t *testing.T) {
	old := Version
	Version = "v3.1.2"
	t.Cleanup(func() { Version = old })
	info, err := serve(t, &host{}).GetPluginInfo(context.Background(), &emptypb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	if info.GetVersion() != "v3.1.2" {
		t.Fatalf("GetPluginInfo version = %q", info.GetVersion())
	}
}

func TestUnknownRPCsAreUnimplemented(t *testing.T) {
	c := serve(t, &host{})
	ctx := context.Background()
	calls := map[string]func() error{
		"GeneratePackage": func() error {
			_, err := c.GeneratePackage(ctx, &pulumirpc.GeneratePackageRequest{})
			return err
		},
		"GenerateProject": func() error {
			_, err := c.GenerateProject(ctx, &pulumirpc.GenerateProjectRequest{})
			return err
		},
		"Pack": func() error {
			_, err := c.Pack(ctx, &pulumirpc.PackRequest{})
			return err
		},
		"GenerateProgram": func() error {
			_, err := c.GenerateProgram(ctx, &pulumirpc.GenerateProgramRequest{})
			return err
		},
	}
	for name, call := range calls {
		if code := status.Code(call()); code != codes.Unimplemented {
			t.Errorf("%s: code %v, want Unimplemented", name, code)
		}
	}
	// What the host does implement answers.
	if _, err := c.GetRequiredPackages(ctx, &pulumirpc.GetRequiredPackagesRequest{}); err != nil {
		t.Errorf("GetRequiredPackages: %v", err)
	}
}

func TestPluginArgsRunTheDirectorysMainPy(t *testing.T) {
	dir := t.TempDir()
	if _, err := pluginArgs(&pulumirpc.ProgramInfo{ProgramDirectory: dir}, nil); err == nil ||
		!strings.Contains(err.Error(), "no __main__.py") {
		t.Fatalf("a directory without __main__.py: err = %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "__main__.py"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := pluginArgs(&pulumirpc.ProgramInfo{RootDirectory: dir, ProgramDirectory: dir},
		[]string{"127.0.0.1:5"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"-u", dir, "127.0.0.1:5"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("pluginArgs = %q, want %q", got, want)
	}
	// The deprecated program field names the directory when there is no ProgramInfo.
	info := pluginInfo(&pulumirpc.RunPluginRequest{Program: dir})
	if info.GetProgramDirectory() != dir || info.GetRootDirectory() != dir {
		t.Fatalf("pluginInfo(program only) = %v", info)
	}
	if _, err := pluginArgs(&pulumirpc.ProgramInfo{}, nil); err == nil {
		t.Fatal("no directory was accepted")
	}
}

// runPlugin calls RunPlugin on a served host and collects what it streams.
func runPlugin(t *testing.T, req *pulumirpc.RunPluginRequest) (stdout, stderr string, exit *int32) {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil && os.Getenv("PULUMI_PYTHON_CMD") == "" {
		t.Skip("no python3 on PATH")
	}
	stream, err := serve(t, &host{}).RunPlugin(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut strings.Builder
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out.String(), errOut.String(), exit
		}
		if err != nil {
			t.Fatalf("RunPlugin stream: %v (stdout %q, stderr %q)", err, out.String(), errOut.String())
		}
		if exit != nil {
			t.Fatalf("a message after the exit code: %v", msg)
		}
		switch o := msg.GetOutput().(type) {
		case *pulumirpc.RunPluginResponse_Stdout:
			out.Write(o.Stdout)
		case *pulumirpc.RunPluginResponse_Stderr:
			errOut.Write(o.Stderr)
		case *pulumirpc.RunPluginResponse_Exitcode:
			code := o.Exitcode
			exit = &code
		}
	}
}

const fakeAnalyzer = `import os, sys
print("4242")  # an analyzer prints its port first
print("args", sys.argv[1:])
print("cwd", os.getcwd())
print("env", os.environ.get("POLICY_TEST_VALUE"))
print("to stderr", file=sys.stderr)
sys.exit(int(os.environ.get("POLICY_TEST_EXIT", "0")))
`

func TestRunPluginStreamsOutputAndExitCode(t *testing.T) {
	dir, pwd := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "__main__.py"), []byte(fakeAnalyzer), 0o600); err != nil {
		t.Fatal(err)
	}
	req := func(exit string) *pulumirpc.RunPluginRequest {
		return &pulumirpc.RunPluginRequest{
			Pwd:  pwd,
			Args: []string{"127.0.0.1:7"},
			Env: append(os.Environ(), "POLICY_TEST_VALUE=from-engine",
				"POLICY_TEST_EXIT="+exit),
			Info: &pulumirpc.ProgramInfo{RootDirectory: dir, ProgramDirectory: dir, EntryPoint: "."},
			Kind: "analyzer",
		}
	}

	stdout, stderr, exit := runPlugin(t, req("0"))
	if exit != nil {
		t.Fatalf("a clean exit sent exit code %d; it must just end the stream", *exit)
	}
	resolvedPwd, err := filepath.EvalSymlinks(pwd)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"4242\n", "args ['127.0.0.1:7']", "cwd " + resolvedPwd, "env from-engine",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout %q lacks %q", stdout, want)
		}
	}
	if !strings.HasPrefix(stdout, "4242\n") {
		t.Errorf("stdout %q does not start with the port line", stdout)
	}
	if stderr != "to stderr\n" {
		t.Errorf("stderr = %q", stderr)
	}

	_, _, exit = runPlugin(t, req("3"))
	if exit == nil || *exit != 3 {
		t.Fatalf("exit 3 -> exit code %v", exit)
	}
}

func TestRunPluginWithoutMainPyFails(t *testing.T) {
	dir := t.TempDir()
	stream, err := serve(t, &host{}).RunPlugin(context.Background(), &pulumirpc.RunPluginRequest{
		Info: &pulumirpc.ProgramInfo{RootDirectory: dir, ProgramDirectory: dir},
	})
	if err == nil {
		_, err = stream.Recv()
	}
	if err == nil || !strings.Contains(err.Error(), "no __main__.py") {
		t.Fatalf("RunPlugin on a directory without __main__.py: %v", err)
	}
}

func TestAboutPythonAsksTheToolchainsPython(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3 on PATH")
	}
	t.Setenv("PULUMI_PYTHON_CMD", python)
	tc, err := toolchain.ResolveToolchain(toolchain.PythonOptions{Toolchain: toolchain.Pip, Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	executable, version, err := aboutPython(context.Background(), tc)
	if err != nil {
		t.Fatal(err)
	}
	want, err := exec.Command(python, "-c",
		"import sys; print(sys.executable); print('%d.%d.%d' % sys.version_info[:3])").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := executable + "\n" + version + "\n"; got != string(want) {
		t.Fatalf("aboutPython = %q, want %q", got, want)
	}
}
