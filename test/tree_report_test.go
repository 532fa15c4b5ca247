package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arbor-project/arbor/internal/sshdtest"
)

// TestServeTreeSSHNode: `arbor tree` shows an ssh node by the agent's own
// pid (a running arbor agent, not the ssh client in front of it) and by
// the hostname the agent reports, as a local node is shown: here both run
// on this machine, so both show its hostname, never the ssh alias.
func TestServeTreeSSHNode(t *testing.T) {
	s := startSSHD(t, sshdtest.Options{})
	srv := startServe(t, sshFlags(s)...)
	id, _ := srv.spawnID(t, "ssh:"+sshdtest.Alias)
	lid, _ := srv.spawnID(t, "local")
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	root := srv.tree(t)
	for _, c := range []struct {
		what string
		id   uint32
	}{{"ssh", id}, {"local", lid}} {
		n := root.find(c.id)
		if n == nil {
			t.Fatalf("%s node %d not in the tree: %s", c.what, c.id, root.shape())
		}
		if n.Host != host {
			t.Errorf("%s node: host %q, want %q (the agent's own hostname)", c.what, n.Host, host)
		}
		a := argv(n.PID)
		if len(a) == 0 || filepath.Base(a[0]) == "ssh" || n.PID == srv.pid() {
			t.Errorf("%s node: pid %d runs %q, want the node's agent", c.what, n.PID, a)
		}
	}
	srv.must(t, "stop")
}

// TestServeRoutesNamedNode: `routes` shows a named node's method (local),
// not its name ("web"), both in its own table (--at web) and in the
// root's.
func TestServeRoutesNamedNode(t *testing.T) {
	srv := startServe(t)
	id, _ := srv.spawnID(t, "local", "--name", "web")
	at := srv.must(t, "routes", "--at", "web")
	if want := fmt.Sprintf("node %d web (method local, parent 0)\n", id); !strings.HasPrefix(at, want) {
		t.Errorf("routes --at web:\n%s\nwant it to begin %q", at, want)
	}
	root := srv.must(t, "routes")
	if want := fmt.Sprintf("%d web (local)\n", id); !strings.Contains(root, want) {
		t.Errorf("routes:\n%s\nwant a line %q", root, want)
	}
}

// TestServeStopQuiet: a normal `arbor stop`, with a watch running, leaves
// no warning on serve's stderr (answers that a closing router drops are
// expected), and the watch ends.
func TestServeStopQuiet(t *testing.T) {
	srv := startServe(t)
	srv.spawnID(t, "local/local")
	w := srv.startWatch(t)
	srv.must(t, "stop")
	if code := srv.r.wait(t, cliTimeout); code != 0 {
		t.Fatalf("serve exited %d; stderr:\n%s", code, srv.r.stderr)
	}
	w.wait(t, cliTimeout)
	for _, line := range strings.Split(srv.r.stderr.String(), "\n") {
		if strings.Contains(line, "[WARN]") && !strings.Contains(line, "socket directory") {
			t.Errorf("serve warned during a normal stop: %s", line)
		}
	}
}
