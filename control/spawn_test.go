package control_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/control"
	"github.com/arbor-project/arbor/spawn"
	"github.com/arbor-project/arbor/stream/wire"
)

// TestSpawnsRunAtOnce: serve.spawn of one path does not wait for another
// path's spawn (a hop that hangs: its command never answers the hello);
// and eight spawns at once of paths sharing their first hop build that
// hop once, each getting its own last hop below it.
func TestSpawnsRunAtOnce(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	started := filepath.Join(t.TempDir(), "started")
	tools := spawn.ToolOptions{Commands: map[string][]string{"hang": {"sh", "-c", "touch " + started + "; exec sleep 120", "{script}"}}}
	path, root, _ := serveWith(t, control.Config{}, agent.Options{Exe: exe, Tools: tools, ConnectTimeout: 5 * time.Minute})
	_, rm, ctx := rootClient(t, path)

	hangCtx, endHang := context.WithCancel(ctx)
	hung := make(chan error, 1)
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		hung <- rm.Call(hangCtx, "serve.spawn", control.SpawnArgs{Path: "cmd:hang:x"}, nil)
	}()
	defer func() { endHang(); <-ended }()
	for {
		if _, err := os.Stat(started); err == nil {
			break
		}
		select {
		case err := <-hung:
			t.Fatalf("the hanging spawn ended: %v", err)
		case <-ctx.Done():
			t.Fatal("the hanging hop's command never ran")
		case <-time.After(10 * time.Millisecond):
		}
	}

	var wg sync.WaitGroup
	res := make([]control.SpawnResult, 8)
	errs := make([]error, 8)
	for i := range res {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = rm.Call(ctx, "serve.spawn", control.SpawnArgs{Path: "local/local"}, &res[i])
		}()
	}
	wg.Wait()
	select {
	case err := <-hung:
		t.Fatalf("the hanging spawn ended before the others (%v): they waited for it", err)
	default:
	}
	leaves := map[uint32]bool{}
	for i, err := range errs {
		if err != nil {
			t.Fatalf("spawn %d of local/local: %v", i, err)
		}
		leaves[res[i].ID] = true
	}
	if len(leaves) != 8 {
		t.Fatalf("8 spawns of local/local gave %d distinct leaves", len(leaves))
	}
	var firstHops []uint32
	for _, m := range root.Tree.Nodes() {
		if m.Parent == wire.RootID && m.Method == "local" {
			firstHops = append(firstHops, m.ID)
		}
	}
	if len(firstHops) != 1 {
		t.Fatalf("the shared first hop was built %d times: %v", len(firstHops), firstHops)
	}
	for id := range leaves {
		if m, _ := root.Tree.Node(id); m.Parent != firstHops[0] {
			t.Errorf("leaf %d has parent %d, want the shared hop %d", id, m.Parent, firstHops[0])
		}
	}
}
