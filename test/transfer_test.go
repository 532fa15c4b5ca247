package test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/transfer"
	"golang.org/x/sys/unix"
)

// summaryJSON is what push and pull print with --json.
type summaryJSON struct {
	Bytes   int64   `json:"bytes"`
	Files   int64   `json:"files"`
	Seconds float64 `json:"seconds"`
	SHA256  string  `json:"sha256"`
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// randomFile writes n random bytes to path.
func randomFile(t *testing.T, path string, n int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.CopyN(f, rand.Reader, n); err != nil {
		t.Fatal(err)
	}
}

// TestPushPull512MiB3Hops pushes a 512 MiB random file to the node three
// hops down and pulls it back: both copies have the original's SHA-256,
// which is also what --json reports.
func TestPushPull512MiB3Hops(t *testing.T) {
	if testing.Short() {
		t.Skip("512 MiB transfer")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	randomFile(t, src, 512<<20)
	want := fileSHA256(t, src)
	pushed, pulled := filepath.Join(dir, "pushed"), filepath.Join(dir, "pulled")
	for _, c := range []struct {
		verb, from, to string
	}{{"push", src, pushed}, {"pull", pushed, pulled}} {
		res := runArbor(t, c.verb, "--to", localPath(3), "--json", c.from, c.to)
		if res.code != 0 {
			t.Fatalf("%s: %v", c.verb, res)
		}
		if len(res.stderr) != 0 {
			t.Errorf("%s: stderr is not a terminal, yet: %q", c.verb, res.stderr)
		}
		var sum summaryJSON
		if err := json.Unmarshal(res.stdout, &sum); err != nil {
			t.Fatalf("%s --json: %v: %q", c.verb, err, res.stdout)
		}
		if sum.SHA256 != want || sum.Bytes != 512<<20 || sum.Files != 1 {
			t.Fatalf("%s summary %+v, want sha256 %s", c.verb, sum, want)
		}
		if got := fileSHA256(t, c.to); got != want {
			t.Fatalf("%s: %s has SHA-256 %s, want %s", c.verb, c.to, got, want)
		}
		t.Logf("%s of 512 MiB through 3 hops: %.2f s (%.0f MB/s)", c.verb, sum.Seconds, float64(sum.Bytes)/sum.Seconds/1e6)
	}
}

// TestTreeRoundTrip1000 pushes a tree of 1,000 small files in nested
// directories, with modes, an empty file and symlinks, and pulls it back:
// both copies list exactly like the original.
func TestTreeRoundTrip1000(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	writeTestTree(t, src, 1000)

	pushed, pulled := filepath.Join(dir, "pushed"), filepath.Join(dir, "pulled")
	if res := runArbor(t, "push", "-r", "--to", localPath(2), src, pushed); res.code != 0 {
		t.Fatalf("push: %v", res)
	}
	if res := runArbor(t, "pull", "-r", "--to", localPath(2), "--json", pushed, pulled); res.code != 0 {
		t.Fatalf("pull: %v", res)
	} else {
		var sum summaryJSON
		json.Unmarshal(res.stdout, &sum)
		if sum.Files != 1001 {
			t.Errorf("pull summary %+v, want 1001 files", sum)
		}
	}
	want := treeListing(t, src)
	if n := strings.Count(want, "\n"); n < 1000 {
		t.Fatalf("listing has %d lines", n)
	}
	for _, got := range []string{pushed, pulled} {
		if l := treeListing(t, got); l != want {
			t.Fatalf("%s differs from the source:\n%s", got, diffLines(want, l))
		}
	}
}

// writeTestTree makes a tree of n small files in nested directories, with
// modes and modification times, an empty file and two symlinks (one
// dangling).
func writeTestTree(t *testing.T, src string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		d := filepath.Join(src, fmt.Sprintf("d%d", i%10), fmt.Sprintf("e%d", i%7))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(d, fmt.Sprintf("f%d", i))
		if err := os.WriteFile(p, []byte(strings.Repeat(fmt.Sprint(i), i%50+1)), os.FileMode(0o600+i%3*0o44)); err != nil {
			t.Fatal(err)
		}
		mt := time.Unix(1_600_000_000+int64(i)*1000, int64(i))
		os.Chtimes(p, mt, mt)
	}
	os.WriteFile(filepath.Join(src, "d0", "empty"), nil, 0o640)
	os.Chmod(filepath.Join(src, "d3"), 0o750)
	os.Symlink("d0/e0/f0", filepath.Join(src, "link"))
	os.Symlink("../nowhere", filepath.Join(src, "d1", "dangling"))
	mt := time.Unix(1_500_000_000, 0)
	os.Chtimes(filepath.Join(src, "d2"), mt, mt)
}

// treeListing lists a tree: path, type, mode, size (files), mtime (files
// and directories), symlink target.
func treeListing(t *testing.T, root string) string {
	t.Helper()
	out, err := exec.Command("find", root, "-printf", "%P|%y|%m|%s|%T@|%l\n").Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for i, l := range lines {
		f := strings.Split(l, "|")
		switch f[1] {
		case "d":
			f[3] = "-" // directory sizes depend on the file system
		case "l":
			f[4] = "-"
		}
		lines[i] = strings.Join(f, "|")
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func diffLines(a, b string) string {
	as, bs := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out []string
	for i := 0; i < max(len(as), len(bs)) && len(out) < 10; i++ {
		var x, y string
		if i < len(as) {
			x = as[i]
		}
		if i < len(bs) {
			y = bs[i]
		}
		if x != y {
			out = append(out, "want "+x+"\n got "+y)
		}
	}
	return strings.Join(out, "\n")
}

// agentChain finds the agents below the arbor process pid: the first hop,
// its child, and so on, as far as want hops.
func agentChain(pid, want int) []int {
	var chain []int
	parent := pid
	for len(chain) < want {
		next := 0
		for _, p := range descendants(parent) {
			if p.PPID == parent {
				if a := argv(p.PID); len(a) > 1 && a[1] == "__agent" {
					next = p.PID
				}
			}
		}
		if next == 0 {
			return chain
		}
		chain = append(chain, next)
		parent = next
	}
	return chain
}

// TestKillMiddleHopDuringPush kills the middle agent of three while a
// large file is on its way: push fails with exit 255 and an error naming
// the lost node, and the destination has no file under its name and, once
// the last agent is gone, no temporary either.
func TestKillMiddleHopDuringPush(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// Sparse: quick to make, and as long to send as any other bytes.
	if err := os.Truncate(src, 2<<30); err != nil {
		t.Fatal(err)
	}
	destDir := filepath.Join(dir, "dest")
	os.Mkdir(destDir, 0o755)
	dest := filepath.Join(destDir, "file")
	r := startArbor(t, "push", "--to", localPath(3), src, dest)

	// The transfer is under way once its temporary file has data in it;
	// the data came through all three agents.
	waitTempData(t, r, destDir)
	chain := agentChain(r.cmd.Process.Pid, 3)
	if len(chain) != 3 {
		t.Fatalf("data is arriving but the agents below arbor are %v, want a chain of three", chain)
	}
	last := procOf(t, chain[2])
	if err := syscall.Kill(chain[1], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	code := r.wait(t, patience)
	stderr := r.stderr.String()
	if code != 255 {
		t.Fatalf("exit %d, want 255; stderr:\n%s", code, stderr)
	}
	middle := fmt.Sprintf("local.%d/local.%d", chain[0], chain[1])
	if !strings.Contains(stderr, middle) || !strings.Contains(stderr, "lost") {
		t.Fatalf("error does not name the lost node %s:\n%s", middle, stderr)
	}
	t.Logf("push error: %s", strings.TrimSpace(stderr))
	if _, err := os.Lstat(dest); err == nil {
		t.Fatalf("%s exists after a failed transfer", dest)
	}
	requireExited(t, "last agent", []proc{last}, patience)
	if ents, _ := os.ReadDir(destDir); len(ents) != 0 {
		t.Fatalf("left in the destination directory: %v", ents)
	}
}

// waitTempData blocks until a transfer's temporary file in dir holds more
// than 1 MiB, and fails the test if r exits first. It wakes on the
// directory's inotify events (a file created, written or renamed there),
// not on a clock; patience only stops a hang.
func waitTempData(t *testing.T, r *running, dir string) {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatalf("inotify_init1: %v", err)
	}
	// Non-blocking, so read through the runtime poller: Close ends a
	// pending Read.
	f := os.NewFile(uintptr(fd), "inotify")
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_MODIFY|unix.IN_MOVED_TO); err != nil {
		f.Close()
		t.Fatalf("inotify watch on %s: %v", dir, err)
	}
	changed := make(chan struct{}, 1)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		buf := make([]byte, 64<<10)
		for {
			if _, err := f.Read(buf); err != nil {
				return
			}
			select {
			case changed <- struct{}{}:
			default:
			}
		}
	}()
	defer func() {
		f.Close()
		<-readerDone
	}()
	guard := time.NewTimer(patience)
	defer guard.Stop()
	// The watch is in place before the first look: no write is missed.
	for !tempWithData(dir) {
		select {
		case <-changed:
		case <-r.exited:
			t.Fatalf("arbor ended before its transfer was seen under way: %v\n%s", r.err, r.stderr)
		case <-guard.C:
			t.Fatalf("no transfer under way within %s; stderr:\n%s", patience, r.stderr)
		}
	}
}

func tempWithData(dir string) bool {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && strings.Contains(e.Name(), ".arbor-") && fi.Size() > 1<<20 {
			return true
		}
	}
	return false
}

