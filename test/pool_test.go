package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/arbor-project/arbor/internal/sshdtest"
)

// These tests run arbor serve's pool of warm nodes (control/pool.go) with
// the real binary: one-shot --to commands go through a running daemon.

// poolEntry is one path of `arbor pool --json`.
type poolEntry struct {
	Path  string `json:"path"`
	Floor int    `json:"floor"`
	Nodes []struct {
		ID    uint32  `json:"id"`
		Name  string  `json:"name"`
		Users int     `json:"users"`
		IdleS float64 `json:"idle_s"`
	} `json:"nodes"`
	Building  int                       `json:"building"`
	Queue     []struct{ Client uint32 } `json:"queue"`
	LastError string                    `json:"last_error"`
}

func (s *server) pool(t *testing.T) map[string]poolEntry {
	t.Helper()
	var es []poolEntry
	out := s.must(t, "pool", "--json")
	if err := json.Unmarshal([]byte(out), &es); err != nil {
		t.Fatalf("pool --json: %v\n%s", err, out)
	}
	m := map[string]poolEntry{}
	for _, e := range es {
		m[e.Path] = e
	}
	return m
}

// waitPool polls arbor pool until ok holds for path's entry.
func (s *server) waitPool(t *testing.T, path, what string, ok func(poolEntry) bool) poolEntry {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		e := s.pool(t)[path]
		if ok(e) {
			return e
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool for %s: never %s; last %+v", path, what, e)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sshCounter is an ssh wrapper that logs each invocation to a file.
func sshCounter(t *testing.T) (wrapper string, count func() int) {
	dir := t.TempDir()
	log := filepath.Join(dir, "ssh.log")
	wrapper = filepath.Join(dir, "ssh-wrapper")
	if err := os.WriteFile(wrapper, []byte("#!/bin/sh\necho \"$@\" >> "+log+"\nexec ssh \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return wrapper, func() int {
		b, _ := os.ReadFile(log)
		return bytes.Count(b, []byte("\n"))
	}
}

// watchEvents streams `arbor watch --json` and returns its events of kind.
type watchStream struct {
	st *streaming
}

func (s *server) watchJSON(t *testing.T) *watchStream {
	t.Helper()
	w := &watchStream{st: s.start(t, "--log-level", "info", "watch", "--json")}
	w.st.stderr.waitLine(t, regexp.MustCompile(`watching the tree`), cliTimeout)
	return w
}

type watchEv struct {
	Event string    `json:"event"`
	ID    uint32    `json:"id"`
	Name  string    `json:"name"`
	Path  string    `json:"path"`
	Time  time.Time `json:"time"`
	Cause string    `json:"cause"`
}

func (w *watchStream) events(kind, path string) []watchEv {
	var out []watchEv
	for _, l := range strings.Split(w.st.stdout.String(), "\n") {
		var e watchEv
		if json.Unmarshal([]byte(l), &e) == nil && e.Event == kind && (path == "" || e.Path == path) {
			out = append(out, e)
		}
	}
	return out
}

// waitEvents waits until n events of kind for path have come.
func (w *watchStream) waitEvents(t *testing.T, kind, path string, n int) []watchEv {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		if es := w.events(kind, path); len(es) >= n {
			return es
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %d %s events for %s; watch:\n%s", n, kind, path, w.st.stdout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *server) stop(t *testing.T) {
	t.Helper()
	s.must(t, "stop")
	if code := s.r.wait(t, patience); code != 0 {
		t.Errorf("serve exited %d:\n%s", code, s.r.stderr)
	}
}

// TestPoolSecondExecWarm: through a running daemon the second exec to an
// ssh path opens no new ssh connection; --no-daemon still builds its own.
func TestPoolSecondExecWarm(t *testing.T) {
	sshd := startSSHD(t, sshdtest.Options{})
	wrapper, count := sshCounter(t)
	s := startServe(t, arborArgs(sshFlags(sshd), []string{"--ssh-path", wrapper})...)
	to := "ssh:" + sshdtest.Alias
	for i := range 2 {
		if res := s.run(t, "exec", "--to", to, "--", "id", "-un"); res.code != 0 || string(res.stdout) != "root\n" {
			t.Fatalf("run %d: %s", i+1, res)
		}
	}
	if n := count(); n != 1 {
		t.Fatalf("%d ssh connections for two runs through the daemon, want 1", n)
	}
	// ping --to goes through the pool too: the warm node, no new connection.
	if res := s.run(t, "ping", "--to", to); res.code != 0 || !strings.Contains(string(res.stdout), "hop 1:") {
		t.Fatalf("ping --to: %s", res)
	}
	if n := count(); n != 1 {
		t.Fatalf("%d ssh connections after ping --to through the daemon, want 1", n)
	}
	if res := s.run(t, arborArgs(sshFlags(sshd), []string{"--ssh-path", wrapper, "--no-daemon", "exec", "--to", to, "--", "true"})...); res.code != 0 {
		t.Fatalf("--no-daemon: %s", res)
	}
	if n := count(); n != 2 {
		t.Fatalf("%d ssh connections after a --no-daemon run, want 2", n)
	}
	s.stop(t)
}

// TestPoolBurstOneBuild: 50 concurrent requests for one cold path start
// exactly one build (one ssh connection) and are all served.
func TestPoolBurstOneBuild(t *testing.T) {
	sshd := startSSHD(t, sshdtest.Options{})
	wrapper, count := sshCounter(t)
	s := startServe(t, arborArgs(sshFlags(sshd), []string{"--ssh-path", wrapper, "--max-clients", "64"})...)
	w := s.watchJSON(t)
	to := "ssh:" + sshdtest.Alias
	var wg sync.WaitGroup
	results := make([]result, 50)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = s.run(t, "exec", "--to", to, "--", "echo", "ok")
		}()
	}
	wg.Wait()
	for i, res := range results {
		if res.code != 0 || string(res.stdout) != "ok\n" {
			t.Errorf("request %d: %s", i, res)
		}
	}
	if n := count(); n != 1 {
		t.Fatalf("%d ssh connections for a burst of 50, want 1", n)
	}
	if n := len(w.events("pool_build", to)); n != 1 {
		t.Fatalf("%d pool_build events, want 1:\n%s", n, w.st.stdout)
	}
	s.stop(t)
}

// TestPoolFloorReplenish: a floor of 2; kill -9 one node: the pool is back
// to 2 and requests made meanwhile all succeed.
func TestPoolFloorReplenish(t *testing.T) {
	s := startServe(t)
	w := s.watchJSON(t)
	s.must(t, "pool", "keep", "local", "--min", "2")
	e := s.waitPool(t, "local", "2 nodes", func(e poolEntry) bool { return len(e.Nodes) == 2 })
	victim := s.tree(t).find(e.Nodes[0].ID)
	if victim == nil {
		t.Fatalf("pool node %d not in the tree", e.Nodes[0].ID)
	}
	if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	w.waitEvents(t, "pool_lost", "local", 1)
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if res := s.run(t, "exec", "--to", "local", "--", "true"); res.code != 0 {
				t.Errorf("request %d after the kill: %s", i, res)
			}
		}()
	}
	wg.Wait()
	w.waitEvents(t, "pool_replenish", "local", 3) // 2 for the floor, 1 after the kill
	s.waitPool(t, "local", "back to 2 nodes", func(e poolEntry) bool {
		return len(e.Nodes) == 2 && e.Nodes[0].ID != victim.ID && e.Nodes[1].ID != victim.ID
	})
	if got := s.pool(t)["local"]; len(got.Nodes)+got.Building != 2 {
		t.Fatalf("pool holds %+v, want exactly the floor of 2", got)
	}
	s.stop(t)
}

