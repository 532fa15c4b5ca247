package fanout

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arbor-project/arbor/agent"
	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/internal/errs"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/spawn"
	"github.com/arbor-project/arbor/targets"
)

// DefaultFanout is the budget when Runner.Fanout is 0.
const DefaultFanout = 64

// ErrTimedOut is the error of an operation stopped by CommandTimeout.
var ErrTimedOut = errors.New(errs.Prefix + "timed out")

// ErrNoGateway is the error of a target left with no live gateway.
var ErrNoGateway = errors.New(errs.Prefix + "no gateway left")

// Target is one target of a run.
type Target struct {
	// Label names the target in results and messages.
	Label string
	// Path is the chain of hops below Runner.Root that reaches the
	// target; ignored when Remote is set.
	Path string
	// Remote is a node that already exists (arbor serve's tree).
	Remote *arborctx.Remote
}

// Op is the operation run on each target's node. It must return when ctx
// ends.
type Op[T any] func(ctx context.Context, t Target, rm *arborctx.Remote) (T, error)

// Result is one target's outcome.
type Result[T any] struct {
	Target Target
	Value  T
	// Err is why the target failed: its path could not be built
	// (Unreachable), the node went away, the operation failed or timed
	// out (TimedOut, and Err is ErrTimedOut).
	Err         error
	Unreachable bool
	TimedOut    bool
	// Via is the gateway the target went through, with Runner.Gateways.
	Via     string
	Seconds float64
}

// Runner holds a run's settings. A Runner may be used for one run at a
// time; its Progress counters describe that run.
type Runner struct {
	// Root spawns the targets' paths; it may be nil when every target
	// has a Remote.
	Root *agent.Node
	// Fanout is the budget: spawns plus operations in flight, at most.
	// 0 means DefaultFanout.
	Fanout int
	// CommandTimeout bounds each operation (not the spawns before it,
	// which the root's ConnectTimeout bounds); 0 means no limit.
	CommandTimeout time.Duration
	// Gateways are paths that targets of a single hop are spread over.
	Gateways []string
	// OnReroute is told when a gateway is given up and why; it must not
	// block.
	OnReroute func(gateway string, err error)
	// ReleaseNodes shuts each target's own node down once its operation
	// is done (a one-shot run: the node is not needed any more). Nodes
	// that are prefixes of other targets are kept.
	ReleaseNodes bool
	// Lease, when set, reaches a target's path instead of Root: a pool
	// (arbor serve's) lends the path's node, building it when it has
	// none, and release gives it back once the operation is done. It runs
	// within the budget, as a spawn does. Gateways are not used with it.
	Lease func(ctx context.Context, path string) (rm *arborctx.Remote, release func(), err error)

	Progress Progress

	mu       sync.Mutex
	nodes    map[string]*prefixNode
	prefixes map[string]bool // paths that lead to other targets
	sem      chan struct{}
	gws      []*gateway

	inFlight, peak atomic.Int64
}

// Progress counts a run's targets; read it at any time.
type Progress struct {
	Total, Done, Failed, Running atomic.Int64
}

// Peak is the largest number of spawns plus operations that were in
// flight at once during the last run.
func (r *Runner) Peak() int { return int(r.peak.Load()) }

type prefixNode struct {
	done chan struct{}
	rm   *arborctx.Remote
	err  error
}

type gateway struct {
	path     string
	assigned int
	dead     error
}

// Run runs op on every target and yields each result as it completes.
// Breaking out of the loop cancels what is still running and waits for
// it. Run does not close Root or the nodes it spawned (except with
// ReleaseNodes): closing Root takes them down.
func Run[T any](ctx context.Context, r *Runner, ts []Target, op Op[T]) iter.Seq[Result[T]] {
	return func(yield func(Result[T]) bool) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		r.start(ts)
		out := make(chan Result[T])
		var wg sync.WaitGroup
		for _, t := range ts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res := runOne(ctx, r, t, op)
				if res.Err != nil {
					r.Progress.Failed.Add(1)
				}
				r.Progress.Done.Add(1)
				select {
				case out <- res:
				case <-ctx.Done():
				}
			}()
		}
		go func() {
			wg.Wait()
			close(out)
		}()
		stopped := false
		for res := range out {
			if !stopped && !yield(res) {
				stopped = true
				cancel()
			}
		}
	}
}

