package test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	osuser "os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/arbor-project/arbor/builtin"
	"github.com/arbor-project/arbor/internal/sshdtest"
	"github.com/arbor-project/arbor/internal/testbin"
	"github.com/arbor-project/arbor/spawn"
)

// The agent a root ships to a remote host is static (see spawn/static.go):
// these tests check that the test binary is static, that a dynamic one is
// never shipped, and that a static one runs where there is no libc at all.

// TestDynamicAgentRefused: arbor built with cgo on (a plain `go build` on
// a host with a C compiler) refuses to ship itself over ssh, with an error
// that says how to build a static agent, and uploads nothing. It still
// serves local and sudo hops (the same host), and ships a static agent
// for its platform found in --agent-dir, also from an intermediate node.
func TestDynamicAgentRefused(t *testing.T) {
	if dyn, err := spawn.IsDynamic(arborBin); err != nil || dyn {
		t.Fatalf("the test binary %s is dynamically linked (%v): testbin must build it static", arborBin, err)
	}
	out, err := exec.Command("go", "env", "CC").Output()
	if err != nil {
		t.Fatalf("go env CC: %v", err)
	}
	if _, err := exec.LookPath(strings.TrimSpace(string(out))); err != nil {
		t.Skipf("no C compiler to build a dynamically linked arbor: %v", err)
	}
	dyn, err := testbin.BuildDynamic(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if d, err := spawn.IsDynamic(dyn); err != nil || !d {
		t.Fatalf("%s built with CGO_ENABLED=1 is not dynamic (%v)", dyn, err)
	}
	s := startSSHD(t, sshdtest.Options{})
	removeNew(t, "/tmp/arbor-65534/agent-*")
	removeIfNew(t, "/tmp/arbor-65534")
	host := "ssh:" + sshdtest.Alias
	agentFile := "arbor-" + strings.ReplaceAll(spawn.ThisPlatform, "/", "-")

	detail := `the remote host is ` + regexp.QuoteMeta(spawn.ThisPlatform) + ` and this arbor executable ` + regexp.QuoteMeta(dyn) +
		` is dynamically linked \(built with cgo\), so it would not run on a host with another libc or none; ` +
		"build arbor static with `CGO_ENABLED=0 go build -o arbor ./cmd/arbor`, or build one with `CGO_ENABLED=0 GOOS=linux GOARCH=" +
		regexp.QuoteMeta(strings.TrimPrefix(spawn.ThisPlatform, "linux/")) + " go build -o DIR/" + agentFile + " ./cmd/arbor` and pass --agent-dir DIR"
	for _, tc := range []struct{ path, prefix string }{
		{host, `^arbor: spawning ssh:arbortest: `},
		// The intermediate is the same dynamic binary, re-executed.
		{"local/" + host, `^arbor: node \d+ \(local\.\d+\): agent\.spawn: spawning local\.\d+/ssh:arbortest: `},
	} {
		want := regexp.MustCompile(tc.prefix + detail)
		res := runBinary(t, dyn, nil, arborArgs(sshFlags(s), []string{"exec", "--to", tc.path, "--", "id", "-un"})...)
		if res.code != 255 || len(res.stdout) != 0 || !want.Match(res.stderr) {
			t.Fatalf("%s: want exit 255 and stderr matching\n%s\ngot %v", tc.path, want, res)
		}
		if cached := cachedAgents(t, s); len(cached) != 0 {
			t.Fatalf("%s: the dynamic binary reached the remote cache: %v", tc.path, cached)
		}
	}

	// Hops on the same host run the dynamic binary itself.
	for _, tc := range []struct{ path, user string }{{"local", "root"}, {"sudo:nobody", "nobody"}} {
		res := runBinary(t, dyn, nil, "exec", "--to", tc.path, "--", "id", "-un")
		if res.code != 0 || string(res.stdout) != tc.user+"\n" {
			t.Fatalf("%s: want %s, exit 0\n%v", tc.path, tc.user, res)
		}
	}

	// A static agent in --agent-dir goes instead, from the root or from
	// a dynamic intermediate node.
	dir := t.TempDir()
	data, err := os.ReadFile(arborBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, agentFile), data, 0o755); err != nil {
		t.Fatal(err)
	}
	static := "agent-" + hashOfFile(t, arborBin)
	for _, path := range []string{host, "local/" + host} {
		for _, f := range cachedAgents(t, s) { // each run uploads
			os.Remove(f)
		}
		res := runBinary(t, dyn, nil, arborArgs([]string{"--agent-dir", dir}, sshFlags(s),
			[]string{"exec", "--to", path, "--", "id", "-un"})...)
		if res.code != 0 || string(res.stdout) != "root\n" {
			t.Fatalf("%s with --agent-dir: want root, exit 0\n%v", path, res)
		}
		if cached := cachedAgents(t, s); len(cached) != 1 || filepath.Base(cached[0]) != static {
			t.Fatalf("%s: remote cache holds %v, want the static %s", path, cached, static)
		}
	}
}

