package context

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/internal/errs"
	"github.com/arbor-project/arbor/routemonitor"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream/wire"
)

// Remote is one node of the tree as seen from this node. It is safe for
// concurrent use.
//
// A Remote follows its node through one subscription to the route
// monitor; Release ends it. A Remote that is dropped without Release
// ends its subscription when the garbage collector frees it, and one
// whose node disconnects ends it then.
type Remote struct {
	r    *router.Router
	id   uint32
	name string
	*liveness
}

// liveness is what the monitor's callback updates. It never points back
// to its Remote, so that a Remote nobody holds can be collected while its
// subscription is still in place.
type liveness struct {
	once sync.Once
	done chan struct{}
	err  error

	subMu    sync.Mutex
	unsub    func() // nil once unsubscribed
	released bool   // disconnected or released before unsub was known
}

// New returns the handle for node id (named name), reached through r. Done
// closes when m reports the node gone. Release it when done with it.
func New(r *router.Router, m *routemonitor.Monitor, id uint32, name string) *Remote {
	lv := &liveness{done: make(chan struct{})}
	rm := &Remote{r: r, id: id, name: name, liveness: lv}
	unsub := m.Subscribe(func(e routemonitor.Event) {
		switch {
		case e.Kind == routemonitor.DelRoute && e.ID == id:
			lv.disconnect(&router.DisconnectError{ID: id, Name: name, Cause: e.Cause})
		case e.Kind == routemonitor.ParentLost && id != r.ID():
			if _, _, routed := r.Lookup(id); !routed {
				lv.disconnect(&router.DisconnectError{ID: id, Name: name, Cause: e.Cause})
			}
		}
	})
	lv.subMu.Lock()
	if lv.released {
		defer unsub()
	} else {
		lv.unsub = unsub
	}
	lv.subMu.Unlock()
	runtime.AddCleanup(rm, func(lv *liveness) { lv.release() }, lv)
	return rm
}

// Release ends the handle's subscription to the route monitor: from then
// on Done no longer closes when the node disconnects (calls still fail at
// once when it does). A long-lived process that makes a handle per
// request releases each one. Release is idempotent; it must not be called
// from a route monitor callback.
func (rm *Remote) Release() { rm.liveness.release() }

func (lv *liveness) release() {
	lv.subMu.Lock()
	unsub := lv.unsub
	lv.unsub, lv.released = nil, true
	lv.subMu.Unlock()
	if unsub != nil {
		unsub()
	}
}

func (lv *liveness) disconnect(err error) {
	lv.once.Do(func() {
		lv.err = err
		close(lv.done)
		lv.subMu.Lock()
		unsub := lv.unsub
		lv.unsub, lv.released = nil, true
		lv.subMu.Unlock()
		if unsub != nil {
			go unsub() // not from inside the monitor's callback
		}
	})
}

// ID is the node's ID.
func (rm *Remote) ID() uint32 { return rm.id }

// Name is the node's name.
func (rm *Remote) Name() string { return rm.name }

// Done is closed when the node disconnects.
func (rm *Remote) Done() <-chan struct{} { return rm.done }

// Err is why the node disconnected (a *router.DisconnectError), or nil.
func (rm *Remote) Err() error {
	select {
	case <-rm.done:
		return rm.err
	default:
		return nil
	}
}

// Call runs fn on the node with args and decodes its result into out (a
// pointer, or nil to discard it). It blocks until the result arrives, the
// node disconnects, or ctx ends; ctx's deadline travels with the call and
// its cancellation cancels the function on the remote node.
func (rm *Remote) Call(ctx context.Context, fn string, args, out any) error {
	c, err := rm.start(ctx, fn, args, true)
	if err != nil {
		return err
	}
	return c.Wait(out)
}

// PendingCall is a call started with Start.
type PendingCall struct {
	rm  *Remote
	ctx context.Context
	fn  string
	p   *router.Pending
}

// Start sends a call and returns at once; Wait collects its result.
func (rm *Remote) Start(ctx context.Context, fn string, args any) (*PendingCall, error) {
	return rm.start(ctx, fn, args, false)
}