// TestPoolBackoff: a path whose host refuses connections is retried with
// growing gaps (1, 2, 4 … s with jitter), never in a tight loop, and a
// request for it fails at once with the last error and the next try.
func TestPoolBackoff(t *testing.T) {
	s := startServe(t)
	w := s.watchJSON(t)
	const to = "ssh:127.0.0.1:1"
	start := time.Now()
	s.must(t, "pool", "keep", to, "--min", "1")
	w.waitEvents(t, "pool_failed", to, 1)
	res := s.run(t, "exec", "--to", to, "--", "true")
	if res.code != 255 || !strings.Contains(string(res.stderr), "next try in") {
		t.Fatalf("request in backoff: want exit 255 with the next try, got %s", res)
	}
	time.Sleep(time.Until(start.Add(20 * time.Second))) // the window builds are counted over
	fails := w.events("pool_failed", to)
	if len(fails) < 3 || len(fails) > 8 {
		t.Fatalf("%d failed builds in 20 s, want 3 to 8 (1, 2, 4, 8 s apart):\n%s", len(fails), w.st.stdout)
	}
	var prev time.Duration
	for i := 1; i < len(fails); i++ {
		gap := fails[i].Time.Sub(fails[i-1].Time)
		t.Logf("gap %d: %s", i, gap)
		if gap <= prev {
			t.Errorf("gap %d (%s) not longer than the one before (%s)", i, gap, prev)
		}
		prev = gap
	}
	if e := s.pool(t)[to]; e.LastError == "" {
		t.Errorf("arbor pool shows no last error for %s: %+v", to, e)
	}
	s.stop(t)
}

