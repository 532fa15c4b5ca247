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
	"github.com/arbor-project/arbor/spawn"
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
	grants := make(chan string, 1)
	funcs.Register(reg, "agent.spawn", func(ctx context.Context, _ *funcs.Call, req agent.SpawnRequest) (agent.SpawnResult, error) {
		grants <- req.BinaryGrant
		<-ctx.Done()
		return agent.SpawnResult{}, ctx.Err()
	})
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	spawnCtx, endSpawn := context.WithCancel(ctx)
	spawned := make(chan struct{})
	go func() {
		defer close(spawned)
		via := root.Remote(spawner.Router.ID(), spawner.Router.Name())
		defer via.Release()
		root.SpawnVia(spawnCtx, via, spawn.Hop{Method: "ssh", Target: "db1"}, "")
	}()
	defer func() { endSpawn(); <-spawned }()
	var grant string
	select {
	case grant = <-grants:
	case <-ctx.Done():
		t.Fatal("the spawn request never reached the node")
	}

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