// TestStaticAgentInBusyboxChroot: a host with nothing but a static
// busybox (no libc, no loader): a chroot holding /bin/busybox, its applets,
// /tmp and /dev/null, reached through a real sshd with ChrootDirectory as
// a user whose login shell is /bin/sh. From a cold cache the bootstrap
// uploads the agent, verifies it, stores it and runs it there, and it
// answers agent.info; the next connections find it in the cache and run
// commands in the chroot. A dynamically linked agent fails here ("not
// found", exit 127).
func TestStaticAgentInBusyboxChroot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: sshd with ChrootDirectory, a test user and mknod")
	}
	const busybox = "/bin/busybox"
	if _, err := os.Stat(busybox); err != nil {
		t.Skipf("no static busybox (Debian package busybox-static): %v", err)
	}
	if dyn, err := spawn.IsDynamic(busybox); err != nil || dyn {
		t.Skipf("%s is not a static busybox (install busybox-static): dynamic %v, %v", busybox, dyn, err)
	}
	user, uid := loginUser(t)
	root := busyboxChroot(t, busybox)
	s := startSSHD(t, sshdtest.Options{ChrootUser: user, ChrootDir: root, ClientEnv: []string{"XDG_CACHE_HOME=/tmp/cache"}})
	host := "ssh:" + sshdtest.AliasChroot
	cache := filepath.Join(root, "tmp", "cache", "arbor")

	if got := entries(t, root); strings.Join(got, " ") != "bin dev tmp" {
		t.Fatalf("the chroot holds %v, want bin dev tmp only", got)
	}
	if _, err := os.Stat(cache); !os.IsNotExist(err) {
		t.Fatalf("the agent cache in the chroot is not cold: %v", err)
	}

	// Cold cache: the agent is uploaded, stored and run, and answers.
	debug := arborArgs([]string{"--log-level", "debug"}, sshFlags(s))
	res := runArbor(t, arborArgs(debug, []string{"call", "--to", host, "agent.info"})...)
	var info builtin.Info
	if res.code != 0 || json.Unmarshal(res.stdout, &info) != nil {
		t.Fatalf("agent.info in the chroot: %v", res)
	}
	if info.UID != uid || info.Name != host {
		t.Fatalf("agent.info: node %q uid %d, want %s and %d", info.Name, info.UID, host, uid)
	}
	upload := regexp.MustCompile(`uploading agent binary: .*hop=` + regexp.QuoteMeta(host) + ` .*platform=` + regexp.QuoteMeta(spawn.ThisPlatform))
	if !upload.Match(res.stderr) {
		t.Fatalf("no upload of the agent:\n%s", res.stderr)
	}
	agent := filepath.Join(cache, "agent-"+hashOfFile(t, arborBin))
	st, err := os.Stat(agent)
	if err != nil {
		t.Fatalf("the agent is not in the chroot's cache: %v (cache holds %v)", err, entries(t, cache))
	}
	if sys := st.Sys().(*syscall.Stat_t); st.Mode().Perm() != 0o700 || int(sys.Uid) != uid {
		t.Fatalf("%s: mode %v uid %d, want 0700 and %d", agent, st.Mode(), sys.Uid, uid)
	}

	// Warm cache: the cached agent runs commands inside the chroot.
	uname, err := exec.Command(busybox, "uname", "-a").Output()
	if err != nil {
		t.Fatal(err)
	}
	res = runArbor(t, arborArgs(debug, []string{"exec", "--to", host, "--", "/bin/busybox", "uname", "-a"})...)
	if res.code != 0 || string(res.stdout) != string(uname) {
		t.Fatalf("exec in the chroot: want %q, exit 0\n%v", uname, res)
	}
	hit := regexp.MustCompile(`agent cache hit: .*hop=` + regexp.QuoteMeta(host) + ` `)
	if !hit.Match(res.stderr) || upload.Match(res.stderr) {
		t.Fatalf("second connection did not run the cached agent:\n%s", res.stderr)
	}
	res = runArbor(t, arborArgs(sshFlags(s), []string{"exec", "--to", host, "--", "/bin/busybox", "ls", "/"})...)
	if res.code != 0 || string(res.stdout) != "bin\ndev\ntmp\n" {
		t.Fatalf("ls / in the chroot: want bin dev tmp, exit 0\n%v", res)
	}
}

