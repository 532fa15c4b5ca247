package test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// server is an arbor serve started by a test on a socket of its own.
type server struct {
	socket string
	r      *running
}

// startServe starts `arbor serve` on a fresh socket (in a directory that
// does not exist yet) with extra args, and waits until it listens.
func startServe(t *testing.T, args ...string) *server {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "run", "arbor.sock")
	return startServeAt(t, socket, args...)
}

func startServeAt(t *testing.T, socket string, args ...string) *server {
	t.Helper()
	s := &server{socket: socket}
	s.r = startArbor(t, append([]string{"--socket", socket, "serve"}, args...)...)
	s.r.stderr.waitLine(t, regexp.MustCompile(`arbor serve: listening on `), cliTimeout)
	return s
}

// run runs an arbor command against the server.
func (s *server) run(t *testing.T, args ...string) result {
	t.Helper()
	return runArbor(t, append([]string{"--socket", s.socket}, args...)...)
}

// must runs an arbor command against the server and fails the test unless
// it exits 0.
func (s *server) must(t *testing.T, args ...string) string {
	t.Helper()
	res := s.run(t, args...)
	if res.code != 0 {
		t.Fatalf("arbor %q: %s", args, res)
	}
	return string(res.stdout)
}

// start starts an arbor command against the server whose stdout can be
// waited on line by line.
func (s *server) start(t *testing.T, args ...string) *streaming {
	t.Helper()
	return startStreaming(t, append([]string{"--socket", s.socket}, args...)...)
}

// pid is the serve process's.
func (s *server) pid() int { return s.r.cmd.Process.Pid }

// treeNode is one node of `arbor tree --json`.
type treeNode struct {
	ID       uint32      `json:"id"`
	Name     string      `json:"name"`
	Method   string      `json:"method"`
	Host     string      `json:"host"`
	PID      int         `json:"pid"`
	State    string      `json:"state"`
	RTTMs    float64     `json:"rtt_ms"`
	Children []*treeNode `json:"children"`
}

func (s *server) tree(t *testing.T) *treeNode {
	t.Helper()
	var root treeNode
	out := s.must(t, "tree", "--json")
	if err := json.Unmarshal([]byte(out), &root); err != nil {
		t.Fatalf("tree --json: %v\n%s", err, out)
	}
	return &root
}

