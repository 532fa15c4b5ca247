package funcs

import (
	"context"
	"errors"
	"fmt"
	"github.com/arbor-project/arbor/internal/errs"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream/wire"
)

// Config bounds the calls a node runs at once.
type Config struct {
	// MaxConcurrent calls run at once; more wait in a queue.
	MaxConcurrent int
	// MaxQueued calls may wait; beyond that a call is refused "busy".
	MaxQueued int
	// LinkConcurrent and LinkQueued bound the share of those one child
	// link may hold, for itself and the subtree behind it (OpenSSH's
	// MaxSessions, per connection): at most LinkConcurrent of its calls
	// run at once and LinkQueued more wait; past that its calls are
	// refused "busy" at once, so one link cannot take every worker from
	// its siblings. Zero means a quarter of MaxConcurrent (at least 1) and
	// a quarter of MaxQueued. Calls from this node and from its parent
	// link, the node's own authority, are bounded by MaxConcurrent and
	// MaxQueued alone.
	LinkConcurrent int
	LinkQueued     int
	// Inline names functions that return at once and never block (no
	// I/O, no locks held by others, no waiting): they run on the link's
	// read loop as the call arrives, without a hand-off to a worker, and
	// their answer is queued as a control frame, which never waits (past
	// the link's control reserve it is dropped, as a refusal is, and the
	// caller's deadline ends its wait). They hold no slot of the bounds
	// above and cannot be cancelled. A function that may block must not
	// be named here: it would stall every frame behind it on the link.
	Inline []string
}

// DefaultConfig: 256 concurrent calls, 4096 queued; 64 running and 1024
// queued per child link; the short built-ins run inline: agent.ping (the
// no-op), agent.info (no lookup that may wait: the user's name is looked
// up once) and agent.routes (one page of the table, at most 1000 routes).
func DefaultConfig() Config {
	return Config{MaxConcurrent: 256, MaxQueued: 4096, Inline: []string{"agent.ping", "agent.info", "agent.routes"}}
}

type callKey struct {
	src, replyTo uint32
}

// Dispatcher runs CALL messages against a registry. It is safe for
// concurrent use.
type Dispatcher struct {
	r      *router.Router
	reg    *Registry
	values map[string]any
	slots  chan struct{}
	queued atomic.Int64
	maxQ   int64
	// linkRun and linkMax bound one child link: calls running, and calls
	// running or queued.
	linkRun, linkMax int

	mu      sync.Mutex
	running map[callKey]context.CancelFunc
	// links holds the calls of each child link that has some; an entry
	// is deleted when its last call ends.
	links map[*router.Port]*linkCalls
	base  context.Context
	stop  context.CancelFunc
	wg    sync.WaitGroup
	work  chan func() // hands a call to an idle worker
	// inline is Config.Inline; read only after Serve.
	inline map[string]bool
}

// Serve registers CALL and CANCEL on r and runs calls from reg. values is
// handed to every function as Call.Values.
func Serve(r *router.Router, reg *Registry, cfg Config, values map[string]any) *Dispatcher {
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = DefaultConfig().MaxConcurrent
	}
	if cfg.MaxQueued < 0 {
		cfg.MaxQueued = 0
	}
	if cfg.LinkConcurrent <= 0 {
		cfg.LinkConcurrent = max(1, cfg.MaxConcurrent/4)
	}
	if cfg.LinkQueued <= 0 {
		cfg.LinkQueued = cfg.MaxQueued / 4
	}
	base, stop := context.WithCancel(context.Background())
	d := &Dispatcher{
		r: r, reg: reg, values: values,
		slots:   make(chan struct{}, cfg.MaxConcurrent),
		maxQ:    int64(cfg.MaxQueued),
		linkRun: min(cfg.LinkConcurrent, cfg.MaxConcurrent),
		linkMax: min(cfg.LinkConcurrent, cfg.MaxConcurrent) + min(cfg.LinkQueued, cfg.MaxQueued),
		running: make(map[callKey]context.CancelFunc),
		links:   make(map[*router.Port]*linkCalls),
		base:    base,
		stop:    stop,
		work:    make(chan func()),
		inline:  make(map[string]bool, len(cfg.Inline)),
	}
	for _, fn := range cfg.Inline {
		d.inline[fn] = true
	}
	// Each function applies its own policy; the handle admits everyone the
	// router let through.
	r.Handle(wire.HandleCall, d.onCall, router.Anyone)
	r.Handle(wire.HandleCancel, d.onCancel, router.Anyone)
	return d
}

// Close cancels every running call and waits for them to return.
func (d *Dispatcher) Close() {
	d.stop()
	d.wg.Wait()
}

// linkCalls is what one child link's calls hold.
type linkCalls struct {
	n   int           // calls admitted: running or queued; guarded by Dispatcher.mu
	run chan struct{} // running slots of this link
}