// start sends a call; waiting says the caller waits for it at once (Call),
// which lets the request skip the link's write loop on an idle link.
func (rm *Remote) start(ctx context.Context, fn string, args any, waiting bool) (*PendingCall, error) {
	if err := rm.Err(); err != nil {
		return nil, err
	}
	req := wire.CallRequest{Fn: fn}
	if args != nil {
		raw, err := wire.Marshal(args)
		if err != nil {
			return nil, wrap(err, "call %s on node %d (%s)", fn, rm.id, rm.name)
		}
		req.Args = raw
	}
	if dl, ok := ctx.Deadline(); ok {
		req.DeadlineUnixNano = dl.UnixNano()
	}
	body, err := wire.EncodeCallRequest(req)
	if err != nil {
		return nil, err
	}
	begin := rm.r.BeginContext
	if waiting {
		begin = rm.r.BeginWaiting
	}
	p, err := begin(ctx, rm.id, wire.HandleCall, body)
	if err != nil {
		return nil, wrap(err, "call %s on node %d (%s)", fn, rm.id, rm.name)
	}
	return &PendingCall{rm: rm, ctx: ctx, fn: fn, p: p}, nil
}

// Wait blocks until the call's result, its failure, or ctx's end. When ctx
// ends first, a CANCEL goes to the node running the call.
func (c *PendingCall) Wait(out any) error {
	msg, err := c.p.Wait(c.ctx)
	if err != nil {
		if c.ctx.Err() != nil && errors.Is(err, c.ctx.Err()) {
			c.cancelRemote()
		}
		return wrap(err, "call %s on node %d (%s)", c.fn, c.rm.id, c.rm.name)
	}
	rep, err := wire.DecodeCallReply(msg.Payload)
	if err != nil {
		return wrap(err, "reply to %s from node %d (%s)", c.fn, c.rm.id, c.rm.name)
	}
	if rep.Error != nil {
		// The router checked that the answer came from the node called:
		// the error names that node and the function from what this side
		// knows, not from what the node says about itself.
		re := funcs.FromWire(rep.Error)
		re.NodeID, re.Fn = c.rm.id, c.fn
		if c.rm.name != "" {
			re.Node = c.rm.name
		}
		return re
	}
	if out == nil || len(rep.Result) == 0 {
		return nil
	}
	if err := wire.Unmarshal(rep.Result, out); err != nil {
		return wrap(err, "result of %s from node %d (%s)", c.fn, c.rm.id, c.rm.name)
	}
	return nil
}

func (c *PendingCall) cancelRemote() {
	body, err := wire.Marshal(wire.Cancel{ReplyTo: c.p.ReplyHandle()})
	if err != nil {
		return
	}
	_ = c.rm.r.SendControl(wire.Header{Dst: c.rm.id, Handle: wire.HandleCancel}, body)
}

// Shutdown asks the node to shut down its subtree and exit, and waits until
// it has disconnected or ctx ends.
func (rm *Remote) Shutdown(ctx context.Context) error {
	if rm.Err() != nil {
		return nil
	}
	if err := rm.r.SendControl(wire.Header{Dst: rm.id, Handle: wire.HandleShutdown}, nil); err != nil {
		return err
	}
	select {
	case <-rm.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("arbor: shutdown of node %d (%s): %w", rm.id, rm.name, ctx.Err())
	}
}

// Ping measures one round trip to the node.
func (rm *Remote) Ping(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	if _, err := rm.r.Request(ctx, rm.id, wire.HandlePing, nil); err != nil {
		return 0, wrap(err, "ping node %d (%s)", rm.id, rm.name)
	}
	return time.Since(start), nil
}

// wrap adds what this node was doing to err. err is one of ours (the
// router's, the codec's), which carries the "arbor: " prefix, so the
// context goes behind it; a context's end is not ours, and makes this the
// leaf: "arbor: call agent.sleep on node 2 (a/b): context canceled".
func wrap(err error, format string, a ...any) error {
	what := fmt.Sprintf(format, a...)
	if errs.IsContext(err) {
		return fmt.Errorf("%s%s: %w", errs.Prefix, what, err)
	}
	return fmt.Errorf("%w (%s)", err, what)
}
