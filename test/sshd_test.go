package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arbor-project/arbor/internal/sshdtest"
)

// startSSHD starts a real OpenSSH sshd on 127.0.0.1 (see
// internal/sshdtest) for one test, with a private arbor cache on the
// remote side (XDG_CACHE_HOME, sent by the client config). At the end of
// the test it checks that nothing the test started through it is still
// running, then stops sshd by its PID.
func startSSHD(t *testing.T, o sshdtest.Options) *sshdtest.Server {
	t.Helper()
	s, err := sshdtest.Start("", o)
	if err != nil {
		t.Fatalf("starting sshd: %v", err)
	}
	t.Cleanup(func() {
		if left := waitExited(remoteProcs(s), 20*time.Second); len(left) > 0 {
			t.Errorf("left running after the test: %s", describe(left))
		}
		s.Stop()
	})
	return s
}

// remoteProcs lists what runs through s: sshd's session processes, ssh
// clients using its config (or a copy an intermediate node wrote), and
// agents run from its cache or from a private /tmp cache.
func remoteProcs(s *sshdtest.Server) []proc {
	out := descendants(s.PID())
	for _, p := range allProcs() {
		a := argv(p.PID)
		if len(a) == 0 || p.State == 'Z' || p.PID == s.PID() {
			continue
		}
		line := strings.Join(a, " ")
		if strings.Contains(line, s.Dir) || strings.Contains(line, "arbor-ssh-config-") ||
			strings.Contains(a[0], "/arbor-") && strings.Contains(filepath.Base(a[0]), "agent-") {
			out = append(out, p)
		}
	}
	return out
}

// describe lists processes with their command lines.
func describe(ps []proc) string {
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "\n  %v: %q", p, argv(p.PID))
	}
	return b.String()
}

// sshFlags are the arbor flags that reach s.
func sshFlags(s *sshdtest.Server) []string {
	return []string{"--ssh-config", s.ConfigFile}
}

// cachedAgents lists the agent binaries in s's remote cache.
func cachedAgents(t *testing.T, s *sshdtest.Server) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(s.CacheDir, "arbor", "agent-*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// removeNew removes, at the end of the test, files matching pattern that
// did not exist when it was called (agents a sudo hop cached in a shared
// place such as /tmp/arbor-UID or /root/.cache/arbor).
func removeNew(t *testing.T, pattern string) {
	t.Helper()
	before := map[string]bool{}
	m, _ := filepath.Glob(pattern)
	for _, f := range m {
		before[f] = true
	}
	t.Cleanup(func() {
		m, _ := filepath.Glob(pattern)
		for _, f := range m {
			if !before[f] {
				os.Remove(f)
			}
		}
	})
}

// removeIfNew removes dir at the end of the test if it does not exist now
// (the private /tmp cache a sudo hop's user gets).
func removeIfNew(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Lstat(dir); err == nil {
		return
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
}