// TestPoolIdleTTL: a node unused past the TTL is shut down and its process
// is gone; a node under a floor stays however long it is idle.
func TestPoolIdleTTL(t *testing.T) {
	s := startServe(t, "--idle-ttl", "1s")
	w := s.watchJSON(t)
	s.must(t, "exec", "--to", "local", "--", "true")
	e := s.pool(t)["local"]
	if len(e.Nodes) != 1 {
		t.Fatalf("pool after one exec: %+v", e)
	}
	n := s.tree(t).find(e.Nodes[0].ID)
	p := procOf(t, n.PID)
	w.waitEvents(t, "pool_destroyed", "local", 1)
	requireExited(t, "the idle node", []proc{p}, patience)

	s.must(t, "pool", "keep", "local", "--min", "1")
	kept := s.waitPool(t, "local", "1 node", func(e poolEntry) bool { return len(e.Nodes) == 1 })
	s.waitPool(t, "local", "idle for 3 TTLs", func(e poolEntry) bool { return len(e.Nodes) == 1 && e.Nodes[0].IdleS > 3 })
	if got := s.pool(t)["local"]; len(got.Nodes) != 1 || got.Nodes[0].ID != kept.Nodes[0].ID {
		t.Fatalf("the node under the floor was not kept: %+v", got)
	}
	if n := len(w.events("pool_destroyed", "local")); n != 1 {
		t.Fatalf("%d nodes destroyed, want only the first", n)
	}
	s.stop(t)
}

// TestPoolQueueDeadline: a request queued on a build that does not end
// fails at its deadline with the pool's message and leaves the queue; an
// interrupted client leaves it at once.
func TestPoolQueueDeadline(t *testing.T) {
	hang := writeScript(t, "ssh-hang", "#!/bin/sh\nexec sleep 600\n")
	s := startServe(t, "--ssh-path", hang, "--connect-timeout", "10m")
	const to = "ssh:slow"
	res := s.run(t, "--timeout", "2s", "exec", "--to", to, "--", "true")
	want := regexp.MustCompile(`timed out waiting for a connection to ssh:slow \(build in progress for \d+\.\d s\)`)
	if res.code != 255 || !want.Match(res.stderr) {
		t.Fatalf("want exit 255 and %q, got %s", want, res)
	}
	s.waitPool(t, to, "an empty queue and the build still running", func(e poolEntry) bool { return len(e.Queue) == 0 && e.Building == 1 })

	c := s.start(t, "exec", "--to", to, "--", "true")
	s.waitPool(t, to, "one queued request", func(e poolEntry) bool { return len(e.Queue) == 1 })
	if err := c.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	c.wait(t, patience)
	s.waitPool(t, to, "the interrupted request gone", func(e poolEntry) bool { return len(e.Queue) == 0 })
	s.stop(t)
}

