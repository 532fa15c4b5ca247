package agent_test

import (
	"context"
	"testing"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/builtin"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/routemonitor"
	"github.com/arbor-project/arbor/spawn"
	"github.com/arbor-project/arbor/stream/wire"
)

// hijackArgs asks test.hijack to announce a route it does not own.
type hijackArgs struct {
	ID   uint32
	Name string
}

// registerHijack adds test.hijack to the agent the test binary runs: a
// compromised node that announces ADD_ROUTE for any ID to its parent, as
// the node the ID will belong to.
func registerHijack(reg *funcs.Registry) {
	funcs.Register(reg, "test.hijack", func(ctx context.Context, c *funcs.Call, a hijackArgs) (builtin.Empty, error) {
		r := c.Router
		body, err := wire.Marshal(wire.AddRoute{ID: a.ID, Name: a.Name, Parent: r.ID()})
		if err != nil {
			return builtin.Empty{}, err
		}
		return builtin.Empty{}, r.SendControl(wire.Header{Dst: r.Ancestors()[0], Handle: wire.HandleAddRoute}, body)
	})
}

// TestSpawnAfterHijack is the attack from the outside: a real child
// process announces the route the root's next spawn will need. Its link
// is closed; the honest spawn that follows gets that ID, and the process
// that answers for it is the one the spawn started (its pid).
func TestSpawnAfterHijack(t *testing.T) {
	root := newRoot(t, agent.HeartbeatConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	gone := make(chan uint32, 16)
	unsub := root.Monitor.Subscribe(func(e routemonitor.Event) {
		if e.Kind == routemonitor.DelRoute {
			gone <- e.ID
		}
	})
	defer unsub()

	evil, err := root.Spawn(ctx, spawn.Hop{Method: "local"}, "evil")
	if err != nil {
		t.Fatal(err)
	}
	next, err := root.Router.AllocateID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	root.Router.ReleaseID(next) // learned, and handed out again below
	// The call's own answer may or may not make it out before the link
	// closes; what counts is what the root does.
	_ = root.Remote(evil.ID, evil.Name).Call(ctx, "test.hijack", hijackArgs{ID: next, Name: "honest"}, nil)
	select {
	case id := <-gone:
		if id != evil.ID {
			t.Fatalf("node %d withdrawn, want the hijacker %d", id, evil.ID)
		}
	case <-ctx.Done():
		t.Fatal("the hijacking link was never closed")
	}
	if _, _, ok := root.Router.Lookup(next); ok {
		t.Fatalf("root routes %d after the hijack", next)
	}

	honest, err := root.Spawn(ctx, spawn.Hop{Method: "local"}, "honest")
	if err != nil {
		t.Fatal(err)
	}
	if honest.ID != next {
		t.Fatalf("honest spawn got ID %d, want %d", honest.ID, next)
	}
	var info builtin.Info
	if err := root.Remote(next, "honest").Call(ctx, "agent.info", nil, &info); err != nil {
		t.Fatal(err)
	}
	if info.PID != honest.PID || info.Name != "honest" {
		t.Fatalf("node %d is pid %d (%s), want the honest spawn's pid %d", next, info.PID, info.Name, honest.PID)
	}
}