func (r *Runner) start(ts []Target) {
	n := r.Fanout
	if n <= 0 {
		n = DefaultFanout
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sem = make(chan struct{}, n)
	r.nodes = map[string]*prefixNode{}
	r.prefixes = map[string]bool{}
	r.gws = nil
	for _, g := range r.Gateways {
		r.gws = append(r.gws, &gateway{path: g})
	}
	for _, t := range ts {
		if t.Remote != nil {
			continue
		}
		hops := targets.SplitHops(t.Path)
		for k := 1; k < len(hops); k++ {
			r.prefixes[strings.Join(hops[:k], "/")] = true
		}
	}
	r.Progress.Total.Store(int64(len(ts)))
	r.Progress.Done.Store(0)
	r.Progress.Failed.Store(0)
	r.Progress.Running.Store(0)
	r.peak.Store(0)
}

// acquire takes one unit of the budget; false when ctx ended first.
func (r *Runner) acquire(ctx context.Context) bool {
	select {
	case r.sem <- struct{}{}:
		n := r.inFlight.Add(1)
		for {
			p := r.peak.Load()
			if n <= p || r.peak.CompareAndSwap(p, n) {
				break
			}
		}
		return true
	case <-ctx.Done():
		return false
	}
}

func (r *Runner) release() {
	r.inFlight.Add(-1)
	<-r.sem
}

func runOne[T any](ctx context.Context, r *Runner, t Target, op Op[T]) Result[T] {
	res := Result[T]{Target: t}
	start := time.Now()
	defer func() { res.Seconds = time.Since(start).Seconds() }()
	rm := t.Remote
	if rm == nil && r.Lease != nil {
		if !r.acquire(ctx) {
			res.Err, res.Seconds = ctx.Err(), time.Since(start).Seconds()
			return res
		}
		var release func()
		var err error
		rm, release, err = r.Lease(ctx, t.Path)
		r.release()
		if err != nil {
			res.Err, res.Unreachable, res.Seconds = err, true, time.Since(start).Seconds()
			return res
		}
		defer release()
		t.Remote = rm // reached: run it as a node that exists
	}
	for {
		if t.Remote == nil {
			var err error
			rm, res.Via, err = r.reach(ctx, t)
			if err != nil {
				res.Err, res.Unreachable = err, true
				res.Seconds = time.Since(start).Seconds()
				return res
			}
		}
		if !r.acquire(ctx) {
			res.Err = ctx.Err()
			res.Seconds = time.Since(start).Seconds()
			return res
		}
		// A target whose gateway died while it waited for the budget
		// has not started: it goes through another gateway.
		if res.Via == "" || !isClosed(rm.Done()) || !r.gatewayGone(res.Via) {
			break
		}
		r.release()
		r.forget(targets.SplitHops(r.pathOf(t, res.Via)))
	}
	r.Progress.Running.Add(1)
	opCtx, cancel := ctx, context.CancelFunc(func() {})
	var cmdDeadline time.Time
	if r.CommandTimeout > 0 {
		cmdDeadline = time.Now().Add(r.CommandTimeout)
		opCtx, cancel = context.WithDeadlineCause(ctx, cmdDeadline, ErrTimedOut)
	}
	v, err := op(opCtx, t, rm)
	// The deadline travels with a call, so the node may end the command
	// and answer before this side's timer has fired: an error at or past
	// the deadline is the timeout too.
	timedOut := ctx.Err() == nil && r.CommandTimeout > 0 &&
		(errors.Is(context.Cause(opCtx), ErrTimedOut) || err != nil && !time.Now().Before(cmdDeadline))
	cancel()
	r.Progress.Running.Add(-1)
	r.release()
	res.Value = v
	switch {
	case timedOut:
		res.Err, res.TimedOut = fmt.Errorf("%w after %s", ErrTimedOut, r.CommandTimeout), true
	case err != nil:
		res.Err = err
		if errors.Is(err, router.ErrDisconnected) || isClosed(rm.Done()) {
			res.Unreachable = true
		}
	}
	res.Seconds = time.Since(start).Seconds()
	if r.ReleaseNodes && t.Remote == nil && !r.isPrefix(r.pathOf(t, res.Via)) {
		sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), agent.ShutdownGrace+5*time.Second)
		_ = rm.Shutdown(sctx)
		scancel()
	}
	return res
}

func (r *Runner) isPrefix(path string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.prefixes[path]
}

func (r *Runner) pathOf(t Target, via string) string {
	if via != "" {
		return via + "/" + t.Path
	}
	return t.Path
}

