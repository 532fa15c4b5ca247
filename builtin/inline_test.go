package builtin_test

import (
	"context"
	"errors"
	"testing"

	"github.com/arbor-project/arbor/builtin"
	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/internal/testtree"
	"github.com/arbor-project/arbor/router"
)

// TestShortBuiltinsInline: with every worker busy and the queue full, so
// that another call is refused as busy, agent.ping, agent.info and
// agent.routes still answer: they run on the link's read loop, without a
// worker (funcs.DefaultConfig's Inline).
func TestShortBuiltinsInline(t *testing.T) {
	o := testtree.Options{}
	root := testtree.Root(t, o)
	child := root.Spawn(t, o, "child")
	reg := funcs.NewRegistry()
	builtin.Register(reg)
	started := make(chan struct{}, 2)
	funcs.Register(reg, "t.block", func(ctx context.Context, _ *funcs.Call, _ builtin.Empty) (builtin.Empty, error) {
		started <- struct{}{}
		<-ctx.Done()
		return builtin.Empty{}, ctx.Err()
	})
	cfg := funcs.DefaultConfig()
	cfg.MaxConcurrent, cfg.MaxQueued = 1, 1
	d := funcs.Serve(child.R, reg, cfg, nil)
	t.Cleanup(d.Close)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	rm := arborctx.New(root.R, root.M, child.ID(), "child")

	blockCtx, unblock := context.WithCancel(ctx)
	defer unblock()
	running, err := rm.Start(blockCtx, "t.block", nil)
	if err != nil {
		t.Fatal(err)
	}
	<-started
	queued, err := rm.Start(blockCtx, "t.block", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := rm.Call(ctx, "t.block", nil, nil); !errors.Is(err, funcs.ErrBusy) {
		t.Fatalf("a third blocking call: %v, want busy", err)
	}
	if err := rm.Call(ctx, "agent.ping", nil, nil); err != nil {
		t.Errorf("agent.ping while busy: %v", err)
	}
	var info builtin.Info
	if err := rm.Call(ctx, "agent.info", nil, &info); err != nil || info.ID != child.ID() {
		t.Errorf("agent.info while busy: %+v, %v", info, err)
	}
	var tb router.Table
	if err := rm.Call(ctx, "agent.routes", builtin.PageArgs{Limit: 10}, &tb); err != nil {
		t.Errorf("agent.routes while busy: %v", err)
	}
	unblock()
	running.Wait(nil)
	queued.Wait(nil)
}
