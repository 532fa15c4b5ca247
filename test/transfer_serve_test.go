package test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// TestServePushPull: against arbor serve, push and pull name their node as
// exec and call do (by name or by ID). A file and a -r tree go to the leaf
// of local/local and come back unchanged; an unknown node is exit 2.
func TestServePushPull(t *testing.T) {
	s := startServe(t)
	id, _ := s.spawnID(t, "local/local", "--name", "leaf")
	dir := t.TempDir()

	src := filepath.Join(dir, "src")
	randomFile(t, src, 8<<20)
	want := fileSHA256(t, src)
	pushed, pulled := filepath.Join(dir, "pushed"), filepath.Join(dir, "pulled")
	for _, c := range []struct {
		verb, node, from, to string
	}{{"push", "leaf", src, pushed}, {"pull", fmt.Sprint(id), pushed, pulled}} {
		out := s.must(t, c.verb, c.node, "--json", c.from, c.to)
		var sum summaryJSON
		if err := json.Unmarshal([]byte(out), &sum); err != nil {
			t.Fatalf("%s %s --json: %v: %q", c.verb, c.node, err, out)
		}
		if sum.SHA256 != want || sum.Bytes != 8<<20 || sum.Files != 1 {
			t.Fatalf("%s %s: summary %+v, want sha256 %s", c.verb, c.node, sum, want)
		}
		if got := fileSHA256(t, c.to); got != want {
			t.Fatalf("%s %s: %s has SHA-256 %s, want %s", c.verb, c.node, c.to, got, want)
		}
	}

	tree := filepath.Join(dir, "tree")
	writeTestTree(t, tree, 100)
	treePushed, treePulled := filepath.Join(dir, "tree-pushed"), filepath.Join(dir, "tree-pulled")
	s.must(t, "push", "-r", "leaf", tree, treePushed)
	s.must(t, "pull", "leaf", "-r", treePushed, treePulled)
	wantTree := treeListing(t, tree)
	for _, got := range []string{treePushed, treePulled} {
		if l := treeListing(t, got); l != wantTree {
			t.Fatalf("%s differs from the source:\n%s", got, diffLines(wantTree, l))
		}
	}

	for _, args := range [][]string{
		{"push", "nosuchnode", src, filepath.Join(dir, "x")},
		{"pull", "4000000", pushed, filepath.Join(dir, "y")},
	} {
		res := s.run(t, args...)
		if res.code != 2 || !strings.Contains(string(res.stderr), "unknown node") {
			t.Errorf("arbor %q: %s; want exit 2 and unknown node", args, res)
		}
	}
	for _, args := range [][]string{
		{"push", src, filepath.Join(dir, "x")},         // neither --to nor NODE
		{"pull", "--to", "local", "leaf", pushed, "x"}, // --to and NODE
	} {
		if res := s.run(t, args...); res.code != 2 {
			t.Errorf("arbor %q: %s; want exit 2", args, res)
		}
	}
	for _, p := range []string{filepath.Join(dir, "x"), filepath.Join(dir, "y")} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s written by a refused command", p)
		}
	}
}

// TestPullDuringHeartbeatServe: arbor serve with a 1 s unresponsive
// threshold; while 1 GiB is pulled up from the leaf of local/local/local
// through the middle node, `arbor call MIDDLE agent.ping` keeps answering
// and `arbor watch --json` shows no unresponsive or down event. Stopping
// the leaf afterwards (SIGSTOP) does show, which proves the watch would
// have seen one.
func TestPullDuringHeartbeatServe(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GiB transfer")
	}
	s := startServe(t, "--heartbeat", tightHeartbeat.Interval.String(),
		"--unresponsive-after", tightHeartbeat.UnresponsiveAfter.String(),
		"--down-after", tightHeartbeat.DownAfter.String())
	leafID, _ := s.spawnID(t, "local/local/local", "--name", "leaf")
	root := s.tree(t)
	if len(root.Children) != 1 || len(root.Children[0].Children) != 1 ||
		len(root.Children[0].Children[0].Children) != 1 || root.Children[0].Children[0].Children[0].ID != leafID {
		t.Fatalf("tree %s, want a chain of three ending in %d", root.shape(), leafID)
	}
	middle := root.Children[0].Children[0]
	leaf := middle.Children[0]
	w := s.startWatch(t)

	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.WriteFile(src, nil, 0o644)
	// Sparse: quick to make, and as long to send as any other bytes.
	if err := os.Truncate(src, 1<<30); err != nil {
		t.Fatal(err)
	}
	destDir := filepath.Join(dir, "dest")
	os.Mkdir(destDir, 0o755)
	dest := filepath.Join(destDir, "file")
	pull := startArbor(t, "--socket", s.socket, "pull", "leaf", "--json", src, dest)

	// The transfer is under way once its temporary file has data in it.
	waitTempData(t, pull, destDir)
	var pings int
	for running := true; running; {
		select {
		case <-pull.exited:
			running = false
			continue
		default:
		}
		if res := s.run(t, "call", fmt.Sprint(middle.ID), "agent.ping"); res.code != 0 {
			t.Fatalf("agent.ping to the middle node %d during the pull: %s", middle.ID, res)
		}
		pings++
	}
	if code := pull.wait(t, patience); code != 0 {
		t.Fatalf("pull: exit %d\n%s", code, pull.stderr)
	}
	var sum summaryJSON
	if err := json.Unmarshal(pull.stdout.Bytes(), &sum); err != nil {
		t.Fatalf("pull --json: %v: %q", err, pull.stdout)
	}
	if got := fileSHA256(t, dest); sum.Bytes != 1<<30 || got != sum.SHA256 || got != fileSHA256(t, src) {
		t.Fatalf("pull: summary %+v; %s has SHA-256 %s", sum, dest, got)
	}
	if pings == 0 {
		t.Fatal("no ping completed during the pull")
	}
	unhealthy := regexp.MustCompile(`"event":"(unresponsive|down)"`)
	if line := w.stdout.lineMatching(unhealthy); line != "" {
		t.Fatalf("watch reported during the pull: %s\nall events:\n%s", line, w.stdout)
	}
	// Neither a lost watch event nor a node's own warning (forwarded to
	// serve's stderr) hides one.
	if strings.Contains(w.stderr.String(), "events lost") {
		t.Fatalf("watch lost events:\n%s", w.stderr)
	}
	if logs := s.r.stderr.String(); strings.Contains(logs, "child unresponsive") || strings.Contains(logs, "child link down") {
		t.Fatalf("a node warned about its child during the pull:\n%s", logs)
	}
	t.Logf("pull of 1 GiB through 3 hops in %.2f s; %d arbor call agent.ping to the middle node answered meanwhile; no unresponsive or down event", sum.Seconds, pings)

	// The control: a stopped leaf is reported, and recovers.
	if err := syscall.Kill(leaf.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			syscall.Kill(leaf.PID, syscall.SIGCONT)
		}
	}()
	e := w.waitEvent(t, "unresponsive", leaf.ID, patience)
	syscall.Kill(leaf.PID, syscall.SIGCONT)
	resumed = true
	w.waitEvent(t, "up", leaf.ID, patience)
	s.r.stderr.waitLine(t, regexp.MustCompile(`child unresponsive`), patience)
	t.Logf("control: leaf %d stopped is reported: %s", leaf.ID, e.Cause)
}
