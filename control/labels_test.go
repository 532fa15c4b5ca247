package control_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/builtin"
	"github.com/arbor-project/arbor/control"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/spawn"
	"github.com/arbor-project/arbor/stream/wire"
)

// The test binary doubles as the agent of local children: started with
// spawn.AgentArg it serves the built-ins plus test.spawnlabeled, with which
// a compromised node spawns a child of its own under a label of its
// choosing, through the project's own agent.Node.Spawn.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == spawn.AgentArg {
		reg := funcs.NewRegistry()
		builtin.Register(reg)
		funcs.Register(reg, "test.spawnlabeled", func(ctx context.Context, c *funcs.Call, label string) (uint32, error) {
			n, ok := c.Values["node"].(*agent.Node)
			if !ok {
				return 0, fmt.Errorf("no node")
			}
			res, err := n.Spawn(ctx, spawn.Hop{Method: "local"}, label)
			return res.ID, err
		})
		if err := agent.RunChildWith(reg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestLabelsAreTheRoots: a node the operator spawned (serve.spawn "local"
// named "h") spawns a child of its own labelled "db". The root did not ask
// for that label, so "db" stays free: serve.spawn "local" named "db"
// builds a new node, and the label resolves to it. A label the root asked
// a node below it to use (serve.spawn "local/local" named "web", spawned
// by the first hop) is recorded. Before, the root took labels from the
// spawner's report, so "db" resolved to the attacker's node and the
// operator's spawn failed with "name already used".
func TestLabelsAreTheRoots(t *testing.T) {
	path, root, _ := serveWith(t, control.Config{}, withExe(t, agent.Options{}))
	_, rm, ctx := rootClient(t, path)
	spawnPath := func(p, name string) control.SpawnResult {
		t.Helper()
		var res control.SpawnResult
		if err := rm.Call(ctx, "serve.spawn", control.SpawnArgs{Path: p, Name: name}, &res); err != nil {
			t.Fatalf("serve.spawn %s named %q: %v", p, name, err)
		}
		return res
	}

	h := spawnPath("local", "h")
	if m, ok := root.Tree.FindLabel("h"); !ok || m.ID != h.ID {
		t.Fatalf("FindLabel(h) = %+v, %v; want node %d", m, ok, h.ID)
	}
	hostile := root.Remote(h.ID, h.Name)
	defer hostile.Release()
	var decoy uint32
	if err := hostile.Call(ctx, "test.spawnlabeled", "db", &decoy); err != nil {
		t.Fatal(err)
	}
	if m, ok := root.Tree.Node(decoy); !ok || m.Parent != h.ID {
		t.Fatalf("the hostile node's child %d is not in the tree below it: %+v", decoy, m)
	}
	if m, ok := root.Tree.FindLabel("db"); ok {
		t.Fatalf("FindLabel(db) = node %d (%s), labelled by the node that spawned it", m.ID, m.Name)
	}

	db := spawnPath("local", "db")
	if db.ID == decoy {
		t.Fatalf("serve.spawn named db reused the hostile node's child %d", decoy)
	}
	if m, ok := root.Tree.FindLabel("db"); !ok || m.ID != db.ID {
		t.Fatalf("FindLabel(db) = %+v, %v; want node %d", m, ok, db.ID)
	}

	web := spawnPath("local/local", "web")
	m, ok := root.Tree.FindLabel("web")
	if !ok || m.ID != web.ID {
		t.Fatalf("FindLabel(web) = %+v, %v; want node %d, spawned by its parent for the root", m, ok, web.ID)
	}
	if m.Parent == wire.RootID || m.Parent == h.ID || m.Parent == db.ID {
		t.Fatalf("web's parent is %d, want the path's first hop", m.Parent)
	}
	// Asking again reuses it.
	if again := spawnPath("local/local", "web"); again.ID != web.ID {
		t.Fatalf("serve.spawn local/local named web again: node %d, want %d", again.ID, web.ID)
	}
}
