package control

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/internal/errs"
	"github.com/arbor-project/arbor/routemonitor"
	"github.com/arbor-project/arbor/spawn"
)

// PoolConfig is the policy of the pool of warm nodes (see Pool).
type PoolConfig struct {
	// IdleTTL: a node no request has used for this long is shut down,
	// unless that would take its path below its floor (default 5 min).
	IdleTTL time.Duration
	// MaxBuilds is how many builds of one path may run at once (default 2).
	MaxBuilds int
	// BackoffMin and BackoffMax bound the wait after a failed build: it
	// starts at BackoffMin and doubles, with up to 20 % jitter, to
	// BackoffMax (defaults 1 s and 60 s).
	BackoffMin, BackoffMax time.Duration
}

// DefaultPoolConfig is the pool policy arbor serve starts with.
func DefaultPoolConfig() PoolConfig {
	return PoolConfig{IdleTTL: 5 * time.Minute, MaxBuilds: 2, BackoffMin: time.Second, BackoffMax: time.Minute}
}

func (c PoolConfig) withDefaults() PoolConfig {
	d := DefaultPoolConfig()
	if c.IdleTTL <= 0 {
		c.IdleTTL = d.IdleTTL
	}
	if c.MaxBuilds <= 0 {
		c.MaxBuilds = d.MaxBuilds
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = d.BackoffMin
	}
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = max(d.BackoffMax, c.BackoffMin)
	}
	return c
}

// Sentinel errors of the pool; check them with errors.Is.
var (
	// ErrBackoff: the path's last build failed and the next try is not
	// due yet (the request did not ask to wait).
	ErrBackoff = errors.New("arbor: pool: path in backoff")
	// ErrPoolTimeout: the caller's deadline passed while its request was
	// queued on a build.
	ErrPoolTimeout = errors.New("arbor: pool: timed out waiting for a connection")
	// ErrCallerGone: the caller detached while queued.
	ErrCallerGone = errors.New("arbor: pool: caller went away")
	// ErrPoolClosed: arbor serve is stopping.
	ErrPoolClosed = errors.New("arbor: pool: arbor serve is stopping")
)

// Pool event kinds, reported by serve.watch next to the tree's own.
const (
	PoolBuild     = "pool_build"     // a build of a path started
	PoolReplenish = "pool_replenish" // a build started to keep a path's floor
	PoolOpened    = "pool_opened"    // a build opened a node
	PoolFailed    = "pool_failed"    // a build failed; Cause says why and when the next try is
	PoolDestroyed = "pool_destroyed" // an idle node was shut down past its TTL
	PoolLost      = "pool_lost"      // a pool node went away by itself (killed, heartbeat)
)

// Pool keeps warm nodes by path for one-shot commands (serve.acquire).
// Per path it serves a request from an open node at once, queues it on a
// build in progress, or starts a build; one path never has more builds at
// once than MaxBuilds, and a burst for a cold path starts one build. It
// keeps each path's floor open or building, shuts idle nodes down past
// the TTL without going below the floor, and backs off after failed
// builds. It is safe for concurrent use.
//
// Locking: mu guards everything below it; it is never held across a
// spawn, a shutdown or a send (builds and shutdowns run on their own
// goroutines and take mu to record their outcome). Event subscribers are
// called with mu held and must not block.
type Pool struct {
	s      *Server
	cfg    PoolConfig
	ctx    context.Context // ends at Close: cancels builds
	cancel context.CancelFunc
	unsub  func()
	wg     sync.WaitGroup // builds and shutdowns

	mu         sync.Mutex
	closed     bool
	paths      map[string]*poolPath
	leases     map[uint64]*lease
	nextLease  uint64
	subs       map[int]func(PoolEvent)
	nsub       int
	waiting    int
	lastActive time.Time
}

// PoolEvent is one change of the pool.
type PoolEvent struct {
	Kind  string
	Path  string
	ID    uint32 // the node, if any
	Name  string
	Time  time.Time
	Cause string
}

type poolPath struct {
	path       string
	nodes      []*poolNode // open
	building   int
	buildSince time.Time // start of the oldest build in progress
	queue      []*waiter
	floor      int
	failures   int
	lastErr    error
	lastFail   time.Time
	nextTry    time.Time
	timer      *time.Timer
}

type poolNode struct {
	id        uint32
	name      string
	users     int
	opened    time.Time
	idleSince time.Time
	notBefore time.Time // a shared hop past its TTL: not shut down before this
}

