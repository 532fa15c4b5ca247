package funcs_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/internal/testtree"
	"github.com/arbor-project/arbor/stream/wire"
)

// quotaTree is a root serving t.block (blocks until cancelled) and t.echo
// to anyone, with 8 workers and 8 queued calls (so 2 running and 2
// queued per child link), under two children: one floods, one is honest.
type quotaTree struct {
	root, hostile, honest *testtree.Node
	d                     *funcs.Dispatcher
	started               chan uint32 // the caller of every t.block that runs
}

func newQuotaTree(t *testing.T) *quotaTree {
	t.Helper()
	q := &quotaTree{started: make(chan uint32, 1024)}
	reg := funcs.NewRegistry()
	funcs.Register(reg, "t.block", func(ctx context.Context, c *funcs.Call, _ struct{}) (int, error) {
		q.started <- c.Src
		<-ctx.Done()
		return 0, ctx.Err()
	}, funcs.WithPolicy(funcs.Anyone))
	funcs.Register(reg, "t.echo", func(_ context.Context, _ *funcs.Call, s string) (string, error) { return s, nil },
		funcs.WithPolicy(funcs.Anyone))
	o := testtree.Options{}
	q.root = testtree.Root(t, o)
	q.hostile = q.root.Spawn(t, o, "hostile")
	q.honest = q.root.Spawn(t, o, "honest")
	q.root.WaitRoute(t, q.honest.ID())
	q.d = funcs.Serve(q.root.R, reg, funcs.Config{MaxConcurrent: 8, MaxQueued: 8}, nil)
	t.Cleanup(q.d.Close)
	return q
}

// awaitStarted waits for n calls of t.block from src to be running.
func (q *quotaTree) awaitStarted(t *testing.T, src uint32, n int) {
	t.Helper()
	timer := time.NewTimer(time.Minute)
	defer timer.Stop()
	for n > 0 {
		select {
		case s := <-q.started:
			if s != src {
				t.Fatalf("a call from node %d started, want node %d", s, src)
			}
			n--
		case <-timer.C:
			t.Fatalf("calls from node %d did not start", src)
		}
	}
}

// honestStillServed checks the honest child's calls still run: an echo,
// and two blocking calls that both start (so they hold running slots).
func (q *quotaTree) honestStillServed(t *testing.T) {
	t.Helper()
	up := arborctx.New(q.honest.R, q.honest.M, 0, "root")
	var s string
	if err := up.Call(ctx(t), "t.echo", "still here", &s); err != nil || s != "still here" {
		t.Fatalf("honest sibling's call: %q, %v", s, err)
	}
	c, cancel := context.WithCancel(ctx(t))
	var calls []*arborctx.PendingCall
	for i := 0; i < 2; i++ {
		pc, err := up.Start(c, "t.block", nil)
		if err != nil {
			t.Fatal(err)
		}
		calls = append(calls, pc)
	}
	q.awaitStarted(t, q.honest.ID(), 2)
	cancel()
	for _, pc := range calls {
		if err := pc.Wait(nil); err == nil {
			t.Fatal("a cancelled t.block returned no error")
		}
	}
}

// TestCallQuotaPerLink: a child link has at most a quarter of the workers
// and of the queue; its calls past that are refused "busy" at once, naming
// the link, while a sibling's calls still run; the per-link state goes
// when the calls do.
func TestCallQuotaPerLink(t *testing.T) {
	q := newQuotaTree(t)
	up := arborctx.New(q.hostile.R, q.hostile.M, 0, "root")
	c, cancel := context.WithCancel(ctx(t))
	defer cancel()
	const flood = 40
	results := make(chan error, flood)
	for i := 0; i < flood; i++ {
		pc, err := up.Start(c, "t.block", nil)
		if err != nil {
			t.Fatal(err)
		}
		go func() { results <- pc.Wait(nil) }()
	}
	// The link's first 4 calls are admitted (2 run, 2 wait): the rest
	// come back busy without waiting for them.
	want := fmt.Sprintf("busy: too many calls from link to node %d", q.hostile.ID())
	for i := 0; i < flood-4; i++ {
		err := <-results
		var re *funcs.RemoteError
		if !errors.Is(err, funcs.ErrBusy) || !errors.As(err, &re) || !strings.Contains(re.Message, want) {
			t.Fatalf("flooding call %d: %v, want %q", i, err, want)
		}
	}
	q.awaitStarted(t, q.hostile.ID(), 2)
	q.honestStillServed(t)

	cancel()
	for i := 0; i < 4; i++ {
		if err := <-results; !errors.Is(err, context.Canceled) && !errors.Is(err, funcs.ErrCancelled) {
			t.Fatalf("admitted call ended with %v, want cancelled", err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for q.d.LinksWithCalls() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d links still have quota entries after their calls ended", q.d.LinksWithCalls())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestCallQuotaNoReply: calls that want no reply count against the link's
// share too, so a child that fills it with them and sends nothing else
// leaves its sibling served.
func TestCallQuotaNoReply(t *testing.T) {
	q := newQuotaTree(t)
	body, err := wire.Marshal(wire.CallRequest{Fn: "t.block"})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if err := q.hostile.R.Send(wire.Header{Dst: 0, Handle: wire.HandleCall}, body); err != nil {
			t.Fatal(err)
		}
	}
	q.awaitStarted(t, q.hostile.ID(), 2)
	q.honestStillServed(t)
	q.d.Close() // ends the calls nobody can cancel
	if n := q.d.LinksWithCalls(); n != 0 {
		t.Fatalf("%d links still have quota entries after the dispatcher closed", n)
	}
}
