package spawn

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// fakeAgent writes a stand-in agent binary: a script that says it ran.
func fakeAgent(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "agent")
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho \"agent ran $1\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// hashOf is the SHA-256 (hex) of the file at path, "" if it cannot be read.
func hashOf(path string) string {
	f, _ := inspect(path)
	return f.hash
}

// bootRun is one run of the real bootstrap script under /bin/sh.
type bootRun struct {
	res    bootResult
	err    error
	after  string // stdout after the bootstrap handed over
	stderr string
}

// runScript runs the bootstrap script for table (nil: bins's table) with
// env as the whole environment, driving it with runBootstrap.
func runScript(t *testing.T, bins *Binaries, table map[string]string, env []string) bootRun {
	t.Helper()
	if table == nil {
		var err error
		if table, err = bins.Table(); err != nil {
			t.Fatal(err)
		}
	}
	script, err := bootstrapScript(table, []string{"ARBOR_LOG_LEVEL=debug"})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Env = env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	br := bufio.NewReader(stdout)
	var r bootRun
	r.res, r.err = runBootstrap(ctx, br, stdin, bins, "node", "hop", hclog.NewNullLogger())
	stdin.Close()
	rest, _ := io.ReadAll(br)
	cmd.Wait()
	r.after, r.stderr = string(rest), stderr.String()
	return r
}

// baseEnv is a minimal environment for the script.
func baseEnv(extra ...string) []string {
	return append([]string{"PATH=/usr/local/bin:/usr/bin:/bin"}, extra...)
}

