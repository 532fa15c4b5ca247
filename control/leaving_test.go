package control_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/control"
)

// TestSpawnSkipsLeavingHop: a hop that said it is shutting down (its
// NODE_STATE 'leaving': arbor kill, slow here because its own child does
// not answer) is not reused by serve.spawn, which builds the hop anew.
func TestSpawnSkipsLeavingHop(t *testing.T) {
	path, root, _ := serveWith(t, control.Config{}, withExe(t, agent.Options{}))
	_, rm, ctx := rootClient(t, path)

	var leaf control.SpawnResult
	if err := rm.Call(ctx, "serve.spawn", control.SpawnArgs{Path: "local/local"}, &leaf); err != nil {
		t.Fatal(err)
	}
	m, _ := root.Tree.Node(leaf.ID)
	hop := m.Parent
	// The leaf stops answering, so its parent's shutdown waits for it.
	if m.PID == 0 {
		t.Fatal("no PID for the leaf")
	}
	if err := syscall.Kill(m.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(m.PID, syscall.SIGCONT)
	kill := root.Remote(hop, "hop")
	defer kill.Release()
	killed := make(chan error, 1)
	go func() { killed <- kill.Shutdown(ctx) }()
	for {
		if m, ok := root.Tree.Node(hop); ok && m.State == agent.StateLeaving {
			break
		}
		select {
		case err := <-killed:
			t.Fatalf("the hop shut down at once (%v): nothing to test", err)
		case <-ctx.Done():
			t.Fatal("the hop never said it is leaving")
		case <-time.After(5 * time.Millisecond):
		}
	}
	var again control.SpawnResult
	err := rm.Call(ctx, "serve.spawn", control.SpawnArgs{Path: "local/local"}, &again)
	if err != nil {
		t.Fatalf("spawn while the first hop is leaving: %v", err)
	}
	if m, _ := root.Tree.Node(again.ID); m.Parent == hop {
		t.Errorf("the new leaf %d was built below the leaving hop %d", again.ID, hop)
	}
	syscall.Kill(m.PID, syscall.SIGCONT) // the leaf answers its SHUTDOWN: the kill ends
	if err := <-killed; err != nil {
		t.Errorf("kill of the hop: %v", err)
	}
}
