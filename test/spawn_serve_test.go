package test

import (
	"fmt"
	"strings"
	"testing"
)

// TestServeSpawnNameTaken: spawning a path whose last hop's name is taken
// is a usage error (exit 2) and builds nothing: the first hop of
// local/local used to be left in the tree.
func TestServeSpawnNameTaken(t *testing.T) {
	s := startServe(t)
	taken, _ := s.spawnID(t, "local", "--name", "taken")
	before := fmt.Sprint(s.tree(t).ids())
	res := s.run(t, "spawn", "local/local", "--name", "taken")
	if res.code != 2 || !strings.Contains(string(res.stderr), `name "taken" is already used`) {
		t.Errorf("spawn local/local --name taken: %s; want exit 2, already used", res)
	}
	if after := fmt.Sprint(s.tree(t).ids()); after != before {
		t.Errorf("tree after the refused spawn: %s, want %s as before", after, before)
	}
	// Asking again for the node that has the name reuses it.
	if again, _ := s.spawnID(t, "local", "--name", "taken"); again != taken {
		t.Errorf("spawn local --name taken again: node %d, want %d", again, taken)
	}
}

// TestServeSpawnUnreachable: a hop that cannot be reached is exit status
// 255, as with exec --to (it used to be 1), and a chain that fails at its
// second hop leaves the first one it built out of the tree.
func TestServeSpawnUnreachable(t *testing.T) {
	s := startServe(t)
	before := fmt.Sprint(s.tree(t).ids())
	for _, path := range []string{"ssh:db1.invalid", "local/ssh:db1.invalid"} {
		res := s.run(t, "spawn", path)
		if res.code != 255 || !strings.Contains(string(res.stderr), "host name not resolved") {
			t.Errorf("spawn %s: %s; want exit 255, host name not resolved", path, res)
		}
		if after := fmt.Sprint(s.tree(t).ids()); after != before {
			t.Errorf("tree after the failed spawn %s: %s, want %s as before", path, after, before)
		}
	}
}