// TestPoolPersist: --persist 2s starts arbor serve in the background; the
// next command is served by the same warm node; the daemon exits by
// itself after 2 s without requests, leaving no process.
func TestPoolPersist(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "run", "arbor.sock")
	first := runArbor(t, "--socket", socket, "--persist", "2s", "exec", "--to", "local", "--", "echo", "one")
	if first.code != 0 || string(first.stdout) != "one\n" {
		t.Fatalf("first run: %s", first)
	}
	s := &server{socket: socket}
	tree := s.tree(t)
	serve := procOf(t, tree.PID)
	t.Cleanup(func() {
		if serve.running() {
			_ = syscall.Kill(serve.PID, syscall.SIGKILL)
		}
	})
	e := s.pool(t)["local"]
	if len(e.Nodes) != 1 {
		t.Fatalf("pool after the first run: %+v", e)
	}
	node := procOf(t, tree.find(e.Nodes[0].ID).PID)
	second := runArbor(t, "--socket", socket, "--persist", "2s", "--log-level", "info", "exec", "--to", "local", "--", "echo", "two")
	if second.code != 0 || string(second.stdout) != "two\n" || strings.Contains(string(second.stderr), "started arbor serve") {
		t.Fatalf("second run: %s", second)
	}
	if got := s.pool(t)["local"]; len(got.Nodes) != 1 || got.Nodes[0].ID != e.Nodes[0].ID {
		t.Fatalf("second run was not served by the warm node %d: %+v", e.Nodes[0].ID, got)
	}
	requireExited(t, "the persisted daemon and its node", []proc{serve, node}, patience)
	if _, err := os.Stat(socket); !os.IsNotExist(err) {
		t.Errorf("socket still there after the daemon exited: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(filepath.Dir(socket), "serve.log")); !bytes.Contains(b, []byte("no request for 2s")) {
		t.Errorf("serve.log does not say why it stopped:\n%s", b)
	}
}

// BenchmarkPoolExec compares a one-shot exec over ssh with the same exec
// through a daemon's warm node and with exec NODE on a node spawned in the
// daemon (numbers for the README; nothing is asserted).
func BenchmarkPoolExec(b *testing.B) {
	sshd, err := sshdtest.Start("", sshdtest.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer sshd.Stop()
	to := "ssh:" + sshdtest.Alias
	socket := filepath.Join(b.TempDir(), "arbor.sock")
	run := func(b *testing.B, args ...string) {
		b.Helper()
		if out, err := exec.Command(arborBin, append([]string{"--socket", socket}, args...)...).CombinedOutput(); err != nil {
			b.Fatalf("arbor %q: %v\n%s", args, err, out)
		}
	}
	loop := func(b *testing.B, args ...string) {
		for b.Loop() {
			run(b, args...)
		}
	}
	b.Run("one-shot", func(b *testing.B) { loop(b, "--ssh-config", sshd.ConfigFile, "exec", "--to", to, "--", "true") })
	serve := exec.Command(arborBin, "--socket", socket, "--ssh-config", sshd.ConfigFile, "serve")
	if err := serve.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = exec.Command(arborBin, "--socket", socket, "stop").Run()
		_ = serve.Wait()
	}()
	for deadline := time.Now().Add(patience); exec.Command(arborBin, "--socket", socket, "pool").Run() != nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("arbor serve did not start")
		}
	}
	b.Run("first-through-daemon", func(b *testing.B) {
		for b.Loop() {
			run(b, "exec", "--to", to, "--", "true")
			// Cold again: the pool's node goes (not timed).
			b.StopTimer()
			out, _ := exec.Command(arborBin, "--socket", socket, "pool", "--json").Output()
			var es []poolEntry
			if json.Unmarshal(out, &es) != nil || len(es) != 1 || len(es[0].Nodes) != 1 {
				b.Fatalf("pool: %s", out)
			}
			run(b, "kill", fmt.Sprint(es[0].Nodes[0].ID))
			b.StartTimer()
		}
	})
	b.Run("second-through-daemon", func(b *testing.B) {
		run(b, "exec", "--to", to, "--", "true") // warm, before b.Loop starts the timer
		loop(b, "exec", "--to", to, "--", "true")
	})
	run(b, "spawn", to, "--name", "benchnode")
	b.Run("exec-NODE", func(b *testing.B) { loop(b, "exec", "benchnode", "--", "true") })
}