type lease struct {
	id     uint64
	client uint32
	p      *poolPath
	n      *poolNode
}

type waiter struct {
	client uint32
	wait   bool
	since  time.Time
	done   chan acquired // buffered 1; written once, under mu
}

type acquired struct {
	lease uint64
	node  SpawnResult
	err   error
}

func newPool(s *Server, cfg PoolConfig) *Pool {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pool{s: s, cfg: cfg.withDefaults(), ctx: ctx, cancel: cancel,
		paths: map[string]*poolPath{}, leases: map[uint64]*lease{}, subs: map[int]func(PoolEvent){},
		lastActive: time.Now()}
	p.unsub = s.root.Monitor.Subscribe(p.onRoute)
	return p
}

// Close fails every queued request, stops the timers and builds, and
// waits for the goroutines it started. The nodes themselves go down with
// the tree.
func (p *Pool) Close() {
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		for _, pp := range p.paths {
			if pp.timer != nil {
				pp.timer.Stop()
			}
			for _, w := range pp.queue {
				p.finish(w, acquired{err: ErrPoolClosed})
			}
			pp.queue = nil
		}
	}
	p.mu.Unlock()
	p.unsub()
	p.cancel()
	p.wg.Wait()
}

// Subscribe calls fn for every pool event until the returned function is
// called. fn is called with the pool's lock held and must not block.
func (p *Pool) Subscribe(fn func(PoolEvent)) (unsubscribe func()) {
	p.mu.Lock()
	id := p.nsub
	p.nsub++
	p.subs[id] = fn
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		delete(p.subs, id)
		p.mu.Unlock()
	}
}

// emit reports e; p.mu is held on entry.
func (p *Pool) emit(e PoolEvent) {
	e.Time = time.Now()
	for _, fn := range p.subs {
		fn(e)
	}
	p.s.log.Debug("pool", "event", e.Kind, "path", e.Path, "id", e.ID, "cause", e.Cause)
}

// IdleSince reports when the pool last had work (a request queued or a
// node in use), and whether it has some now.
func (p *Pool) IdleSince() (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastActive, p.waiting > 0 || len(p.leases) > 0
}

// Acquire returns a node for path to client, with a lease that Release
// (or the client's going away) ends. It blocks while the request is
// queued on a build: until the build ends, ctx ends (the request leaves
// the queue with ErrPoolTimeout or ctx's error) or the client detaches.
// A path in backoff fails at once unless wait is set.
func (p *Pool) Acquire(ctx context.Context, client uint32, path string, wait bool) (uint64, SpawnResult, error) {
	if _, err := spawn.ParsePath(path); err != nil {
		return 0, SpawnResult{}, funcs.BadArgs(err)
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return 0, SpawnResult{}, ErrPoolClosed
	}
	now := time.Now()
	p.lastActive = now
	pp := p.paths[path]
	if pp == nil {
		pp = &poolPath{path: path}
		p.paths[path] = pp
	}
	if nodes := p.lendable(pp); len(nodes) > 0 {
		n := slices.MinFunc(nodes, func(a, b *poolNode) int { return a.users - b.users })
		id := p.lend(client, pp, n)
		p.mu.Unlock()
		return id, SpawnResult{ID: n.id, Name: n.name}, nil
	}
	if pp.lastErr != nil && now.Before(pp.nextTry) && !wait {
		err := &backoffError{path: path, ago: now.Sub(pp.lastFail), next: pp.nextTry.Sub(now), last: pp.lastErr}
		p.mu.Unlock()
		return 0, SpawnResult{}, err
	}
	w := &waiter{client: client, wait: wait, since: now, done: make(chan acquired, 1)}
	pp.queue = append(pp.queue, w)
	p.waiting++
	p.grow(pp)
	p.mu.Unlock()

	select {
	case a := <-w.done:
		return a.lease, a.node, a.err
	case <-ctx.Done():
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case a := <-w.done: // served or failed just now: that answer stands
		return a.lease, a.node, a.err
	default:
	}
	p.dequeue(pp, w)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		what := "no build in progress"
		if pp.building > 0 {
			what = fmt.Sprintf("build in progress for %.1f s", time.Since(pp.buildSince).Seconds())
		} else if pp.lastErr != nil {
			what = "in backoff after a failed build: " + errs.Reason(pp.lastErr)
		}
		return 0, SpawnResult{}, fmt.Errorf("%w to %s (%s)", ErrPoolTimeout, path, what)
	}
	return 0, SpawnResult{}, ctx.Err()
}