// reach builds (or finds) the nodes of t's path and returns the last;
// with gateways, a target of one hop goes behind the least loaded live
// gateway, and moves to another when that one cannot be reached.
func (r *Runner) reach(ctx context.Context, t Target) (*arborctx.Remote, string, error) {
	if r.Root == nil {
		return nil, "", fmt.Errorf("%starget %s: no root to spawn %s from", errs.Prefix, t.Label, t.Path)
	}
	hops := targets.SplitHops(t.Path)
	if len(r.Gateways) == 0 || len(hops) > 1 {
		rm, err := r.ensure(ctx, hops)
		return rm, "", err
	}
	for {
		gw := r.pickGateway()
		if gw == nil {
			return nil, "", fmt.Errorf("%w for %s (gateways %s)", ErrNoGateway, t.Label, strings.Join(r.Gateways, ", "))
		}
		gwHops := targets.SplitHops(gw.path)
		if _, err := r.ensure(ctx, gwHops); err != nil {
			r.gatewayDied(gw, err)
			if ctx.Err() != nil {
				return nil, gw.path, err
			}
			continue
		}
		rm, err := r.ensure(ctx, append(gwHops, hops...))
		if err != nil && r.gatewayGone(gw.path) {
			// The gateway died, not the target's own hop: try another
			// (never a new node for the dead gateway).
			r.forget(append(gwHops, hops...))
			continue
		}
		return rm, gw.path, err
	}
}

func (r *Runner) pickGateway() *gateway {
	r.mu.Lock()
	defer r.mu.Unlock()
	var best *gateway
	for _, g := range r.gws {
		if g.dead != nil {
			continue
		}
		if pn := r.nodes[g.path]; pn != nil && isClosed(pn.done) && pn.rm != nil && isClosed(pn.rm.Done()) {
			g.dead = pn.rm.Err()
			r.report(g)
			continue
		}
		if best == nil || g.assigned < best.assigned {
			best = g
		}
	}
	if best != nil {
		best.assigned++
	}
	return best
}

// gatewayDied marks gw dead (once) and reports it.
func (r *Runner) gatewayDied(gw *gateway, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if gw.dead == nil {
		if err == nil {
			err = errors.New("gone")
		}
		gw.dead = err
		r.report(gw)
	}
}

// report calls OnReroute; r.mu is held.
func (r *Runner) report(gw *gateway) {
	if r.OnReroute != nil {
		r.OnReroute(gw.path, gw.dead)
	}
}

// gatewayGone reports whether the gateway at path is dead, marking it
// dead (and reporting it) when its node has gone.
func (r *Runner) gatewayGone(path string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, g := range r.gws {
		if g.path != path {
			continue
		}
		if g.dead != nil {
			return true
		}
		if pn := r.nodes[g.path]; pn != nil && isClosed(pn.done) && pn.rm != nil && isClosed(pn.rm.Done()) {
			g.dead = pn.rm.Err()
			if g.dead == nil {
				g.dead = errors.New("gone")
			}
			r.report(g)
			return true
		}
	}
	return false
}

func (r *Runner) forget(hops []string) {
	r.mu.Lock()
	delete(r.nodes, strings.Join(hops, "/"))
	r.mu.Unlock()
}

// ensure returns the node at the end of hops, spawning each prefix not
// yet spawned, once; a prefix whose node has gone is spawned again.
func (r *Runner) ensure(ctx context.Context, hops []string) (*arborctx.Remote, error) {
	key := strings.Join(hops, "/")
	r.mu.Lock()
	pn := r.nodes[key]
	if pn != nil && isClosed(pn.done) && pn.rm != nil && isClosed(pn.rm.Done()) {
		pn = nil // it died: build it again
	}
	owner := pn == nil
	if owner {
		pn = &prefixNode{done: make(chan struct{})}
		r.nodes[key] = pn
	}
	r.mu.Unlock()
	if !owner {
		select {
		case <-pn.done:
			return pn.rm, pn.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	defer close(pn.done)
	hop, err := spawn.ParsePath(hops[len(hops)-1])
	if err != nil || len(hop) != 1 {
		pn.err = fmt.Errorf("%w (in %s)", err, key)
		return nil, pn.err
	}
	var parent *arborctx.Remote
	if len(hops) > 1 {
		if parent, pn.err = r.ensure(ctx, hops[:len(hops)-1]); pn.err != nil {
			return nil, pn.err
		}
	}
	if !r.acquire(ctx) {
		pn.err = ctx.Err()
		return nil, pn.err
	}
	defer r.release()
	var res agent.SpawnResult
	if parent == nil {
		res, err = r.Root.Spawn(ctx, hop[0], "")
	} else {
		res, err = r.Root.SpawnVia(ctx, parent, hop[0], "")
	}
	if err != nil {
		pn.err = agent.HopFailed(err, len(hops)-1, hop[0], key)
		return nil, pn.err
	}
	pn.rm = r.Root.Remote(res.ID, res.Name)
	return pn.rm, nil
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
