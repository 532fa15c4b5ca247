package agent_test

import (
	"context"
	"testing"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/stream/wire"
)

// TestForgedNodeStateChangesNothing has a child describe its sibling (as
// DOWN and renamed) and pose as the root's report about itself: the root's
// tree believes a NODE_STATE only from the node's parent, and takes names
// from routes, so neither changes anything; nor does its word that its
// sibling is leaving (a node speaks only of its own leaving). The forger is a real node that
// completed the real hello; it sends the reports through its own router.
func TestForgedNodeStateChangesNothing(t *testing.T) {
	root := newRoot(t, agent.HeartbeatConfig{})
	evil := attachChild(t, root, "evil", nil)
	honest := attachChild(t, root, "honest", nil)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	hid := honest.Router.ID()
	waitNode(t, root, hid)

	for _, ns := range []wire.NodeState{
		{ID: hid, Parent: evil.Router.ID(), Name: "renamed", State: agent.StateDown, Cause: "forged", Spawned: true, Method: "ssh", Target: "attacker"},
		{ID: hid, Parent: wire.RootID, Name: "renamed", State: agent.StateDown, Cause: "forged"},
		{ID: evil.Router.ID(), Parent: wire.RootID, Name: "root", State: agent.StateUp, Spawned: true, Method: "local"},
		// Only a node's own leaving is believed from it.
		{ID: hid, Parent: wire.RootID, State: agent.StateLeaving, Cause: "forged"},
		{ID: hid, Parent: evil.Router.ID(), State: agent.StateLeaving, Cause: "forged"},
	} {
		body, err := wire.Marshal(ns)
		if err != nil {
			t.Fatal(err)
		}
		if err := evil.Router.SendContext(ctx, wire.Header{Dst: wire.RootID, Handle: wire.HandleNodeState}, body); err != nil {
			t.Fatal(err)
		}
	}
	// A round trip on the same link: the reports were handled before it.
	if _, err := evil.Router.Request(ctx, wire.RootID, wire.HandlePing, nil); err != nil {
		t.Fatal(err)
	}
	got, ok := root.Tree.Node(hid)
	if !ok || got.Name != "honest" || got.State != agent.StateUp || got.Method == "ssh" {
		t.Fatalf("honest node after forged reports: %+v", got)
	}
	if got, _ := root.Tree.Node(evil.Router.ID()); got.Name != "evil" {
		t.Fatalf("evil renamed itself: %+v", got)
	}
	// The honest node is still reached by its name's route.
	if _, err := root.Router.Request(ctx, hid, wire.HandlePing, nil); err != nil {
		t.Fatal(err)
	}
}

func waitNode(t *testing.T, root *agent.Node, id uint32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	for {
		if _, ok := root.Tree.Node(id); ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("node %d never appeared in the tree", id)
		case <-root.Router.Done():
			t.Fatal("root closed")
		default:
		}
		if _, err := root.Router.Request(ctx, id, wire.HandlePing, nil); err != nil {
			t.Fatal(err)
		}
	}
}