// lend gives n to client; p.mu is held on entry.
func (p *Pool) lend(client uint32, pp *poolPath, n *poolNode) uint64 {
	p.nextLease++
	l := &lease{id: p.nextLease, client: client, p: pp, n: n}
	p.leases[l.id] = l
	n.users++
	return l.id
}

// finish answers w; p.mu is held on entry.
func (p *Pool) finish(w *waiter, a acquired) {
	p.waiting--
	p.lastActive = time.Now()
	w.done <- a
}

// dequeue removes w from pp's queue; p.mu is held on entry.
func (p *Pool) dequeue(pp *poolPath, w *waiter) {
	if i := slices.Index(pp.queue, w); i >= 0 {
		pp.queue = slices.Delete(pp.queue, i, i+1)
		p.waiting--
		p.lastActive = time.Now()
	}
	p.schedule(pp)
}

// Release ends a lease of client (0: any client). An unknown lease is
// ignored: the client may have gone away first.
func (p *Pool) Release(client uint32, id uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l, ok := p.leases[id]; ok && (client == 0 || l.client == client) {
		p.endLease(l)
	}
}

// endLease: p.mu is held on entry.
func (p *Pool) endLease(l *lease) {
	delete(p.leases, l.id)
	p.lastActive = time.Now()
	l.n.users--
	if l.n.users == 0 {
		l.n.idleSince = time.Now()
	}
	p.schedule(l.p)
}

// Keep sets path's floor: at least min nodes open or building.
func (p *Pool) Keep(path string, min int) error {
	if _, err := spawn.ParsePath(path); err != nil {
		return funcs.BadArgs(err)
	}
	if min < 0 {
		return funcs.BadArgs(fmt.Errorf("--min %d: a floor is at least 0", min))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrPoolClosed
	}
	pp := p.paths[path]
	if pp == nil {
		pp = &poolPath{path: path}
		p.paths[path] = pp
	}
	pp.floor = min
	p.grow(pp)
	return nil
}

// grow starts the builds pp needs now: one for queued requests when
// nothing is open or building, and enough to keep its floor, within
// MaxBuilds, unless the path is in backoff. p.mu is held on entry.
func (p *Pool) grow(pp *poolPath) {
	defer p.schedule(pp)
	if p.closed || time.Now().Before(pp.nextTry) {
		return
	}
	want := pp.floor - len(pp.nodes) - pp.building
	kind := PoolReplenish
	if len(pp.queue) > 0 && len(p.lendable(pp)) == 0 && pp.building == 0 && want < 1 {
		want, kind = 1, PoolBuild
	}
	want = min(want, p.cfg.MaxBuilds-pp.building)
	for range want {
		if pp.building == 0 {
			pp.buildSince = time.Now()
		}
		pp.building++
		p.emit(PoolEvent{Kind: kind, Path: pp.path, Name: pp.path})
		p.wg.Add(1)
		go p.build(pp)
	}
}

// lendable are pp's nodes that may be lent: not those that said they are
// shutting down (arbor kill, or a failed spawn's rollback), which stay in
// pp.nodes until their route goes. p.mu is held (lock order: p.mu, then
// the tree's).
func (p *Pool) lendable(pp *poolPath) []*poolNode {
	return slices.DeleteFunc(slices.Clone(pp.nodes), func(n *poolNode) bool {
		m, ok := p.s.root.Tree.Node(n.id)
		return ok && m.State == agent.StateLeaving
	})
}

// build spawns one node for pp and records the outcome.
func (p *Pool) build(pp *poolPath) {
	defer p.wg.Done()
	res, err := p.s.spawnPath(p.ctx, SpawnArgs{Path: pp.path})
	p.mu.Lock()
	defer p.mu.Unlock()
	pp.building--
	if pp.building > 0 {
		pp.buildSince = time.Now() // roughly: the others started no later
	}
	if p.closed {
		return
	}
	if err != nil {
		pp.failures++
		d := p.cfg.BackoffMin << min(pp.failures-1, 30)
		d = min(d+time.Duration(rand.Int64N(int64(d)/5+1)), p.cfg.BackoffMax)
		now := time.Now()
		pp.lastErr, pp.lastFail, pp.nextTry = err, now, now.Add(d)
		p.emit(PoolEvent{Kind: PoolFailed, Path: pp.path, Name: pp.path,
			Cause: fmt.Sprintf("%v; next try in %s", err, d.Round(time.Millisecond))})
		keep := pp.queue[:0]
		for _, w := range pp.queue {
			if w.wait {
				keep = append(keep, w)
				continue
			}
			p.finish(w, acquired{err: err})
		}
		pp.queue = keep
		p.schedule(pp)
		return
	}
	pp.failures, pp.lastErr, pp.nextTry = 0, nil, time.Time{}
	n := &poolNode{id: res.ID, name: res.Name, opened: time.Now(), idleSince: time.Now()}
	pp.nodes = append(pp.nodes, n)
	p.emit(PoolEvent{Kind: PoolOpened, Path: pp.path, ID: n.id, Name: n.name})
	for _, w := range pp.queue {
		id := p.lend(w.client, pp, n)
		p.finish(w, acquired{lease: id, node: res})
	}
	pp.queue = nil
	p.grow(pp)
}

