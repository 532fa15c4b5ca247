package test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	osuser "os/user"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/builtin"
	"github.com/arbor-project/arbor/internal/sshdtest"
	"github.com/arbor-project/arbor/routemonitor"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/spawn"
)

// These tests run arbor against a real sshd on 127.0.0.1 (startSSHD).
// Each test gets its own server, so its own remote agent cache.

var (
	uploadLine = regexp.MustCompile(`\[DEBUG\] arbor: uploading agent binary: .*hop=ssh:` + sshdtest.Alias + ` `)
	hitLine    = regexp.MustCompile(`\[DEBUG\] arbor: agent cache hit: .*hop=ssh:` + sshdtest.Alias + ` `)
)

// arborArgs joins flags, a command and its arguments.
func arborArgs(parts ...[]string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func hashOfFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// TestSSHExecUploadsOnce: exec over one ssh hop with the options from an
// ssh config file. The first connection uploads the agent into the remote
// cache (file named by its hash, mode 0700); the second finds it there
// and uploads nothing.
func TestSSHExecUploadsOnce(t *testing.T) {
	s := startSSHD(t, sshdtest.Options{})
	args := arborArgs([]string{"--log-level", "debug"}, sshFlags(s),
		[]string{"exec", "--to", "ssh:" + sshdtest.Alias, "--", "id", "-un"})

	first := runArbor(t, args...)
	if first.code != 0 || string(first.stdout) != "root\n" {
		t.Fatalf("first run: want root, exit 0\n%v", first)
	}
	if !uploadLine.Match(first.stderr) || hitLine.Match(first.stderr) {
		t.Fatalf("first run did not upload the agent:\n%s", first.stderr)
	}
	cached := cachedAgents(t, s)
	want := "agent-" + hashOfFile(t, arborBin)
	if len(cached) != 1 || filepath.Base(cached[0]) != want {
		t.Fatalf("remote cache holds %v, want one %s", cached, want)
	}
	if st, err := os.Stat(cached[0]); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("cached agent mode: %v %v, want 0700", st.Mode(), err)
	}
	if got := hashOfFile(t, cached[0]); "agent-"+got != want {
		t.Fatalf("cached agent has SHA-256 %s", got)
	}

	second := runArbor(t, args...)
	if second.code != 0 || string(second.stdout) != "root\n" {
		t.Fatalf("second run: want root, exit 0\n%v", second)
	}
	if uploadLine.Match(second.stderr) || !hitLine.Match(second.stderr) {
		t.Fatalf("second run uploaded the agent again:\n%s", second.stderr)
	}
}

// TestSSHTamperedCache: a cached agent modified in place (same size) fails
// the hash check; the parent uploads it again, the run succeeds and the
// cache holds the right bytes again.
func TestSSHTamperedCache(t *testing.T) {
	s := startSSHD(t, sshdtest.Options{})
	args := arborArgs([]string{"--log-level", "debug"}, sshFlags(s),
		[]string{"exec", "--to", "ssh:" + sshdtest.Alias, "--", "id", "-un"})
	if res := runArbor(t, args...); res.code != 0 {
		t.Fatalf("first run: %v", res)
	}
	cached := cachedAgents(t, s)
	if len(cached) != 1 {
		t.Fatalf("remote cache holds %v", cached)
	}
	f, err := os.OpenFile(cached[0], os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("tampered"), 4096); err != nil {
		t.Fatal(err)
	}
	f.Close()

	res := runArbor(t, args...)
	if res.code != 0 || string(res.stdout) != "root\n" {
		t.Fatalf("run after tampering: want root, exit 0\n%v", res)
	}
	if !uploadLine.Match(res.stderr) || hitLine.Match(res.stderr) {
		t.Fatalf("tampered agent was not replaced by an upload:\n%s", res.stderr)
	}
	if got, want := "agent-"+hashOfFile(t, cached[0]), filepath.Base(cached[0]); got != want {
		t.Fatalf("cache file %s holds %s after the run", cached[0], got)
	}
}

