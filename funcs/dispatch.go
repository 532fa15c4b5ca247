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
}

// DefaultConfig: 256 concurrent calls, 4096 queued.
func DefaultConfig() Config { return Config{MaxConcurrent: 256, MaxQueued: 4096} }

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

	mu      sync.Mutex
	running map[callKey]context.CancelFunc
	base    context.Context
	stop    context.CancelFunc
	wg      sync.WaitGroup
	work    chan func() // hands a call to an idle worker
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
	base, stop := context.WithCancel(context.Background())
	d := &Dispatcher{
		r: r, reg: reg, values: values,
		slots:   make(chan struct{}, cfg.MaxConcurrent),
		maxQ:    int64(cfg.MaxQueued),
		running: make(map[callKey]context.CancelFunc),
		base:    base,
		stop:    stop,
		work:    make(chan func()),
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

// onCall runs on a link's read loop: it decodes and checks the request and
// hands the call to a goroutine.
func (d *Dispatcher) onCall(m *router.Message) {
	var req wire.CallRequest
	if err := wire.Unmarshal(m.Payload, &req); err != nil {
		d.fail(m, "", KindBadArgs, fmt.Sprintf("bad CALL payload: %v", err))
		return
	}
	e, ok := d.reg.lookup(req.Fn)
	if !ok {
		d.fail(m, req.Fn, KindUnknown, fmt.Sprintf("unknown function %s on node %s", req.Fn, d.r.Name()))
		return
	}
	if e.policy == AncestorsOnly && m.Auth != d.r.ID() && !d.r.IsAncestor(m.Auth) {
		d.fail(m, req.Fn, KindRefused, fmt.Sprintf("refused by policy: node %d may not call %s", m.Auth, req.Fn))
		return
	}
	if d.queued.Add(1) > d.maxQ+int64(cap(d.slots)) {
		d.queued.Add(-1)
		d.fail(m, req.Fn, KindBusy, fmt.Sprintf("busy: %d calls running and %d queued", cap(d.slots), d.maxQ))
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
		defer func() {
			d.mu.Lock()
			delete(d.running, key)
			d.mu.Unlock()
			cancel()
		}()
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
	if err != nil {
		kind := KindError
		var ae *argsError
		switch {
		case errors.As(err, &ae):
			kind = KindBadArgs
		case ctx.Err() != nil && errors.Is(err, ctx.Err()):
			kind = KindCancelled
		}
		d.fail(m, req.Fn, kind, err.Error())
		return
	}
	body, err := wire.Marshal(wire.CallReply{Result: res})
	if err == nil && uint64(len(body)) > uint64(d.r.MaxMessage()) {
		err = &wire.TooLargeError{Size: uint64(len(body)), Max: d.r.MaxMessage()}
	}
	if err != nil {
		d.fail(m, req.Fn, KindError, "result: "+errs.Reason(err))
		return
	}
	if err := d.r.ReplyContext(d.base, m, body); err != nil {
		d.r.Logger().Warn("could not send call result", "fn", req.Fn, "to", m.Src, "error", err)
	}
}

// fail answers m with a typed error.
func (d *Dispatcher) fail(m *router.Message, fn, kind, msg string) {
	if m.ReplyTo == wire.HandleNone {
		return
	}
	body, err := wire.Marshal(wire.CallReply{Error: &wire.CallError{
		NodeID: d.r.ID(), Node: d.r.Name(), Fn: fn, Message: msg, Kind: kind,
	}})
	if err != nil {
		d.r.ReplyError(m, msg)
		return
	}
	if err := d.r.ReplyContext(d.base, m, body); err != nil {
		d.r.Logger().Warn("could not send call error", "fn", fn, "to", m.Src, "error", err)
	}
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