func TestBootstrapMissHitTamper(t *testing.T) {
	bins := &Binaries{Self: fakeAgent(t)}
	home := t.TempDir()
	env := baseEnv("HOME=" + home)
	hash := hashOf(bins.Self)
	cached := filepath.Join(home, ".cache", "arbor", "agent-"+hash)

	r := runScript(t, bins, nil, env)
	if r.err != nil || r.res.mode != BootUpload || r.res.platform != ThisPlatform || r.after != "agent ran __agent\n" {
		t.Fatalf("first run: %+v", r)
	}
	st, err := os.Stat(cached)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("cached agent %s: %v %v", cached, st, err)
	}
	if left, _ := filepath.Glob(filepath.Join(home, ".cache", "arbor", ".agent-*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}

	r = runScript(t, bins, nil, env)
	if r.err != nil || r.res.mode != BootHit || r.after != "agent ran __agent\n" {
		t.Fatalf("second run: %+v", r)
	}

	if err := os.WriteFile(cached, []byte("#!/bin/sh\necho tampered\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	r = runScript(t, bins, nil, env)
	if r.err != nil || r.res.mode != BootUpload || r.after != "agent ran __agent\n" {
		t.Fatalf("run after tampering: %+v", r)
	}
	if h := hashOf(cached); h != hash {
		t.Fatalf("cache not repaired: %s", h)
	}
}

// TestBootstrapCacheDirs: XDG_CACHE_HOME wins; with no home the cache is
// a private directory under TMPDIR, and one that is not private (mode
// 0755) is refused.
func TestBootstrapCacheDirs(t *testing.T) {
	bins := &Binaries{Self: fakeAgent(t)}
	hash := hashOf(bins.Self)
	uid := os.Getuid()

	xdg := t.TempDir()
	r := runScript(t, bins, nil, baseEnv("HOME="+t.TempDir(), "XDG_CACHE_HOME="+xdg))
	if r.err != nil {
		t.Fatalf("%+v", r)
	}
	if _, err := os.Stat(filepath.Join(xdg, "arbor", "agent-"+hash)); err != nil {
		t.Fatalf("XDG_CACHE_HOME not used: %v", err)
	}

	tmp := t.TempDir()
	r = runScript(t, bins, nil, baseEnv("TMPDIR="+tmp))
	if r.err != nil || r.res.mode != BootUpload {
		t.Fatalf("no home: %+v", r)
	}
	priv := filepath.Join(tmp, "arbor-"+strconv.Itoa(uid))
	st, err := os.Stat(priv)
	if err != nil || st.Mode().Perm() != 0o700 || !st.IsDir() {
		t.Fatalf("private dir %s: %v %v", priv, st, err)
	}
	if r = runScript(t, bins, nil, baseEnv("TMPDIR="+tmp)); r.err != nil || r.res.mode != BootHit {
		t.Fatalf("no home, second run: %+v", r)
	}

	open := t.TempDir()
	if err := os.Mkdir(filepath.Join(open, "arbor-"+strconv.Itoa(uid)), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(open, "arbor-"+strconv.Itoa(uid)), 0o755)
	r = runScript(t, bins, nil, baseEnv("TMPDIR="+open))
	if !errors.Is(r.err, ErrBootstrap) || !strings.Contains(r.err.Error(), "no writable cache directory") {
		t.Fatalf("open private dir accepted: %+v", r)
	}
}

// TestBootstrapRawWithoutGzip: a host without gzip gets the binary
// uncompressed; an openssl that prints no hash is passed over for
// sha256sum.
func TestBootstrapRawWithoutGzip(t *testing.T) {
	bin := t.TempDir()
	for _, tool := range []string{"uname", "sha256sum", "head", "mkdir", "ls", "id", "chmod", "mv", "rm"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(p, filepath.Join(bin, tool)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(bin, "openssl"), []byte("#!/bin/sh\necho usage: nonsense\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	bins := &Binaries{Self: fakeAgent(t)}
	env := []string{"PATH=" + bin, "HOME=" + t.TempDir()}
	r := runScript(t, bins, nil, env)
	if r.err != nil || r.res.mode != BootUpload || r.after != "agent ran __agent\n" {
		t.Fatalf("%+v", r)
	}
	if r = runScript(t, bins, nil, env); r.err != nil || r.res.mode != BootHit {
		t.Fatalf("second run: %+v", r)
	}
}

// TestBootstrapNoBinary: a platform missing from the table fails with
// ErrNoBinary and says how to build one.
func TestBootstrapNoBinary(t *testing.T) {
	bins := &Binaries{Self: fakeAgent(t)}
	r := runScript(t, bins, map[string]string{}, baseEnv("HOME="+t.TempDir()))
	var he *HopError
	if !errors.As(r.err, &he) || !errors.Is(r.err, ErrNoBinary) {
		t.Fatalf("want ErrNoBinary, got %+v", r)
	}
	for _, want := range []string{"no agent binary for " + ThisPlatform, "GOOS=", "--agent-dir DIR"} {
		if !strings.Contains(he.Error(), want) {
			t.Fatalf("%q does not say %q", he.Error(), want)
		}
	}
}

// TestBootstrapScriptForm: the script is one line without single quotes
// or backslashes (so any login shell passes it through), and both dash
// and bash parse it.
func TestBootstrapScriptForm(t *testing.T) {
	script, err := bootstrapScript(map[string]string{"linux/amd64": strings.Repeat("a", 64), "darwin/arm64": strings.Repeat("b", 64)},
		[]string{"ARBOR_LOG_LEVEL=debug"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(script, "'\\\n") {
		t.Fatalf("script holds a quote, backslash or newline: %s", script)
	}
	for _, sh := range []string{"dash", "bash", "sh"} {
		p, err := exec.LookPath(sh)
		if err != nil {
			continue
		}
		if out, err := exec.Command(p, "-n", "-c", script).CombinedOutput(); err != nil {
			t.Fatalf("%s -n: %v: %s", sh, err, out)
		}
	}
	for _, bad := range []string{"X=a b", "X='", "1X=y", "X=$(id)"} {
		if _, err := bootstrapScript(nil, []string{bad}); err == nil {
			t.Fatalf("env %q accepted", bad)
		}
	}
	if _, err := bootstrapScript(map[string]string{"linux/amd64;rm": strings.Repeat("a", 64)}, nil); err == nil {
		t.Fatal("bad platform accepted")
	}
}
