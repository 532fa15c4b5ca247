package test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

var targetAlias = regexp.MustCompile(` (web\d\d) `)

// behind lists the targets an agent's ssh children connect to.
func behind(agent int) map[string]bool {
	out := map[string]bool{}
	for _, p := range descendants(agent) {
		if m := targetAlias.FindStringSubmatch(" " + strings.Join(argv(p.PID), " ") + " "); m != nil {
			out[m[1]] = true
		}
	}
	return out
}

// TestFanoutGatewayKilled: 16 targets spread over two gateways with
// -f 4. Once a command runs through gw, gw's agent is killed with
// SIGKILL: the run says gw is gone and its targets go through the other;
// the only failures are targets that had started through gw (their
// command sent, at most the budget's worth), each named in the summary,
// and every other target finishes.
func TestFanoutGatewayKilled(t *testing.T) {
	flags, s := fanSSHD(t)
	dir := filepath.Join(s.Dir, "gwkill")
	os.MkdirAll(dir, 0o755)
	script := fmt.Sprintf(`touch %s/"$TEST_HOST"; echo start; sleep 2; echo done`, dir)
	run := startStreaming(t, arborArgs(flags, []string{"exec", "-f", "4", "--gateways", "ssh:gw,ssh:web64", "-w", "ssh:web[01-16]", "--", "sh", "-c", script})...)

	// Wait until a target's command runs through gw.
	deadline := time.Now().Add(cliTimeout)
	var gw int
	var via map[string]bool
	var running string
	for running == "" {
		if time.Now().After(deadline) {
			t.Fatalf("no command ran through gw; stderr:\n%s", run.stderr)
		}
		select {
		case <-run.exited:
			t.Fatalf("the run ended before a command ran through gw; stderr:\n%s", run.stderr)
		default:
		}
		time.Sleep(20 * time.Millisecond)
		if gw == 0 {
			gw = agentOf(s.PID(), "gw")
			if gw == 0 {
				continue
			}
		}
		via = behind(gw)
		for a := range via {
			if _, err := os.Stat(filepath.Join(dir, a)); err == nil {
				running = a
			}
		}
	}
	if err := syscall.Kill(gw, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// What had started by now: a superset of what had started through gw
	// when it died.
	startedEnts, _ := os.ReadDir(dir)
	started := map[string]bool{}
	for _, e := range startedEnts {
		started[e.Name()] = true
	}
	t.Logf("killed gw (pid %d) with %s running through it; behind gw: %v; started: %v", gw, running, keys(via), keys(started))

	code := run.wait(t, cliTimeout)
	stdout, stderr := run.stdout.String(), run.stderr.String()
	if code == 0 {
		t.Fatalf("want a failure (%s was running through gw)\nstdout:\n%s\nstderr:\n%s", running, stdout, stderr)
	}
	if !strings.Contains(stderr, "arbor: gateway ssh:gw is gone (") || !strings.Contains(stderr, "its targets not yet started go through the others") {
		t.Errorf("stderr does not say gw is gone and its targets re-routed:\n%s", stderr)
	}
	done := map[string]bool{}
	for _, l := range strings.Split(stdout, "\n") {
		if label, ok := strings.CutSuffix(l, ": done"); ok {
			done[label] = true
		}
	}
	var failed []string
	for i := 1; i <= 16; i++ {
		l := fmt.Sprintf("web%02d", i)
		if done[l] {
			continue
		}
		failed = append(failed, l)
		// A target whose command was sent to gw just as gw died failed
		// although it never ran (no file): from the root it had started.
		// So a failure must be behind gw, and at most the budget's worth
		// of them (-f 4): the rest were waiting and went elsewhere.
		if !via[l] {
			t.Errorf("%s failed but was not behind gw", l)
		}
		if !strings.Contains(stderr, "\n    "+l+": ") {
			t.Errorf("%s failed but the summary does not name it", l)
		}
	}
	if len(failed) > 4 {
		t.Errorf("%d targets failed, more than the budget (4) can have started through gw: %v (started: %v)", len(failed), failed, keys(started))
	}
	if !slicesContains(failed, running) {
		t.Errorf("%s was running through gw when it died, yet finished", running)
	}
	if want := fmt.Sprintf("arbor: exec: %d of 16 targets failed\n", len(failed)); !strings.Contains(stderr, want) {
		t.Errorf("stderr lacks %q", want)
	}
	if t.Failed() {
		t.Fatalf("failed: %v\nstdout:\n%s\nstderr:\n%s", failed, stdout, stderr)
	}
	t.Logf("failed through the dead gateway: %v; the other %d finished\n%s", failed, 16-len(failed), stderr)
}

// agentOf finds the agent that sshd runs for alias (its environment
// holds TEST_HOST=alias) among sshd's descendants; 0 when there is none
// yet.
func agentOf(sshdPID int, alias string) int {
	for _, p := range descendants(sshdPID) {
		env, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", p.PID))
		a := argv(p.PID)
		if len(a) == 0 || !bytes.Contains(append([]byte{0}, env...), []byte("\x00TEST_HOST="+alias+"\x00")) {
			continue
		}
		if b := filepath.Base(a[0]); b == "sh" || b == "ssh" || b == "sleep" || strings.HasPrefix(b, "sshd") {
			continue
		}
		return p.PID
	}
	return 0
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