// TestEscapeRefusedCLI: a destination path made of ".." parts is the
// user's choice and works; an entry that would escape is refused by the
// receiver (crafted streams: transfer.TestEscapesRefused); here a tree
// whose symlink points outside arrives as a symlink, and nothing is
// written through it.
func TestEscapeRefusedCLI(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(dir, "outside")
	os.Mkdir(outside, 0o755)
	src := filepath.Join(dir, "src")
	os.Mkdir(src, 0o755)
	os.Symlink(outside, filepath.Join(src, "out"))
	os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644)
	if res := runArbor(t, "push", "-r", "--to", "local", src, filepath.Join(dir, "dst")); res.code != 0 {
		t.Fatalf("%v", res)
	}
	if target, err := os.Readlink(filepath.Join(dir, "dst", "out")); err != nil || target != outside {
		t.Fatalf("symlink arrived as %q, %v", target, err)
	}
	// A second tree named like the first, with a directory where the
	// destination now has that symlink, lands on it and must not write
	// through the symlink.
	src2 := filepath.Join(dir, "src2", "dst")
	os.MkdirAll(filepath.Join(src2, "out"), 0o755)
	os.WriteFile(filepath.Join(src2, "out", "evil"), []byte("x"), 0o644)
	res := runArbor(t, "push", "-r", "--to", "local", src2, dir)
	if res.code == 0 || !strings.Contains(string(res.stderr), "escapes the destination") {
		t.Fatalf("write through a symlink not refused: %v", res)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("written outside the destination: %v", ents)
	}
}

