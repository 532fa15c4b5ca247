package test

import (
	"os"
	"path/filepath"
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