// TestSSHPaths: multi-hop paths through ssh and sudo. ssh:HOST/ssh:HOST
// has its second hop spawned by the first node with the same ssh options
// (the config file travels in the spawn request); sudo:nobody runs the
// agent as nobody, bootstrapped into nobody's own private cache.
func TestSSHPaths(t *testing.T) {
	s := startSSHD(t, sshdtest.Options{})
	removeNew(t, "/tmp/arbor-65534/agent-*")
	removeIfNew(t, "/tmp/arbor-65534")
	host := "ssh:" + sshdtest.Alias
	cases := []struct {
		path, user string
		name       *regexp.Regexp
	}{
		{host + "/" + host, "root", regexp.MustCompile(`^ssh:arbortest/ssh:arbortest$`)},
		{host + "/sudo:nobody", "nobody", regexp.MustCompile(`^ssh:arbortest/sudo:nobody$`)},
		{"local/" + host + "/local", "root", regexp.MustCompile(`^local\.\d+/ssh:arbortest/local\.\d+$`)},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			res := runArbor(t, arborArgs(sshFlags(s), []string{"exec", "--to", tc.path, "--", "id", "-un"})...)
			if res.code != 0 || string(res.stdout) != tc.user+"\n" {
				t.Fatalf("want %s, exit 0\n%v", tc.user, res)
			}
			res = runArbor(t, arborArgs(sshFlags(s), []string{"call", "--to", tc.path, "agent.info"})...)
			var info builtin.Info
			if res.code != 0 || json.Unmarshal(res.stdout, &info) != nil {
				t.Fatalf("agent.info: %v", res)
			}
			if !tc.name.MatchString(info.Name) || info.User != tc.user {
				t.Fatalf("last node is %q running as %q, want %v as %s", info.Name, info.User, tc.name, tc.user)
			}
		})
	}
	// nobody has no home: its agent is cached in a private directory
	// under /tmp, owned by nobody, mode 0700.
	st, err := os.Stat("/tmp/arbor-65534")
	if err != nil {
		t.Fatal(err)
	}
	if sys := st.Sys().(*syscall.Stat_t); st.Mode().Perm() != 0o700 || sys.Uid != 65534 {
		t.Fatalf("/tmp/arbor-65534: mode %v uid %d, want 0700 and 65534", st.Mode(), sys.Uid)
	}
	if _, err := os.Stat("/tmp/arbor-65534/agent-" + hashOfFile(t, arborBin)); err != nil {
		t.Fatalf("nobody's cached agent: %v", err)
	}
}

