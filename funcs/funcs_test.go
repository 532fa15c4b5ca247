package funcs_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/internal/testtree"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type addArgs struct {
	A int `cbor:"a"`
	B int `cbor:"b"`
}

// serve makes a two-node tree (root → child) whose child serves reg.
func serve(t *testing.T, cfg funcs.Config, reg *funcs.Registry) (*testtree.Node, *testtree.Node, *arborctx.Remote) {
	t.Helper()
	o := testtree.Options{}
	root := testtree.Root(t, o)
	child := root.Spawn(t, o, "child")
	d := funcs.Serve(child.R, reg, cfg, nil)
	t.Cleanup(d.Close)
	return root, child, arborctx.New(root.R, root.M, child.ID(), "child")
}

// ctx is a context for a test's calls. Its deadline only stops a hang (a
// call that never returns): a minute, or shortly before the test binary's
// own -timeout; it never bounds how much a test does.
func ctx(t *testing.T) context.Context {
	dl := time.Now().Add(time.Minute)
	if td, ok := t.Deadline(); ok && td.Add(-5*time.Second).Before(dl) {
		dl = td.Add(-5 * time.Second)
	}
	c, cancel := context.WithDeadline(context.Background(), dl)
	t.Cleanup(cancel)
	return c
}

func TestTypedCallsAndErrors(t *testing.T) {
	reg := funcs.NewRegistry()
	funcs.Register(reg, "t.add", func(_ context.Context, _ *funcs.Call, a addArgs) (int, error) { return a.A + a.B, nil })
	funcs.Register(reg, "t.fail", func(context.Context, *funcs.Call, struct{}) (int, error) { return 0, errors.New("it broke") })
	funcs.Register(reg, "t.panic", func(context.Context, *funcs.Call, struct{}) (int, error) { panic("boom") })
	_, _, rm := serve(t, funcs.DefaultConfig(), reg)
	c := ctx(t)

	var sum int
	if err := rm.Call(c, "t.add", addArgs{2, 40}, &sum); err != nil || sum != 42 {
		t.Fatalf("t.add = %d, %v; want 42", sum, err)
	}
	cases := []struct {
		fn   string
		args any
		kind string
		want string
		is   error
	}{
		{"t.fail", nil, funcs.KindError, "arbor: node 1 (child): t.fail: it broke", funcs.ErrRemote},
		{"t.panic", nil, funcs.KindPanic, "arbor: node 1 (child): t.panic: panic: boom", funcs.ErrRemote},
		{"t.nope", nil, funcs.KindUnknown, "arbor: node 1 (child): t.nope: unknown function t.nope on node child", funcs.ErrUnknownFunction},
		{"t.add", map[string]any{"a": "x"}, funcs.KindBadArgs, "arguments for t.add", funcs.ErrRemote},
		{"t.add", map[string]any{"c": 1}, funcs.KindBadArgs, "arguments for t.add", funcs.ErrRemote},
	}
	for _, tc := range cases {
		err := rm.Call(c, tc.fn, tc.args, &sum)
		var re *funcs.RemoteError
		if !errors.As(err, &re) {
			t.Fatalf("%s: err = %v, want *RemoteError", tc.fn, err)
		}
		if re.Kind != tc.kind || re.NodeID != 1 || re.Node != "child" || re.Fn != tc.fn || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, tc.is) {
			t.Fatalf("%s: got %+v (%v), want kind %s containing %q", tc.fn, re, err, tc.kind, tc.want)
		}
	}
}

func TestPolicy(t *testing.T) {
	// The child's function is callable by its ancestor (the root); the
	// root's own functions refuse the child unless registered for anyone.
	reg := funcs.NewRegistry()
	funcs.Register(reg, "t.secret", func(context.Context, *funcs.Call, struct{}) (string, error) { return "s", nil })
	funcs.Register(reg, "t.public", func(context.Context, *funcs.Call, struct{}) (string, error) { return "p", nil }, funcs.WithPolicy(funcs.Anyone))
	root, child, _ := serve(t, funcs.DefaultConfig(), funcs.NewRegistry())
	d := funcs.Serve(root.R, reg, funcs.DefaultConfig(), nil)
	t.Cleanup(d.Close)
	up := arborctx.New(child.R, child.M, 0, "root")
	c := ctx(t)
	var s string
	err := up.Call(c, "t.secret", nil, &s)
	if !errors.Is(err, funcs.ErrRefused) || !strings.Contains(err.Error(), "refused by policy: node 1 may not call t.secret") {
		t.Fatalf("child calling root's t.secret: %v", err)
	}
	if err := up.Call(c, "t.public", nil, &s); err != nil || s != "p" {
		t.Fatalf("t.public = %q, %v", s, err)
	}
}