// loginUser adds a user whose login shell is /bin/sh and whose account
// is not locked (sshd refuses a locked one, even with a key), and removes
// it at the end of the test. It returns the name and the UID.
func loginUser(t *testing.T) (string, int) {
	t.Helper()
	name := fmt.Sprintf("arborch%d", os.Getpid()%100000)
	if out, err := exec.Command("useradd", "-M", "-s", "/bin/sh", "-p", "*", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
			t.Errorf("userdel %s: %v: %s", name, err, out)
		}
	})
	u, err := osuser.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		t.Fatal(err)
	}
	return name, uid
}

// busyboxChroot builds a root directory holding a copy of the static
// busybox at /bin/busybox with links for the applets the bootstrap script
// and the test use, /tmp (1777) and /dev/null, and nothing else. sshd
// wants it and its parents owned by root and not writable by group or
// others, so it is made under the first such directory of TMPDIR, /run
// and /var/lib. It is removed at the end of the test.
func busyboxChroot(t *testing.T, busybox string) string {
	t.Helper()
	var parent string
	for _, d := range []string{os.TempDir(), "/run", "/var/lib"} {
		if rootOnly(d) {
			parent = d
			break
		}
	}
	if parent == "" {
		t.Fatal("no directory owned by root and writable by root only for the chroot (tried TMPDIR, /run, /var/lib)")
	}
	root, err := os.MkdirTemp(parent, "arbor-chroot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Chmod(root, 0o755))
	for _, d := range []string{"bin", "dev", "tmp"} {
		must(os.Mkdir(filepath.Join(root, d), 0o755))
	}
	must(os.Chmod(filepath.Join(root, "tmp"), 0o1777))
	data, err := os.ReadFile(busybox)
	must(err)
	must(os.WriteFile(filepath.Join(root, "bin", "busybox"), data, 0o755))
	// What bootstrap.sh runs that is not a shell builtin, and the shell.
	for _, applet := range []string{"sh", "uname", "id", "ls", "mkdir", "rm", "mv", "chmod", "head", "cat", "gzip", "sha256sum"} {
		must(os.Symlink("busybox", filepath.Join(root, "bin", applet)))
	}
	null := filepath.Join(root, "dev", "null")
	must(syscall.Mknod(null, syscall.S_IFCHR|0o666, int(1<<8|3))) // major 1, minor 3
	must(os.Chmod(null, 0o666))
	return root
}

// rootOnly reports whether dir and all its parents are directories owned
// by root and not writable by group or others.
func rootOnly(dir string) bool {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for {
		st, err := os.Stat(dir)
		if err != nil || !st.IsDir() || st.Sys().(*syscall.Stat_t).Uid != 0 || st.Mode().Perm()&0o022 != 0 {
			return false
		}
		if dir == "/" {
			return true
		}
		dir = filepath.Dir(dir)
	}
}

// entries lists the names in dir, sorted.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}