// tightHeartbeat flags a node after 1 s without a frame: a heartbeat that
// queued behind bulk data for longer would be reported.
var tightHeartbeat = agent.HeartbeatConfig{Interval: 100 * time.Millisecond, UnresponsiveAfter: time.Second, DownAfter: 5 * time.Second}

// stateEvents records the root's tree events as they happen.
type stateEvents struct {
	mu      sync.Mutex
	events  []agent.TreeEvent
	changed chan struct{} // closed (and replaced) on every event
}

func recordStates(t *testing.T, root *agent.Node) *stateEvents {
	se := &stateEvents{changed: make(chan struct{})}
	unsub := root.Tree.Subscribe(func(e agent.TreeEvent) {
		se.mu.Lock()
		se.events = append(se.events, e)
		close(se.changed)
		se.changed = make(chan struct{})
		se.mu.Unlock()
	})
	t.Cleanup(unsub)
	return se
}

// since returns the events from the n-th on and the count so far.
func (se *stateEvents) since(n int) ([]agent.TreeEvent, int, <-chan struct{}) {
	se.mu.Lock()
	defer se.mu.Unlock()
	return append([]agent.TreeEvent(nil), se.events[n:]...), len(se.events), se.changed
}

// unhealthy lists the unresponsive and down events from the n-th on.
func (se *stateEvents) unhealthy(n int) []agent.TreeEvent {
	evs, _, _ := se.since(n)
	var bad []agent.TreeEvent
	for _, e := range evs {
		if e.Kind == agent.StateUnresponsive || e.Kind == agent.StateDown {
			bad = append(bad, e)
		}
	}
	return bad
}

