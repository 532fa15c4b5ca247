package context_test

import (
	"context"
	"testing"
	"time"

	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/internal/testtree"
)

// TestReleaseUnsubscribes: handles made and released one after another
// leave the route monitor's subscriptions as they were (a long-lived
// arbor serve used to keep one per handle until the node went away).
func TestReleaseUnsubscribes(t *testing.T) {
	o := testtree.Options{}
	root := testtree.Root(t, o)
	child := root.Spawn(t, o, "child")
	base := root.M.Subscriptions()
	for i := 0; i < 100; i++ {
		rm := arborctx.New(root.R, root.M, child.ID(), "child")
		if rm.Err() != nil {
			t.Fatal(rm.Err())
		}
		rm.Release()
		rm.Release() // idempotent
	}
	if got := root.M.Subscriptions(); got != base {
		t.Fatalf("%d subscriptions after 100 handles were made and released, want %d", got, base)
	}
	// A held handle still follows its node until released.
	rm := arborctx.New(root.R, root.M, child.ID(), "child")
	defer rm.Release()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang guard
	defer cancel()
	child.R.Close()
	select {
	case <-rm.Done():
	case <-ctx.Done():
		t.Fatal("Done never closed after the node went away")
	}
}