func TestBusyAndCancel(t *testing.T) {
	started := make(chan struct{}, 4)
	cancelled := make(chan struct{}, 4)
	reg := funcs.NewRegistry()
	funcs.Register(reg, "t.block", func(ctx context.Context, _ *funcs.Call, _ struct{}) (int, error) {
		started <- struct{}{}
		<-ctx.Done()
		cancelled <- struct{}{}
		return 0, ctx.Err()
	})
	_, _, rm := serve(t, funcs.Config{MaxConcurrent: 1, MaxQueued: 1}, reg)
	c := ctx(t)

	// One call runs, one waits in the queue, the third is refused "busy".
	c1, cancel1 := context.WithCancel(c)
	p1, err := rm.Start(c1, "t.block", nil)
	if err != nil {
		t.Fatal(err)
	}
	<-started
	c2, cancel2 := context.WithCancel(c)
	p2, err := rm.Start(c2, "t.block", nil)
	if err != nil {
		t.Fatal(err)
	}
	err = rm.Call(c, "t.block", nil, nil)
	if !errors.Is(err, funcs.ErrBusy) {
		t.Fatalf("third call: %v, want busy", err)
	}
	// Cancelling the caller's context cancels the running function remotely.
	cancel1()
	if err := p1.Wait(nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call: %v", err)
	}
	select {
	case <-cancelled:
	case <-c.Done():
		t.Fatal("remote function never saw the cancel")
	}
	// The queued call now runs; cancel it too.
	<-started
	cancel2()
	if err := p2.Wait(nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("second call: %v", err)
	}
	<-cancelled
}

func TestDeadlineTravels(t *testing.T) {
	got := make(chan time.Time, 1)
	reg := funcs.NewRegistry()
	funcs.Register(reg, "t.deadline", func(ctx context.Context, _ *funcs.Call, _ struct{}) (int, error) {
		dl, _ := ctx.Deadline()
		got <- dl
		return 0, nil
	})
	_, _, rm := serve(t, funcs.DefaultConfig(), reg)
	want := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	c, cancel := context.WithDeadline(context.Background(), want)
	defer cancel()
	if err := rm.Call(c, "t.deadline", nil, nil); err != nil {
		t.Fatal(err)
	}
	if dl := <-got; !dl.Equal(want) {
		t.Fatalf("remote deadline %v, want %v", dl, want)
	}
}

// TestNoContextLeakPerCall: every call's context is released when the call
// ends. A context left registered with the dispatcher's base context would
// stay in memory for the node's life (about 110 bytes per call), so the
// live heap after many calls with deadlines would keep growing. The work
// is a fixed number of calls; the deadline they carry is only a hang guard.
func TestNoContextLeakPerCall(t *testing.T) {
	reg := funcs.NewRegistry()
	funcs.Register(reg, "t.nop", func(context.Context, *funcs.Call, struct{}) (int, error) { return 0, nil })
	_, _, rm := serve(t, funcs.DefaultConfig(), reg)
	c := ctx(t)
	call := func(n int) {
		for i := 0; i < n; i++ {
			if err := rm.Call(c, "t.nop", nil, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	live := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	call(200) // warm up pools and tables
	before := live()
	// A leak costs at least 100 bytes a call; 2000 calls make it 200 kB
	// against the 60 kB allowed for noise.
	const n = 2000
	call(n)
	after := live()
	if after > before && after-before > n*30 {
		t.Fatalf("live heap grew by %d bytes over %d calls (%d per call): something per call is never released",
			after-before, n, (after-before)/n)
	}
}
