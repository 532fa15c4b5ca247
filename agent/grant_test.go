package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/builtin"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
)

// TestAgentBinaryGrantBoundToNode: a grant is good only for the node the
// spawn request went to. A sibling that learnt the token (here: handed it
// by the test, as a leak would) is refused, and the token stays good for
// its node, which then gets the binary.
func TestAgentBinaryGrantBoundToNode(t *testing.T) {
	const platform = "plan9/amd64"
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "arbor-plan9-amd64"), []byte("not really an agent"), 0o755); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	root, err := agent.NewRoot(agent.Options{Exe: exe, AgentDir: dir, Logger: hclog.NewNullLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	reg := funcs.NewRegistry()
	builtin.Register(reg)
	spawner := attachChild(t, root, "spawner", reg)
	other := attachChild(t, root, "other", nil)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	grant := holdSpawnGrant(t, ctx, root, spawner, reg)

	fetch := func(n *agent.Node) (agent.BinaryOffer, error) {
		toRoot := n.Remote(wire.RootID, "root")
		defer toRoot.Release()
		var offer agent.BinaryOffer
		err := toRoot.Call(ctx, "agent.binary", agent.BinaryRequest{Platform: platform, Grant: grant}, &offer)
		return offer, err
	}
	if _, err := fetch(other); err == nil || !strings.Contains(err.Error(), "holds no live grant") {
		t.Fatalf("another node with the spawner's grant: %v; want refused", err)
	}
	offer, err := fetch(spawner)
	if err != nil || offer.Size != int64(len("not really an agent")) {
		t.Fatalf("the spawner with its grant: %+v, %v; want the binary offered", offer, err)
	}
	if _, err := fetch(spawner); err == nil {
		t.Fatal("the grant was good twice")
	}
}
