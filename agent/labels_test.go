package agent_test

import (
	"context"
	"testing"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/stream/wire"
)

// TestReportedLabelIsNotBelieved: a hostile child reports its own child
// as spawned with label "db". The report is its parent's, so the root
// takes the method and host from it, but not the label: the operator's
// "db" must not resolve to a node the attacker named. Before, FindLabel
// found it.
func TestReportedLabelIsNotBelieved(t *testing.T) {
	root := newRoot(t, agent.HeartbeatConfig{})
	ev := watchTree(t, root)
	evil := attachChild(t, root, "evil", nil)
	victim := attachChild(t, evil, "evil/decoy", nil)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	vid := victim.Router.ID()
	ev.wait(t, "add_route", vid)

	body, err := wire.Marshal(wire.NodeState{ID: vid, Parent: evil.Router.ID(), Name: "evil/decoy", Label: "db",
		Method: "local", Host: "attacker", PID: 4242, State: agent.StateUp, Spawned: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := evil.Router.SendContext(ctx, wire.Header{Dst: wire.RootID, Handle: wire.HandleNodeState}, body); err != nil {
		t.Fatal(err)
	}
	// A round trip on the same link: the report was handled before it.
	if _, err := evil.Router.Request(ctx, wire.RootID, wire.HandlePing, nil); err != nil {
		t.Fatal(err)
	}
	got, ok := root.Tree.Node(vid)
	if !ok || got.Host != "attacker" || got.PID != 4242 {
		t.Fatalf("the report about evil's own child was not taken: %+v", got)
	}
	if got.Label != "" {
		t.Errorf("label %q taken from a report", got.Label)
	}
	if m, ok := root.Tree.FindLabel("db"); ok {
		t.Fatalf("FindLabel(db) = node %d (%s), named by its hostile parent", m.ID, m.Name)
	}
	// Nor can the root be made to label a node that is not the spawner's
	// child.
	if root.Tree.SetLabel(vid, wire.RootID, "db") {
		t.Error("SetLabel labelled a node as a child of a node that is not its parent")
	}
}