// schedule sets pp's timer to its next due time: the end of its backoff
// when a build will then be wanted, or the earliest TTL of a node that
// may be shut down. p.mu is held on entry.
func (p *Pool) schedule(pp *poolPath) {
	if pp.timer != nil {
		pp.timer.Stop()
		pp.timer = nil
	}
	if p.closed {
		return
	}
	var due time.Time
	if pp.lastErr != nil && (len(pp.queue) > 0 || pp.floor > len(pp.nodes)+pp.building) {
		due = pp.nextTry
	}
	if len(pp.nodes)+pp.building > pp.floor {
		for _, n := range pp.nodes {
			if n.users == 0 {
				if t := later(n.idleSince.Add(p.cfg.IdleTTL), n.notBefore); due.IsZero() || t.Before(due) {
					due = t
				}
			}
		}
	}
	if due.IsZero() {
		if len(pp.nodes) == 0 && pp.building == 0 && len(pp.queue) == 0 && pp.floor == 0 && pp.lastErr == nil {
			delete(p.paths, pp.path)
		}
		return
	}
	pp.timer = time.AfterFunc(max(time.Until(due), 0), func() { p.tick(pp) })
}

// tick runs when pp's timer fires: idle nodes past the TTL above the
// floor are shut down, and builds that are due start.
func (p *Pool) tick(pp *poolPath) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.paths[pp.path] != pp {
		return
	}
	now := time.Now()
	// A node that is a prefix of others (a shared hop) stays while they do.
	parents := map[uint32]bool{}
	for _, m := range p.s.root.Tree.Nodes() {
		parents[m.Parent] = true
	}
	for len(pp.nodes)+pp.building > pp.floor {
		i := slices.IndexFunc(pp.nodes, func(n *poolNode) bool {
			due := n.users == 0 && !now.Before(n.idleSince.Add(p.cfg.IdleTTL))
			if due && parents[n.id] {
				n.notBefore = now.Add(min(p.cfg.IdleTTL, 5*time.Second)) // look again then
			}
			return due && !parents[n.id]
		})
		if i < 0 {
			break
		}
		n := pp.nodes[i]
		pp.nodes = slices.Delete(pp.nodes, i, i+1)
		p.emit(PoolEvent{Kind: PoolDestroyed, Path: pp.path, ID: n.id, Name: n.name,
			Cause: fmt.Sprintf("idle for %s (TTL %s)", now.Sub(n.idleSince).Round(time.Millisecond), p.cfg.IdleTTL)})
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.s.rollback(SpawnResult{ID: n.id, Name: n.name})
		}()
	}
	p.grow(pp)
}