// TestSSHErrors: every way an ssh or sudo hop can fail has its own
// message, arbor exec exits 255, and nothing is left running.
func TestSSHErrors(t *testing.T) {
	s := startSSHD(t, sshdtest.Options{})
	noShell := startSSHD(t, sshdtest.Options{HideShell: true})

	// A port that refuses, and one that accepts and never speaks.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := closed.Addr().(*net.TCPAddr).Port
	closed.Close()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	silentPort := silent.Addr().(*net.TCPAddr).Port

	// A user with no sudo rights: sudo:USER/sudo asks for a password.
	user := fmt.Sprintf("arbortest%d", os.Getpid()%100000)
	if out, err := exec.Command("useradd", "-M", "-s", "/bin/sh", user).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v: %s", err, out)
	}
	defer exec.Command("userdel", user).Run()
	u, err := osuser.Lookup(user)
	if err != nil {
		t.Fatal(err)
	}
	removeIfNew(t, "/tmp/arbor-"+u.Uid) // its private agent cache

	// An "agent" that exits at once: shipped from --agent-dir for this
	// very platform, it replaces the real binary.
	badDir := t.TempDir()
	bad := filepath.Join(badDir, "arbor-"+strings.ReplaceAll(spawn.ThisPlatform, "/", "-"))
	if err := os.WriteFile(bad, []byte("#!/bin/sh\necho starting >&2\necho boom >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	hostname, _ := os.Hostname()

	cases := []struct {
		name string
		args []string
		want *regexp.Regexp
	}{
		{"name not resolved", []string{"--to", "ssh:no-such-host.invalid"},
			regexp.MustCompile(`^arbor: spawning ssh:no-such-host\.invalid: host name not resolved \(exit status 255\); stderr:\nssh: Could not resolve hostname no-such-host\.invalid`)},
		{"connection refused", []string{"--to", fmt.Sprintf("ssh:127.0.0.1:%d", closedPort)},
			regexp.MustCompile(`^arbor: spawning ssh:127\.0\.0\.1:\d+: host unreachable \(exit status 255\); stderr:\nssh: connect to host 127\.0\.0\.1 port \d+: Connection refused`)},
		{"authentication refused", []string{"--to", "ssh:" + sshdtest.AliasBadKey},
			regexp.MustCompile(`^arbor: spawning ssh:arbortest-badkey: authentication refused \(exit status 255\); stderr:\ndaemon@127\.0\.0\.1: Permission denied \(publickey\)\.`)},
		{"unknown host key", []string{"--to", "ssh:" + sshdtest.AliasUnknown},
			regexp.MustCompile(`^arbor: spawning ssh:arbortest-unknown: host key verification failed: the host key is unknown and strict checking is on \(exit status 255\); stderr:\nNo ED25519 host key is known`)},
		{"host key changed", []string{"--to", "ssh:" + sshdtest.AliasChanged},
			regexp.MustCompile(`^arbor: spawning ssh:arbortest-changed: host key verification failed: the host key has changed \(exit status 255\); stderr:\n@@@`)},
		{"no /bin/sh", arborArgs(sshFlags(noShell), []string{"--to", "ssh:" + sshdtest.Alias}),
			regexp.MustCompile(`^arbor: spawning ssh:arbortest: no usable /bin/sh to run the bootstrap \(exit status 126\); stderr:\nbash: line 1: /bin/sh: Permission denied`)},
		{"connect timeout", []string{"--connect-timeout", "1s", "--to", fmt.Sprintf("ssh:%s:%d", sshdtest.Alias, silentPort)},
			regexp.MustCompile(`^arbor: spawning ssh:arbortest:\d+: connection timed out after 1s\n$`)},
		{"connect timeout below an intermediate", []string{"--connect-timeout", "1s", "--to", fmt.Sprintf("local/ssh:%s:%d", sshdtest.Alias, silentPort)},
			regexp.MustCompile(`^arbor: node \d+ \(local\.\d+\): agent\.spawn: spawning local\.\d+/ssh:arbortest:\d+: connection timed out after 1s\n$`)},
		{"sudo needs a password", []string{"--to", "sudo:" + user + "/sudo"},
			regexp.MustCompile(`^arbor: node \d+ \(.*\): agent\.spawn: spawning sudo:` + user + `/sudo:root: sudo on ` + regexp.QuoteMeta(hostname) + ` needs a password for root; arbor runs sudo -n \(never prompts\).* \(exit status 1\); stderr:\nsudo: a password is required\n$`)},
		{"agent exits during bootstrap", []string{"--agent-dir", badDir, "--to", "ssh:" + sshdtest.Alias},
			regexp.MustCompile(`^arbor: spawning ssh:arbortest: agent exited during bootstrap \(exit status 3\); stderr:\nstarting\nboom\n$`)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := descendants(os.Getpid())
			res := runArbor(t, arborArgs(sshFlags(s), tc.args, []string{"exec", "--", "id", "-un"})...)
			if res.code != 255 || len(res.stdout) != 0 || !tc.want.Match(res.stderr) {
				t.Fatalf("want exit 255 and stderr matching\n%s\ngot %v", tc.want, res)
			}
			if left := waitExited(remoteProcs(s), 10*time.Second); len(left) > 0 {
				t.Fatalf("left running: %s", describe(left))
			}
			if left := waitExited(remoteProcs(noShell), 10*time.Second); len(left) > 0 {
				t.Fatalf("left running: %s", describe(left))
			}
			if now := descendants(os.Getpid()); len(now) > len(before) {
				t.Fatalf("processes left under the test: %s", describe(now))
			}
		})
	}
}

// TestSSHOtherPlatform: a remote host of another platform (sshd runs
// under setarch i686, so uname says linux/386) needs a binary from
// --agent-dir. Without one the error names the platform and says how to
// build a binary; with one it is shipped, also by an intermediate node,
// which asks the root for it.
func TestSSHOtherPlatform(t *testing.T) {
	s := startSSHD(t, sshdtest.Options{Linux32: true})
	host := "ssh:" + sshdtest.Alias

	res := runArbor(t, arborArgs(sshFlags(s), []string{"exec", "--to", host, "--", "id", "-un"})...)
	want := regexp.MustCompile(`^arbor: spawning ssh:arbortest: the remote host is linux/386 and there is no agent binary for linux/386; build one with ` +
		"`CGO_ENABLED=0 GOOS=linux GOARCH=386 go build -o DIR/arbor-linux-386 ./cmd/arbor` and pass --agent-dir DIR\n$")
	if res.code != 255 || !want.Match(res.stderr) {
		t.Fatalf("want exit 255 and stderr matching\n%s\ngot %v", want, res)
	}

	// A "386" binary: this one (the host really runs amd64), with a few
	// bytes appended so that its hash is its own.
	dir := t.TempDir()
	data, err := os.ReadFile(arborBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "arbor-linux-386"), append(data, "linux/386"...), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{host, "local/" + host} {
		for _, f := range cachedAgents(t, s) { // each run uploads
			os.Remove(f)
		}
		res = runArbor(t, arborArgs([]string{"--log-level", "debug", "--agent-dir", dir}, sshFlags(s),
			[]string{"exec", "--to", path, "--", "id", "-un"})...)
		if res.code != 0 || string(res.stdout) != "root\n" {
			t.Fatalf("%s with --agent-dir: want root, exit 0\n%v", path, res)
		}
		if !regexp.MustCompile(`uploading agent binary: .*platform=linux/386`).Match(res.stderr) {
			t.Fatalf("%s: no upload of the linux/386 binary:\n%s", path, res.stderr)
		}
	}
	// The local node had no 386 binary of its own: the root handed
	// it out.
	if !regexp.MustCompile(`\[DEBUG\] arbor: handing out agent binary: .*platform=linux/386`).Match(res.stderr) {
		t.Fatalf("the root did not hand out the binary:\n%s", res.stderr)
	}
}