// ids lists every ID in the tree below n, n's own included.
func (n *treeNode) ids() []uint32 {
	out := []uint32{n.ID}
	for _, c := range n.Children {
		out = append(out, c.ids()...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// shape renders the tree's structure by ID: "0(1(2(3),4))".
func (n *treeNode) shape() string {
	if len(n.Children) == 0 {
		return fmt.Sprint(n.ID)
	}
	parts := make([]string, len(n.Children))
	for i, c := range n.Children {
		parts[i] = c.shape()
	}
	return fmt.Sprintf("%d(%s)", n.ID, strings.Join(parts, ","))
}

func (n *treeNode) find(id uint32) *treeNode {
	if n.ID == id {
		return n
	}
	for _, c := range n.Children {
		if f := c.find(id); f != nil {
			return f
		}
	}
	return nil
}

// spawnID runs `arbor spawn --json` and returns the new node's ID and name.
func (s *server) spawnID(t *testing.T, args ...string) (uint32, string) {
	t.Helper()
	var res struct {
		ID   uint32 `json:"id"`
		Name string `json:"name"`
	}
	out := s.must(t, append([]string{"spawn", "--json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("spawn --json: %v\n%s", err, out)
	}
	return res.ID, res.Name
}

// streaming is an arbor command whose stdout is read while it runs.
type streaming struct {
	cmd    *exec.Cmd
	stdout *logBuffer
	stderr *logBuffer
	exited chan struct{}
	err    error
}

func startStreaming(t *testing.T, args ...string) *streaming {
	t.Helper()
	st := &streaming{cmd: exec.Command(arborBin, args...), stdout: newLogBuffer(), stderr: newLogBuffer(), exited: make(chan struct{})}
	st.cmd.Stdout, st.cmd.Stderr = st.stdout, st.stderr
	st.cmd.WaitDelay = 5 * time.Second
	if err := st.cmd.Start(); err != nil {
		t.Fatalf("starting arbor %q: %v", args, err)
	}
	go func() {
		st.err = st.cmd.Wait()
		close(st.exited)
	}()
	t.Cleanup(func() {
		_ = st.cmd.Process.Kill()
		<-st.exited
	})
	return st
}

// wait waits for the command to exit and returns its exit status.
func (st *streaming) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-st.exited:
	case <-time.After(timeout):
		t.Fatalf("arbor %q did not exit within %s; stderr:\n%s", st.cmd.Args, timeout, st.stderr)
	}
	if ee, ok := st.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return 0
}

// watchEvent is one line of `arbor watch --json`.
type watchEvent struct {
	Event string `json:"event"`
	ID    uint32 `json:"id"`
	Name  string `json:"name"`
	Time  string `json:"time"`
	Cause string `json:"cause"`
}

// startWatch starts `arbor watch --json` and returns once it is subscribed.
func (s *server) startWatch(t *testing.T) *streaming {
	t.Helper()
	w := s.start(t, "--log-level", "info", "watch", "--json")
	w.stderr.waitLine(t, regexp.MustCompile(`watching the tree`), cliTimeout)
	return w
}

// waitEvent waits for a watch event of kind about node id and returns it.
func (st *streaming) waitEvent(t *testing.T, kind string, id uint32, timeout time.Duration) watchEvent {
	t.Helper()
	re := regexp.MustCompile(fmt.Sprintf(`^\{"event":"%s","id":%d,`, regexp.QuoteMeta(kind), id))
	line := st.stdout.waitLine(t, re, timeout)
	var e watchEvent
	full := st.stdout.lineMatching(re)
	if err := json.Unmarshal([]byte(full), &e); err != nil {
		t.Fatalf("watch line %q: %v (%v)", full, err, line)
	}
	if _, err := time.Parse(time.RFC3339, e.Time); err != nil {
		t.Fatalf("watch line %q: time is not RFC 3339: %v", full, err)
	}
	return e
}

// lineMatching returns the first full line matching re.
func (b *logBuffer) lineMatching(re *regexp.Regexp) string {
	for _, line := range strings.Split(b.String(), "\n") {
		if re.MatchString(line) {
			return line
		}
	}
	return ""
}

// TestServeSpawnTree: spawn local/local/local, then local/local (the first
// hop reused): tree --json has exactly that shape; routes --at the first
// node lists the right IDs via the right children; names resolve, reused
// names are idempotent, unknown nodes are exit 2.
func TestServeSpawnTree(t *testing.T) {
	s := startServe(t)
	c, cName := s.spawnID(t, "local/local/local")
	d, _ := s.spawnID(t, "local/local")
	root := s.tree(t)
	if len(root.Children) != 1 {
		t.Fatalf("root has %d children, want 1 (the first hop reused): %s", len(root.Children), root.shape())
	}
	a := root.Children[0]
	if len(a.Children) != 2 || len(a.Children[0].Children) != 1 || len(a.Children[1].Children) != 0 {
		t.Fatalf("tree shape %s, want 0(A(B(C),D))", root.shape())
	}
	b := a.Children[0]
	if got, want := root.shape(), fmt.Sprintf("0(%d(%d(%d),%d))", a.ID, b.ID, c, d); got != want {
		t.Fatalf("tree shape %s, want %s", got, want)
	}
	if b.Children[0].Name != cName {
		t.Errorf("leaf name %q, want %q", b.Children[0].Name, cName)
	}
	for _, n := range []*treeNode{a, b, b.Children[0], a.Children[1]} {
		if n.Method != "local" || n.State != "up" || n.PID == 0 || n.Host == "" {
			t.Errorf("node %d: method %q state %q pid %d host %q, want local, up, a pid and a host", n.ID, n.Method, n.State, n.PID, n.Host)
		}
		if p, ok := readProc(n.PID); !ok || !p.running() {
			t.Errorf("node %d: pid %d is not running", n.ID, n.PID)
		}
	}

	// routes --at the first node: B and C via B, D via D.
	var rt struct {
		Nodes []struct {
			ID     uint32 `json:"id"`
			Routes []struct {
				ID  uint32 `json:"id"`
				Via uint32 `json:"via"`
			} `json:"routes"`
		} `json:"nodes"`
	}
	out := s.must(t, "routes", "--at", fmt.Sprint(a.ID), "--json")
	if err := json.Unmarshal([]byte(out), &rt); err != nil || len(rt.Nodes) != 1 {
		t.Fatalf("routes --json: %v\n%s", err, out)
	}
	got := map[uint32]uint32{}
	for _, r := range rt.Nodes[0].Routes {
		got[r.ID] = r.Via
	}
	want := map[uint32]uint32{b.ID: b.ID, c: b.ID, d: d}
	if rt.Nodes[0].ID != a.ID || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("routes at %d: %v (node %d), want %v", a.ID, got, rt.Nodes[0].ID, want)
	}
	// The root's table lists the tree and not the CLI clients.
	out = s.must(t, "routes", "--json")
	if err := json.Unmarshal([]byte(out), &rt); err != nil {
		t.Fatal(err)
	}
	if n := len(rt.Nodes[0].Routes); n != 4 {
		t.Fatalf("root routes: %d, want 4 (no clients): %s", n, out)
	}

	// Names: a named node, reused when asked again; resolvable as NODE.
	w1, wName := s.spawnID(t, "local", "--name", "web")
	if w2, _ := s.spawnID(t, "local", "--name", "web"); w2 != w1 {
		t.Errorf("spawn --name web twice: %d then %d, want the same node", w1, w2)
	}
	if wName != "web" {
		t.Errorf("named node is %q, want web", wName)
	}
	var info struct {
		ID uint32 `json:"id"`
	}
	if err := json.Unmarshal([]byte(s.must(t, "call", "web", "agent.info")), &info); err != nil || info.ID != w1 {
		t.Fatalf("call web agent.info: id %d (%v), want %d", info.ID, err, w1)
	}
	if res := s.run(t, "exec", "web", "--", "sh", "-c", "echo hi; exit 3"); res.code != 3 || string(res.stdout) != "hi\n" {
		t.Errorf("exec web: %s; want hi and exit 3", res)
	}
	if out := s.must(t, "ping", fmt.Sprint(c)); strings.Count(out, "hop ") != 3 {
		t.Errorf("ping %d: want 3 hops:\n%s", c, out)
	}
	if res := s.run(t, "call", "nosuch", "agent.ping"); res.code != 2 || !strings.Contains(string(res.stderr), "unknown node") {
		t.Errorf("call on an unknown node: %s; want exit 2, unknown node", res)
	}
	if res := s.run(t, "call", "99999", "agent.ping"); res.code != 2 {
		t.Errorf("call on an unknown ID: %s; want exit 2", res)
	}
	// kill NODE takes the subtree down.
	s.must(t, "kill", fmt.Sprint(b.ID))
	if got := s.tree(t).ids(); fmt.Sprint(got) != fmt.Sprint([]uint32{0, a.ID, d, w1}) {
		t.Errorf("after kill %d: tree has %v", b.ID, got)
	}
	s.must(t, "stop")
	if code := s.r.wait(t, cliTimeout); code != 0 {
		t.Fatalf("serve exited %d after stop; stderr:\n%s", code, s.r.stderr)
	}
}

// TestServeWatchKill: a middle node killed with SIGKILL: watch reports
// DEL_ROUTE for every lost ID, and tree no longer lists them.
func TestServeWatchKill(t *testing.T) {
	s := startServe(t)
	leaf, _ := s.spawnID(t, "local/local/local/local")
	root := s.tree(t)
	mid := root.Children[0].Children[0] // second hop: takes two nodes with it
	lost := mid.ids()
	if len(lost) != 3 || lost[len(lost)-1] != leaf {
		t.Fatalf("subtree of %d is %v, want 3 nodes ending at %d", mid.ID, lost, leaf)
	}
	w := s.startWatch(t)
	if err := syscall.Kill(mid.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for _, id := range lost {
		e := w.waitEvent(t, "del_route", id, cliTimeout)
		if e.Cause == "" || e.Name == "" {
			t.Errorf("del_route %d: no cause or name: %+v", id, e)
		}
	}
	after := s.tree(t)
	for _, id := range lost {
		if after.find(id) != nil {
			t.Errorf("tree still lists %d after its link died: %s", id, after.shape())
		}
	}
	if got := after.ids(); len(got) != 2 {
		t.Errorf("tree after the kill: %v, want the root and the first hop", got)
	}
}

// TestServeHeartbeat: SIGSTOP on a leaf is UNRESPONSIVE, SIGCONT brings it
// back UP; held past the DOWN threshold it is DOWN, its subtree is removed,
// and a call pending on it fails with "heartbeat timeout" naming it.
func TestServeHeartbeat(t *testing.T) {
	s := startServe(t, "--log-level", "info", "--heartbeat", "100ms", "--unresponsive-after", "1s", "--down-after", "4s")
	leaf, leafName := s.spawnID(t, "local/local")
	n := s.tree(t).find(leaf)
	if n == nil {
		t.Fatalf("leaf %d not in the tree", leaf)
	}
	w := s.startWatch(t)
	p := procOf(t, n.PID)
	t.Cleanup(func() { _ = syscall.Kill(p.PID, syscall.SIGCONT) })

	// Stopped, then resumed before the DOWN threshold.
	if err := syscall.Kill(p.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	w.waitEvent(t, "unresponsive", leaf, cliTimeout)
	if st := s.tree(t).find(leaf); st == nil || st.State != "unresponsive" {
		t.Errorf("tree during SIGSTOP: %+v, want the leaf unresponsive", st)
	}
	if err := syscall.Kill(p.PID, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	w.waitEvent(t, "up", leaf, cliTimeout)

	// A call pending on the leaf, then a stop held past the threshold.
	call := s.start(t, "call", fmt.Sprint(leaf), "agent.sleep", `{"seconds":120}`)
	s.r.stderr.waitLine(t, regexp.MustCompile(`agent.sleep started`), cliTimeout)
	if err := syscall.Kill(p.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	down := w.waitEvent(t, "down", leaf, cliTimeout)
	if !strings.Contains(down.Cause, "heartbeat timeout") {
		t.Errorf("down event cause %q, want heartbeat timeout", down.Cause)
	}
	w.waitEvent(t, "del_route", leaf, cliTimeout)
	if code := call.wait(t, cliTimeout); code != 255 {
		t.Errorf("pending call exited %d, want 255; stderr:\n%s", code, call.stderr)
	}
	if msg := call.stderr.String(); !strings.Contains(msg, "heartbeat timeout") || !strings.Contains(msg, leafName) {
		t.Errorf("pending call failed with %q, want heartbeat timeout naming %s", msg, leafName)
	}
	if s.tree(t).find(leaf) != nil {
		t.Errorf("tree still lists the DOWN node %d", leaf)
	}
	// Its parent killed it: no process is left stopped.
	requireExited(t, "the DOWN node", []proc{p}, 15*time.Second)
}

// TestServeStop: arbor stop and SIGTERM take the whole tree down and
// remove the socket; nothing is left running.
func TestServeStop(t *testing.T) {
	for _, how := range []string{"arbor stop", "SIGTERM"} {
		t.Run(how, func(t *testing.T) {
			s := startServe(t)
			s.spawnID(t, "local/local/local")
			s.spawnID(t, "local/local")
			procs := descendants(s.pid())
			if len(procs) != 4 {
				t.Fatalf("%d processes under serve, want 4 agents: %v", len(procs), procs)
			}
			if how == "SIGTERM" {
				_ = syscall.Kill(s.pid(), syscall.SIGTERM)
			} else {
				s.must(t, "stop")
			}
			if code := s.r.wait(t, cliTimeout); code != 0 {
				t.Fatalf("serve exited %d; stderr:\n%s", code, s.r.stderr)
			}
			requireExited(t, "agents after "+how, procs, 10*time.Second)
			if _, err := os.Lstat(s.socket); !os.IsNotExist(err) {
				t.Errorf("socket still there after %s: %v", how, err)
			}
			if res := s.run(t, "tree"); res.code != 255 || !strings.Contains(string(res.stderr), "not running") {
				t.Errorf("tree after %s: %s; want exit 255, not running", how, res)
			}
		})
	}
}

// TestServeKilled: SIGKILL of serve leaves no process behind, and the
// stale socket file it leaves is reported by clients and recovered by the
// next serve.
func TestServeKilled(t *testing.T) {
	s := startServe(t)
	s.spawnID(t, "local/local/local")
	procs := descendants(s.pid())
	if len(procs) != 3 {
		t.Fatalf("%d processes under serve, want 3: %v", len(procs), procs)
	}
	_ = s.r.cmd.Process.Kill()
	s.r.wait(t, cliTimeout)
	requireExited(t, "agents after SIGKILL of serve", procs, 15*time.Second)
	if _, err := os.Lstat(s.socket); err != nil {
		t.Fatalf("the killed server left no socket file to recover: %v", err)
	}
	res := s.run(t, "tree")
	if res.code != 255 || !strings.Contains(string(res.stderr), "stale socket") {
		t.Fatalf("tree on a stale socket: %s; want exit 255, stale socket", res)
	}
	s2 := startServeAt(t, s.socket)
	if !strings.Contains(s2.r.stderr.String(), "removed a stale socket") {
		t.Errorf("second serve did not report the stale socket:\n%s", s2.r.stderr)
	}
	s2.must(t, "tree")
	s2.must(t, "stop")
	s2.r.wait(t, cliTimeout)
}

// TestServeSocket: the directory is 0700 and the socket 0600; a second
// serve on the same socket refuses; ARBOR_SOCKET names the socket.
func TestServeSocket(t *testing.T) {
	s := startServe(t)
	st, err := os.Stat(filepath.Dir(s.socket))
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("socket directory: %v, mode %v; want 0700", err, st.Mode().Perm())
	}
	st, err = os.Lstat(s.socket)
	if err != nil || st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Errorf("socket: %v, mode %v; want a socket, 0600", err, st.Mode())
	}
	res := runArbor(t, "--socket", s.socket, "serve")
	if res.code == 0 || !strings.Contains(string(res.stderr), "already running") || !strings.Contains(string(res.stderr), strconv.Itoa(s.pid())) {
		t.Errorf("second serve: %s; want a refusal naming pid %d", res, s.pid())
	}
	cmd := exec.Command(arborBin, "tree")
	cmd.Env = append(os.Environ(), "ARBOR_SOCKET="+s.socket)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "root") {
		t.Errorf("tree with ARBOR_SOCKET: %v\n%s", err, out)
	}
	if res := runArbor(t, "--socket", filepath.Join(t.TempDir(), "none.sock"), "tree"); res.code != 255 || !strings.Contains(string(res.stderr), "not running") {
		t.Errorf("tree with no server: %s; want exit 255, not running", res)
	}
}

// TestServeAdmission: with every client slot held, further clients wait
// (and all complete once slots free); one whose --timeout passes while
// waiting gets a clear error.
func TestServeAdmission(t *testing.T) {
	s := startServe(t, "--max-clients", "2")
	holders := []*streaming{s.startWatch(t), s.startWatch(t)}
	busy := s.run(t, "--timeout", "1s", "tree")
	re := regexp.MustCompile(`arbor serve at .* is busy: waited [0-9.]+m?s for a client slot`)
	if busy.code != 255 || !re.Match(busy.stderr) {
		t.Errorf("client past its timeout: %s; want exit 255 and %q", busy, re)
	}
	var waiting []*streaming
	for i := 0; i < 5; i++ {
		c := s.start(t, "--log-level", "info", "tree", "--json")
		waiting = append(waiting, c)
	}
	for _, c := range waiting {
		c.stderr.waitLine(t, regexp.MustCompile(`waiting for a client slot`), cliTimeout)
	}
	for _, h := range holders {
		_ = h.cmd.Process.Signal(syscall.SIGINT)
	}
	for i, c := range waiting {
		if code := c.wait(t, cliTimeout); code != 0 || !strings.Contains(c.stdout.String(), `"id":0`) {
			t.Errorf("waiting client %d: exit %d, stdout %q, stderr %q", i, code, c.stdout, c.stderr)
		}
	}
	for _, h := range holders {
		if code := h.wait(t, cliTimeout); code != 0 {
			t.Errorf("watch interrupted: exit %d; stderr:\n%s", code, h.stderr)
		}
	}
}
