package fanout_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/builtin"
	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/fanout"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/spawn"
	"go.uber.org/goleak"
)

// The test binary is also the agent of every local child it spawns.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == spawn.AgentArg {
		reg := funcs.NewRegistry()
		builtin.Register(reg)
		if err := agent.RunChildWith(reg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

func newRoot(t *testing.T) *agent.Node {
	t.Helper()
	root, err := agent.NewRoot(agent.Options{ConnectTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	return root
}

// testCtx guards against hangs only.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

type execOut struct {
	status         int
	stdout, stderr string
}

func execOp(argv ...string) fanout.Op[execOut] {
	return func(ctx context.Context, _ fanout.Target, rm *arborctx.Remote) (execOut, error) {
		var o, e bytes.Buffer
		st, err := builtin.ExecStream(ctx, rm, builtin.ExecStreamArgs{Argv: argv}, nil, &o, &e)
		return execOut{st, o.String(), e.String()}, err
	}
}

// TestSharedPrefixes: paths sharing leading hops share their nodes: three
// targets below one local child make the root spawn one child, and every
// target runs on its own node.
func TestSharedPrefixes(t *testing.T) {
	root := newRoot(t)
	ts := []fanout.Target{
		{Label: "a", Path: "local/local"},
		{Label: "b", Path: "local/local/local"},
		{Label: "c", Path: "local/local/local/local"},
		{Label: "d", Path: "local"},
	}
	r := &fanout.Runner{Root: root, Fanout: 2}
	names := map[string]string{}
	for res := range fanout.Run(testCtx(t), r, ts, func(ctx context.Context, t fanout.Target, rm *arborctx.Remote) (string, error) {
		var info builtin.Info
		err := rm.Call(ctx, "agent.info", nil, &info)
		return info.Name, err
	}) {
		if res.Err != nil {
			t.Fatalf("%s: %v", res.Target.Label, res.Err)
		}
		names[res.Target.Label] = res.Value
	}
	// Node names are their chain of names: every target's first node is
	// the same one.
	first := map[string]bool{}
	for _, n := range names {
		first[strings.SplitN(n, "/", 2)[0]] = true
	}
	if len(first) != 1 {
		t.Fatalf("targets ran below %d first hops (%v), want 1", len(first), names)
	}
	seen := map[string]bool{}
	for l, n := range names {
		if seen[n] {
			t.Fatalf("two targets ran on %s", n)
		}
		seen[n] = true
		_ = l
	}
	if len(seen) != 4 {
		t.Fatalf("ran on %v", names)
	}
	if p := r.Peak(); p > 2 {
		t.Fatalf("peak in flight %d, budget 2", p)
	}
}

// TestBudget: with Fanout 4 and 24 operations on existing nodes, no more
// than 4 run at once (counted by the operations themselves), and every
// result arrives.
func TestBudget(t *testing.T) {
	root := newRoot(t)
	chain, err := root.SpawnPath(testCtx(t), []spawn.Hop{{Method: "local"}})
	if err != nil {
		t.Fatal(err)
	}
	var ts []fanout.Target
	for i := range 24 {
		ts = append(ts, fanout.Target{Label: fmt.Sprint(i), Remote: chain[0]})
	}
	var now, peak atomic.Int64
	r := &fanout.Runner{Fanout: 4}
	n := 0
	for res := range fanout.Run(testCtx(t), r, ts, func(ctx context.Context, t fanout.Target, rm *arborctx.Remote) (int, error) {
		c := now.Add(1)
		defer now.Add(-1)
		for p := peak.Load(); c > p && !peak.CompareAndSwap(p, c); p = peak.Load() {
		}
		var o bytes.Buffer
		return builtin.ExecStream(ctx, rm, builtin.ExecStreamArgs{Argv: []string{"sleep", "0.05"}}, nil, &o, &o)
	}) {
		if res.Err != nil || res.Value != 0 {
			t.Fatalf("%s: %v %d", res.Target.Label, res.Err, res.Value)
		}
		n++
	}
	if n != 24 || peak.Load() > 4 || r.Peak() > 4 {
		t.Fatalf("%d results, peak %d (runner says %d), budget 4", n, peak.Load(), r.Peak())
	}
}

// TestTimeoutAndUnreachable: the slow target is stopped and reported
// TimedOut; the unreachable one (a port that refuses) is Unreachable with
// its hop's error; the others succeed.
func TestTimeoutAndUnreachable(t *testing.T) {
	root := newRoot(t)
	ts := []fanout.Target{
		{Label: "fast", Path: "local"},
		{Label: "slow", Path: "local/local"},
		{Label: "down", Path: "ssh:127.0.0.1:1"},
	}
	r := &fanout.Runner{Root: root, CommandTimeout: 2 * time.Second}
	got := map[string]fanout.Result[execOut]{}
	for res := range fanout.Run(testCtx(t), r, ts, func(ctx context.Context, t fanout.Target, rm *arborctx.Remote) (execOut, error) {
		if t.Label == "slow" {
			return execOp("sleep", "60")(ctx, t, rm)
		}
		return execOp("echo", "hi")(ctx, t, rm)
	}) {
		got[res.Target.Label] = res
	}
	if f := got["fast"]; f.Err != nil || f.Value.stdout != "hi\n" {
		t.Fatalf("fast: %+v", f)
	}
	if s := got["slow"]; !s.TimedOut || !errors.Is(s.Err, fanout.ErrTimedOut) {
		t.Fatalf("slow: %+v", s)
	}
	if d := got["down"]; !d.Unreachable || d.Err == nil {
		t.Fatalf("down: %+v", d)
	}
	if p := &r.Progress; p.Done.Load() != 3 || p.Failed.Load() != 2 || p.Running.Load() != 0 {
		t.Fatalf("progress: done %d failed %d running %d", p.Done.Load(), p.Failed.Load(), p.Running.Load())
	}
}

// TestBreakUnblock: leaving the loop early cancels what runs and returns.
func TestBreakUnblock(t *testing.T) {
	root := newRoot(t)
	ts := []fanout.Target{{Label: "a", Path: "local"}, {Label: "b", Path: "local/local"}}
	r := &fanout.Runner{Root: root}
	for res := range fanout.Run(testCtx(t), r, ts, func(ctx context.Context, t fanout.Target, rm *arborctx.Remote) (execOut, error) {
		if t.Label == "b" {
			return execOp("sleep", "60")(ctx, t, rm)
		}
		return execOp("true")(ctx, t, rm)
	}) {
		if res.Target.Label != "a" {
			t.Fatalf("first result from %s", res.Target.Label)
		}
		break
	}
}

// TestGatewaysSpread: one-hop targets are spread over the gateways by
// count; a gateway that cannot be reached is given up, reported, and its
// targets go through the other.
func TestGatewaysSpread(t *testing.T) {
	root := newRoot(t)
	var rerouted atomic.Int64
	r := &fanout.Runner{Root: root, Gateways: []string{"ssh:127.0.0.1:1", "local"},
		OnReroute: func(gw string, err error) { rerouted.Add(1) }}
	var ts []fanout.Target
	for i := range 4 {
		ts = append(ts, fanout.Target{Label: fmt.Sprint(i), Path: "local"})
	}
	for res := range fanout.Run(testCtx(t), r, ts, execOp("true")) {
		if res.Err != nil || res.Via != "local" {
			t.Fatalf("%s via %s: %v", res.Target.Label, res.Via, res.Err)
		}
	}
	if rerouted.Load() != 1 {
		t.Fatalf("rerouted %d times, want 1", rerouted.Load())
	}
}

// TestTimeoutAnsweredFirst: the deadline travels with a call, so a node
// can end the command and answer before this side's timer fires. An
// operation that fails at its deadline without waiting for its context
// is timed out all the same, every time.
func TestTimeoutAnsweredFirst(t *testing.T) {
	root := newRoot(t)
	var ts []fanout.Target
	for i := range 16 {
		ts = append(ts, fanout.Target{Label: fmt.Sprint(i), Path: "local"})
	}
	r := &fanout.Runner{Root: root, CommandTimeout: 100 * time.Millisecond}
	for res := range fanout.Run(testCtx(t), r, ts, func(ctx context.Context, _ fanout.Target, _ *arborctx.Remote) (execOut, error) {
		dl, _ := ctx.Deadline()
		time.Sleep(time.Until(dl)) // the node's own timer: not ctx.Done()
		return execOut{}, errors.New("node 1 (local): sys.exec.stream: sh: context deadline exceeded")
	}) {
		if !res.TimedOut || !errors.Is(res.Err, fanout.ErrTimedOut) {
			t.Errorf("target %s: %+v, want timed out", res.Target.Label, res)
		}
	}
}