// admitLink counts a call arriving on port against the link's quota. It
// returns the link's share (nil for a call the quota does not cover) and
// false when the link already has as many calls as it may.
func (d *Dispatcher) admitLink(port *router.Port) (*linkCalls, bool) {
	if port == nil || port.IsParent {
		return nil, true
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	lc := d.links[port]
	if lc == nil {
		lc = &linkCalls{run: make(chan struct{}, d.linkRun)}
		d.links[port] = lc
	}
	if lc.n >= d.linkMax {
		return nil, false
	}
	lc.n++
	return lc, true
}

// leaveLink ends a call admitted by admitLink.
func (d *Dispatcher) leaveLink(port *router.Port, lc *linkCalls) {
	if lc == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if lc.n--; lc.n == 0 && d.links[port] == lc {
		delete(d.links, port)
	}
}

// onCall runs on a link's read loop: it decodes and checks the request and
// hands the call to a goroutine. It never waits: refusals are answered as
// control frames.
func (d *Dispatcher) onCall(m *router.Message) {
	req, err := wire.DecodeCallRequest(m.Payload)
	if err != nil {
		d.refuse(m, "", KindBadArgs, fmt.Sprintf("bad CALL payload: %v", err))
		return
	}
	e, ok := d.reg.lookup(req.Fn)
	if !ok {
		d.refuse(m, req.Fn, KindUnknown, fmt.Sprintf("unknown function %s on node %s", req.Fn, d.r.Name()))
		return
	}
	if e.policy == AncestorsOnly && m.Auth != d.r.ID() && !d.r.IsAncestor(m.Auth) {
		d.refuse(m, req.Fn, KindRefused, fmt.Sprintf("refused by policy: node %d may not call %s", m.Auth, req.Fn))
		return
	}
	if d.inline[req.Fn] {
		d.runInline(m, e, req)
		return
	}
	lc, ok := d.admitLink(m.Port)
	if !ok {
		d.refuse(m, req.Fn, KindBusy, fmt.Sprintf("busy: too many calls from link to node %d (%d running or queued, the most one link may have)",
			m.Port.PeerID, d.linkMax))
		return
	}
	if d.queued.Add(1) > d.maxQ+int64(cap(d.slots)) {
		d.queued.Add(-1)
		d.leaveLink(m.Port, lc)
		d.refuse(m, req.Fn, KindBusy, fmt.Sprintf("busy: %d calls running and %d queued", cap(d.slots), d.maxQ))
		return
	}
	// One context per call, released when the call ends: a second one
	// left behind would stay registered with d.base for the node's life.
	var ctx context.Context
	var cancel context.CancelFunc
	if req.DeadlineUnixNano > 0 {
		ctx, cancel = context.WithDeadline(d.base, time.Unix(0, req.DeadlineUnixNano))
	} else {
		ctx, cancel = context.WithCancel(d.base)
	}
	key := callKey{m.Src, m.ReplyTo}
	if m.ReplyTo != wire.HandleNone {
		d.mu.Lock()
		d.running[key] = cancel
		d.mu.Unlock()
	}
	d.dispatch(func() {
		defer d.queued.Add(-1)
		defer d.leaveLink(m.Port, lc)
		defer func() {
			d.mu.Lock()
			delete(d.running, key)
			d.mu.Unlock()
			cancel()
		}()
		// A call from a child link waits for one of its link's running
		// slots before it takes a shared one: the calls of a link that
		// has its share running wait without holding a shared slot.
		if lc != nil {
			select {
			case lc.run <- struct{}{}:
			case <-ctx.Done():
				d.fail(m, req.Fn, KindCancelled, "cancelled while queued: "+ctx.Err().Error())
				return
			}
			defer func() { <-lc.run }()
		}
		select {
		case d.slots <- struct{}{}:
		case <-ctx.Done():
			d.fail(m, req.Fn, KindCancelled, "cancelled while queued: "+ctx.Err().Error())
			return
		}
		defer func() { <-d.slots }()
		d.run(ctx, m, e, req)
	})
}

// workerIdle is how long an idle worker goroutine waits for the next call
// before it exits.
const workerIdle = 5 * time.Second

// dispatch runs job on an idle worker goroutine, or on a new one when none
// is idle. Reusing workers matters for small calls: a fresh goroutine
// starts with a small stack and grows it (by copying) the first time a
// call encodes its result, which cost about 8% of a child's CPU in the
// 1-hop round-trip profile.
func (d *Dispatcher) dispatch(job func()) {
	select {
	case d.work <- job:
		return
	default:
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		idle := time.NewTimer(workerIdle)
		defer idle.Stop()
		for {
			job()
			job = nil
			idle.Reset(workerIdle)
			select {
			case job = <-d.work:
			case <-idle.C:
				return
			case <-d.base.Done():
				return
			}
		}
	}()
}

func (d *Dispatcher) run(ctx context.Context, m *router.Message, e *entry, req wire.CallRequest) {
	defer func() {
		if p := recover(); p != nil {
			d.r.Logger().Error("function panicked", "fn", req.Fn, "panic", p, "stack", string(debug.Stack()))
			d.fail(m, req.Fn, KindPanic, fmt.Sprintf("panic: %v", p))
		}
	}()
	c := &Call{Router: d.r, Fn: req.Fn, Src: m.Src, Auth: m.Auth, Values: d.values}
	res, err := e.invoke(ctx, c, req.Args)
	if m.ReplyTo == wire.HandleNone {
		return
	}
	body, kind, msg := d.replyBody(ctx, res, err)
	if body == nil {
		d.fail(m, req.Fn, kind, msg)
		return
	}
	if err := d.r.ReplyContext(d.base, m, body); err != nil {
		// A router closing (this node shutting down, e.g. arbor stop while
		// a watch runs) drops the answers still out: expected, not a
		// warning.
		if errors.Is(err, router.ErrClosed) {
			d.r.Logger().Debug("could not send call result", "fn", req.Fn, "to", m.Src, "error", err)
		} else {
			d.r.Logger().Warn("could not send call result", "fn", req.Fn, "to", m.Src, "error", err)
		}
	}
}

// runInline runs a function of Config.Inline on the read loop and queues
// its answer without waiting (see Config.Inline).
func (d *Dispatcher) runInline(m *router.Message, e *entry, req wire.CallRequest) {
	defer func() {
		if p := recover(); p != nil {
			d.r.Logger().Error("function panicked", "fn", req.Fn, "panic", p, "stack", string(debug.Stack()))
			d.refuse(m, req.Fn, KindPanic, fmt.Sprintf("panic: %v", p))
		}
	}()
	c := &Call{Router: d.r, Fn: req.Fn, Src: m.Src, Auth: m.Auth, Values: d.values}
	res, err := e.invoke(d.base, c, req.Args)
	if m.ReplyTo == wire.HandleNone {
		return
	}
	body, kind, msg := d.replyBody(d.base, res, err)
	if body == nil {
		d.refuse(m, req.Fn, kind, msg)
		return
	}
	if err := d.r.Reply(m, body); err != nil {
		d.r.Logger().Debug("could not send call result", "fn", req.Fn, "to", m.Src, "error", err)
	}
}

// replyBody is a CALL's answer from what its function returned: the reply's
// body, or (body nil) the kind and message of the error to answer with: bad
// arguments, cancelled (ctx ended), the function's error, or a result that
// cannot be encoded or is larger than a message.
func (d *Dispatcher) replyBody(ctx context.Context, res []byte, err error) (body []byte, kind, msg string) {
	if err != nil {
		kind := KindError
		switch {
		case errors.As(err, new(*argsError)):
			kind = KindBadArgs
		case ctx.Err() != nil && errors.Is(err, ctx.Err()):
			kind = KindCancelled
		}
		return nil, kind, err.Error()
	}
	body, err = wire.EncodeCallResult(res)
	if err == nil && uint64(len(body)) > uint64(d.r.MaxMessage()) {
		err = &wire.TooLargeError{Size: uint64(len(body)), Max: d.r.MaxMessage()}
	}
	if err != nil {
		return nil, KindError, "result: " + errs.Reason(err)
	}
	return body, "", ""
}

// fail answers m with a typed error, from a worker: it may wait for room
// in the queue toward the caller.
func (d *Dispatcher) fail(m *router.Message, fn, kind, msg string) {
	if m.ReplyTo == wire.HandleNone {
		return
	}
	body, err := d.errorReply(fn, kind, msg)
	if err != nil {
		d.r.ReplyError(m, msg)
		return
	}
	if err := d.r.ReplyContext(d.base, m, body); err != nil {
		d.r.Logger().Warn("could not send call error", "fn", fn, "to", m.Src, "error", err)
	}
}

// refuse answers m with a typed error from the read loop: a control
// frame, queued without waiting (past the link's control reserve it is
// dropped, and the caller's deadline ends its wait).
func (d *Dispatcher) refuse(m *router.Message, fn, kind, msg string) {
	if m.ReplyTo == wire.HandleNone {
		return
	}
	body, err := d.errorReply(fn, kind, msg)
	if err != nil {
		d.r.ReplyError(m, msg)
		return
	}
	if err := d.r.Reply(m, body); err != nil {
		d.r.Logger().Debug("could not send call refusal", "fn", fn, "to", m.Src, "error", err)
	}
}

func (d *Dispatcher) errorReply(fn, kind, msg string) ([]byte, error) {
	return wire.Marshal(wire.CallReply{Error: &wire.CallError{
		NodeID: d.r.ID(), Node: d.r.Name(), Fn: fn, Message: msg, Kind: kind,
	}})
}

// onCancel cancels the call the sender started with the given reply handle.
func (d *Dispatcher) onCancel(m *router.Message) {
	var c wire.Cancel
	if err := wire.Unmarshal(m.Payload, &c); err != nil {
		d.r.Logger().Warn("bad CANCEL payload", "src", m.Src, "error", err)
		return
	}
	d.mu.Lock()
	cancel := d.running[callKey{m.Src, c.ReplyTo}]
	d.mu.Unlock()
	if cancel != nil {
		d.r.Logger().Debug("call cancelled by caller", "src", m.Src, "reply_to", c.ReplyTo)
		cancel()
	}
}
