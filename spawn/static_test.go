package spawn

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// tinySource is a program that uses os/user, so that cgo, when on, links
// it against this host's libc; it says it ran, with its arguments.
const tinySource = `package main

import (
	"fmt"
	"os"
	"os/user"
)

func main() {
	user.Current()
	fmt.Println("tiny ran", os.Args[1:])
}
`

// buildTiny builds tinySource twice with go build, with cgo on and off,
// and returns the two binaries. It skips the test when there is no C
// compiler, the only reason cgo cannot link a dynamic binary here.
func buildTiny(t *testing.T) (dynamic, static string) {
	t.Helper()
	out, err := exec.Command("go", "env", "CC").Output()
	if err != nil {
		t.Fatalf("go env CC: %v", err)
	}
	cc := strings.TrimSpace(string(out))
	if _, err := exec.LookPath(cc); err != nil {
		t.Skipf("no C compiler (%q) to build a dynamically linked binary: %v", cc, err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(tinySource), 0o644); err != nil {
		t.Fatal(err)
	}
	build := func(cgo, name string) string {
		exe := filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-o", exe, "main.go")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo, "GOFLAGS=", "GO111MODULE=on")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("CGO_ENABLED=%s go build: %v\n%s", cgo, err, out)
		}
		return exe
	}
	return build("1", "tiny-dynamic"), build("0", "tiny-static")
}

// TestIsDynamic: a program built with cgo on is dynamic, the same
// program built with CGO_ENABLED=0 is not, and neither are a script and
// an empty file; a missing file is an error.
func TestIsDynamic(t *testing.T) {
	dyn, static := buildTiny(t)
	for _, exe := range []string{dyn, static} { // both really run here
		if out, err := exec.Command(exe, "x").Output(); err != nil || string(out) != "tiny ran [x]\n" {
			t.Fatalf("%s: %q %v", exe, out, err)
		}
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want bool
	}{
		{dyn, true},
		{static, false},
		{fakeAgent(t), false},
		{empty, false},
	} {
		got, err := IsDynamic(tc.path)
		if err != nil || got != tc.want {
			t.Errorf("IsDynamic(%s) = %v, %v; want %v", filepath.Base(tc.path), got, err, tc.want)
		}
	}
	if _, err := IsDynamic(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want os.ErrNotExist", err)
	}
}

// TestBootstrapDynamicSelf runs the real bootstrap script with a
// dynamically linked Self. For a remote hop, the binary is neither
// offered nor uploaded: the hop fails with ErrDynamicAgent, naming the
// file and how to build a static one. A static arbor-GOOS-GOARCH in Dir
// is shipped instead. A sudo hop (same host) still gets Self.
func TestBootstrapDynamicSelf(t *testing.T) {
	dyn, static := buildTiny(t)
	home := t.TempDir()
	env := baseEnv("HOME=" + home)

	bins := &Binaries{Self: dyn}
	table, err := bins.Table()
	if err != nil {
		t.Fatal(err)
	}
	if h, ok := table[ThisPlatform]; ok {
		t.Fatalf("the table offers the dynamic binary for %s: %s", ThisPlatform, h)
	}
	r := runScript(t, bins, table, env)
	var he *HopError
	if !errors.As(r.err, &he) || !errors.Is(r.err, ErrDynamicAgent) {
		t.Fatalf("want ErrDynamicAgent, got %+v", r)
	}
	for _, want := range []string{
		"the remote host is " + ThisPlatform + " and this arbor executable " + dyn + " is dynamically linked",
		"`CGO_ENABLED=0 go build -o arbor ./cmd/arbor`",
		"go build -o DIR/arbor-" + strings.ReplaceAll(ThisPlatform, "/", "-") + " ./cmd/arbor` and pass --agent-dir DIR",
	} {
		if !strings.Contains(he.Error(), want) {
			t.Fatalf("%q does not say %q", he.Error(), want)
		}
	}
	if cached, _ := filepath.Glob(filepath.Join(home, ".cache", "arbor", "*agent-*")); len(cached) != 0 {
		t.Fatalf("something was uploaded: %v", cached)
	}

	// A dynamic binary in Dir is refused as well, naming that file.
	dir := t.TempDir()
	inDir := filepath.Join(dir, fileOfPlatform(ThisPlatform))
	copyFile(t, dyn, inDir)
	r = runScript(t, &Binaries{Self: dyn, Dir: dir}, nil, env)
	if !errors.Is(r.err, ErrDynamicAgent) || !strings.Contains(r.err.Error(), "the agent binary "+inDir+" is dynamically linked") {
		t.Fatalf("dynamic agent in Dir: want ErrDynamicAgent naming it, got %+v", r)
	}

	// A static one in Dir is shipped.
	copyFile(t, static, inDir)
	r = runScript(t, &Binaries{Self: dyn, Dir: dir}, nil, env)
	if r.err != nil || r.res.mode != BootUpload || r.after != "tiny ran [__agent]\n" {
		t.Fatalf("static agent from Dir: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(home, ".cache", "arbor", "agent-"+hashOf(static))); err != nil {
		t.Fatalf("the static agent is not in the cache: %v", err)
	}

	// sudo: the same host, so the dynamic Self serves.
	table, err = bins.table(true)
	if err != nil {
		t.Fatal(err)
	}
	r = runScript(t, bins, table, env)
	if r.err != nil || r.res.mode != BootUpload || r.after != "tiny ran [__agent]\n" {
		t.Fatalf("same-host hop with a dynamic Self: %+v", r)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o755); err != nil {
		t.Fatal(err)
	}
}