// TestSSHKillMiddleHop builds ssh:HOST/ssh:HOST/ssh:HOST and kills the ssh
// process that carries the middle hop (it runs under the first node):
// the root sees DEL_ROUTE for the middle and last nodes, a call pending
// on the last node fails naming it, and the first node stays reachable.
func TestSSHKillMiddleHop(t *testing.T) {
	s := startSSHD(t, sshdtest.Options{})
	sshOpts := spawn.SSHOptions{ConfigFile: s.ConfigFile}
	root, logs := newRoot(t, agent.Options{SSH: sshOpts}, "info")
	dels := make(chan routemonitor.Event, 16)
	unsub := root.Monitor.Subscribe(func(e routemonitor.Event) {
		if e.Kind == routemonitor.DelRoute {
			select {
			case dels <- e:
			default:
			}
		}
	})
	defer unsub()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	hop := spawn.Hop{Method: "ssh", Target: sshdtest.Alias}
	r1, err := root.Spawn(ctx, hop, "")
	if err != nil {
		t.Fatal(err)
	}
	n1 := root.Remote(r1.ID, r1.Name)
	req := agent.SpawnRequest{Method: "ssh", Target: sshdtest.Alias, SSH: &sshOpts}
	var r2, r3 agent.SpawnResult
	if err := n1.Call(ctx, "agent.spawn", req, &r2); err != nil {
		t.Fatal(err)
	}
	n2 := root.Remote(r2.ID, r2.Name)
	if err := n2.Call(ctx, "agent.spawn", req, &r3); err != nil {
		t.Fatal(err)
	}
	n3 := root.Remote(r3.ID, r3.Name)
	if a := argv(r2.PID); len(a) == 0 || a[0] != "ssh" {
		t.Fatalf("middle hop's process %d is %q, want ssh", r2.PID, a)
	}

	pc, err := n3.Start(ctx, "agent.sleep", builtin.SleepArgs{Seconds: 60})
	if err != nil {
		t.Fatal(err)
	}
	logs.waitLine(t, regexp.MustCompile(`agent\.sleep started: .*node=`+regexp.QuoteMeta(r3.Name)+`( |$)`), 30*time.Second)
	if err := syscall.Kill(r2.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}

	err = pc.Wait(nil)
	if ctx.Err() != nil {
		t.Fatalf("the call only ended at the safety deadline: %v", err)
	}
	var de *router.DisconnectError
	if !errors.As(err, &de) || de.ID != r3.ID || !strings.Contains(err.Error(), r3.Name) {
		t.Fatalf("call error %v, want a disconnect naming node %d (%s)", err, r3.ID, r3.Name)
	}
	gone := map[uint32]bool{}
	for len(gone) < 2 {
		select {
		case e := <-dels:
			if e.ID != r2.ID && e.ID != r3.ID {
				t.Fatalf("DEL_ROUTE for node %d (%s), want only %d and %d", e.ID, e.Name, r2.ID, r3.ID)
			}
			gone[e.ID] = true
		case <-ctx.Done():
			t.Fatalf("DEL_ROUTE at the root for %v only", gone)
		}
	}
	if err := n1.Call(ctx, "agent.ping", nil, nil); err != nil {
		t.Fatalf("first hop unreachable after its child died: %v", err)
	}
	if rs := root.Router.Table().Routes; len(rs) != 1 || rs[0].ID != r1.ID {
		t.Fatalf("root routes %+v, want only %d", rs, r1.ID)
	}
}