// wait waits for an event of kind about id from the n-th event on.
func (se *stateEvents) wait(t *testing.T, n int, kind string, id uint32, timeout time.Duration) agent.TreeEvent {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		evs, _, changed := se.since(n)
		for _, e := range evs {
			if e.Kind == kind && e.ID == id {
				return e
			}
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("no %s event for node %d within %s; events: %+v", kind, id, timeout, evs)
		}
	}
}

// TestPingDuringTransfer: while 1 GiB goes through the middle node of
// three, agent.ping calls to that node keep answering, and with a 1 s
// unresponsive threshold the heartbeat never reports any node unresponsive
// or down. Stopping the last node afterwards (SIGSTOP) is reported, which
// shows that the watch would have seen it. (TestPullDuringHeartbeatServe
// is the same with the data flowing up, through arbor serve.)
func TestPingDuringTransfer(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GiB transfer")
	}
	root, logs := newRoot(t, agent.Options{Heartbeat: tightHeartbeat}, "warn")
	states := recordStates(t, root)
	chain, infos := spawnChain(t, root, 3)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.WriteFile(src, nil, 0o644)
	if err := os.Truncate(src, 1<<30); err != nil {
		t.Fatal(err)
	}
	// The push is not bounded by a clock, only cancelled when no byte has
	// moved for patience: a stall, not a slow machine, fails the test.
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	stalled := time.AfterFunc(patience, func() { cancel(fmt.Errorf("no progress for %s", patience)) })
	defer stalled.Stop()
	started := make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	_, mark, _ := states.since(0)
	go func() {
		_, err := transfer.Push(ctx, chain[2], src, filepath.Join(dir, "dst"), transfer.Options{
			Progress: func(p transfer.Progress) {
				stalled.Reset(patience)
				if p.Bytes > 0 {
					once.Do(func() { close(started) })
				}
			},
		})
		done <- err
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("push ended before it started: %v", err)
	}
	var pings int
	var worst time.Duration
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("push: %v (%v)", err, context.Cause(ctx))
			}
			if pings == 0 {
				t.Fatal("no ping completed during the transfer")
			}
			if bad := states.unhealthy(mark); len(bad) > 0 {
				t.Fatalf("heartbeat reported during the transfer: %+v", bad)
			}
			if l := logs.String(); strings.Contains(l, "child unresponsive") || strings.Contains(l, "child link down") {
				t.Fatalf("a node warned about its child during the transfer:\n%s", l)
			}
			t.Logf("%d agent.ping calls to the middle node during 1 GiB through it; slowest %s; no unresponsive or down event", pings, worst)
			requireStopReported(t, states, chain[2].ID(), infos[2].PID)
			logs.waitLine(t, regexp.MustCompile(`child unresponsive`), patience)
			return
		default:
		}
		// A ping answered during the transfer is the behaviour shown; how
		// soon is not asserted, patience only stops a hang.
		pctx, pcancel := context.WithTimeout(ctx, patience)
		start := time.Now()
		err := chain[1].Call(pctx, "agent.ping", nil, nil)
		pcancel()
		if err != nil {
			t.Fatalf("agent.ping to the middle node during the transfer: %v", err)
		}
		pings++
		worst = max(worst, time.Since(start))
	}
}

// requireStopReported stops node id (process pid) until the heartbeat
// reports it unresponsive, then resumes it and waits for it to be up again.
func requireStopReported(t *testing.T, states *stateEvents, id uint32, pid int) {
	t.Helper()
	_, mark, _ := states.since(0)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	defer resume()
	e := states.wait(t, mark, agent.StateUnresponsive, id, patience)
	resume()
	states.wait(t, mark, agent.StateUp, id, patience)
	t.Logf("control: node %d stopped is reported: %s", id, e.Cause)
}