// onRoute follows the tree: a pool node that goes away leaves its path
// (which then rebuilds up to its floor), and a client that goes away
// leaves every queue and ends its leases. It runs on a link's read loop
// and does not block.
func (p *Pool) onRoute(e routemonitor.Event) {
	if e.Kind != routemonitor.DelRoute {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	for _, pp := range p.paths {
		if i := slices.IndexFunc(pp.nodes, func(n *poolNode) bool { return n.id == e.ID }); i >= 0 {
			n := pp.nodes[i]
			pp.nodes = slices.Delete(pp.nodes, i, i+1)
			p.emit(PoolEvent{Kind: PoolLost, Path: pp.path, ID: n.id, Name: n.name, Cause: e.Cause})
			p.grow(pp)
		}
		for _, w := range slices.Clone(pp.queue) {
			if w.client == e.ID {
				p.finish(w, acquired{err: ErrCallerGone})
				pp.queue = slices.DeleteFunc(pp.queue, func(x *waiter) bool { return x == w })
				p.schedule(pp)
			}
		}
	}
	for _, l := range p.leases {
		if l.client == e.ID {
			p.endLease(l)
		}
	}
}

// PoolPath is one path of serve.pool's answer.
type PoolPath struct {
	Path       string       `cbor:"path" json:"path"`
	Floor      int          `cbor:"floor" json:"floor"`
	IdleTTLS   float64      `cbor:"idle_ttl_s" json:"idle_ttl_s"`
	Nodes      []PoolNode   `cbor:"nodes" json:"nodes"`
	Building   int          `cbor:"building" json:"building"`
	BuildingS  float64      `cbor:"building_s,omitempty" json:"building_s,omitempty"`
	Queue      []PoolWaiter `cbor:"queue" json:"queue"`
	Failures   int          `cbor:"failures,omitempty" json:"failures,omitempty"`
	LastError  string       `cbor:"last_error,omitempty" json:"last_error,omitempty"`
	NextTryInS float64      `cbor:"next_try_in_s,omitempty" json:"next_try_in_s,omitempty"`
}

// PoolNode is one open node of a path.
type PoolNode struct {
	ID    uint32  `cbor:"id" json:"id"`
	Name  string  `cbor:"name" json:"name"`
	Users int     `cbor:"users" json:"users"`   // requests using it now
	IdleS float64 `cbor:"idle_s" json:"idle_s"` // 0 while used
}

// PoolWaiter is one queued request, in queue order.
type PoolWaiter struct {
	Client  uint32  `cbor:"client" json:"client"`
	WaitedS float64 `cbor:"waited_s" json:"waited_s"`
}

// List is the pool's state, paths in order.
func (p *Pool) List() []PoolPath {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	out := []PoolPath{}
	for _, pp := range p.paths {
		e := PoolPath{Path: pp.path, Floor: pp.floor, IdleTTLS: p.cfg.IdleTTL.Seconds(), Building: pp.building,
			Nodes: []PoolNode{}, Queue: []PoolWaiter{}, Failures: pp.failures}
		if pp.building > 0 {
			e.BuildingS = now.Sub(pp.buildSince).Seconds()
		}
		for _, n := range pp.nodes {
			pn := PoolNode{ID: n.id, Name: n.name, Users: n.users}
			if n.users == 0 {
				pn.IdleS = now.Sub(n.idleSince).Seconds()
			}
			e.Nodes = append(e.Nodes, pn)
		}
		for _, w := range pp.queue {
			e.Queue = append(e.Queue, PoolWaiter{Client: w.client, WaitedS: now.Sub(w.since).Seconds()})
		}
		if pp.lastErr != nil {
			e.LastError = pp.lastErr.Error()
			e.NextTryInS = max(pp.nextTry.Sub(now).Seconds(), 0)
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b PoolPath) int {
		if a.Path < b.Path {
			return -1
		}
		if a.Path > b.Path {
			return 1
		}
		return 0
	})
	return out
}

// AcquireArgs are serve.acquire's arguments.
type AcquireArgs struct {
	Path string `cbor:"path"`
	// Wait: queue even when the path is in backoff.
	Wait bool `cbor:"wait,omitempty"`
	// DeadlineUnixNano, if set, is when the caller gives up: the request
	// leaves the queue then and fails with ErrPoolTimeout's message, a
	// little before the call's own deadline ends the call.
	DeadlineUnixNano int64 `cbor:"deadline,omitempty"`
}

// AcquireResult is the node serving the request and its lease.
type AcquireResult struct {
	ID    uint32 `cbor:"id" json:"id"`
	Name  string `cbor:"name" json:"name"`
	Lease uint64 `cbor:"lease" json:"lease"`
}

// ReleaseArgs end a lease.
type ReleaseArgs struct {
	Lease uint64 `cbor:"lease"`
}

// KeepArgs set a path's floor.
type KeepArgs struct {
	Path string `cbor:"path"`
	Min  int    `cbor:"min"`
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// backoffError is a request refused because its path is in backoff: it
// matches ErrBackoff and the last build's error.
type backoffError struct {
	path      string
	ago, next time.Duration
	last      error
}

func (e *backoffError) Error() string {
	return fmt.Sprintf("%s%s is in backoff: next try in %s (--wait queues for it); the last build, %s ago, failed: %s",
		errs.Prefix, e.path, e.next.Round(100*time.Millisecond), e.ago.Round(10*time.Millisecond), errs.Reason(e.last))
}

func (e *backoffError) Unwrap() []error { return []error{ErrBackoff, e.last} }
