package router

import (
	"context"

	"github.com/arbor-project/arbor/stream/wire"
)

// waiter is a pending request: it waits for one reply from dst.
type waiter struct {
	handle uint32
	dst    uint32
	ch     chan result // buffered 1: delivery never blocks
}

type result struct {
	msg *Message
	err error
}

// Request sends payload to handle on dst and waits for one reply. It
// returns when the reply arrives, a dead reply arrives (*DeadError), dst
// disconnects (*DisconnectError), ctx ends, or the router closes.
// It waits for room in the next hop's queue (see SendContext), so it must
// not be called from a handler.
func (r *Router) Request(ctx context.Context, dst, handle uint32, payload []byte) (*Message, error) {
	w, err := r.BeginWaiting(ctx, dst, handle, payload)
	if err != nil {
		return nil, err
	}
	return w.Wait(ctx)
}

// Pending is a request whose reply has not been read yet.
type Pending struct {
	r *Router
	w *waiter
}

// Begin sends a request and returns at once; Wait collects the reply. It
// never blocks (see Send): when the next hop's queue is full it fails with
// an error matching stream.ErrQueueFull.
func (r *Router) Begin(dst, handle uint32, payload []byte) (*Pending, error) {
	return r.begin(nil, dst, handle, payload, sendNow)
}

// BeginContext is Begin that waits for room in the next hop's queue until
// ctx ends (see SendContext): backpressure for a caller that pipelines.
// The link's write loop joins such requests into few writes.
func (r *Router) BeginContext(ctx context.Context, dst, handle uint32, payload []byte) (*Pending, error) {
	return r.begin(ctx, dst, handle, payload, sendWait)
}

// BeginWaiting is BeginContext for a caller that waits for the reply
// right after (Request, context.Remote.Call): when the next link has
// nothing queued, the request goes out on the caller's own write instead
// of waking the link's write loop (stream/inline.go).
func (r *Router) BeginWaiting(ctx context.Context, dst, handle uint32, payload []byte) (*Pending, error) {
	return r.begin(ctx, dst, handle, payload, sendWaitDirect)
}

func (r *Router) begin(ctx context.Context, dst, handle uint32, payload []byte, mode sendMode) (*Pending, error) {
	w := &waiter{handle: r.NewHandle(), dst: dst, ch: make(chan result, 1)}
	r.wmu.Lock()
	r.waiters[w.handle] = w
	set := r.byDst[dst]
	if set == nil {
		set = make(map[uint32]*waiter)
		r.byDst[dst] = set
	}
	set[w.handle] = w
	r.wmu.Unlock()
	if err := r.send(ctx, wire.Header{Dst: dst, Handle: handle, ReplyTo: w.handle}, payload, mode); err != nil {
		r.removeWaiter(w)
		return nil, err
	}
	return &Pending{r: r, w: w}, nil
}

// ReplyHandle is the handle the reply will arrive on.
func (p *Pending) ReplyHandle() uint32 { return p.w.handle }

// Wait blocks until the reply, a failure, ctx's end or the router's close.
func (p *Pending) Wait(ctx context.Context) (*Message, error) {
	select {
	case res := <-p.w.ch:
		return res.msg, res.err
	case <-ctx.Done():
		p.r.removeWaiter(p.w)
		return nil, ctx.Err()
	case <-p.r.closed:
		p.r.removeWaiter(p.w)
		return nil, ErrClosed
	}
}

func (r *Router) removeWaiter(w *waiter) bool {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if _, ok := r.waiters[w.handle]; !ok {
		return false
	}
	delete(r.waiters, w.handle)
	if set := r.byDst[w.dst]; set != nil {
		delete(set, w.handle)
		if len(set) == 0 {
			delete(r.byDst, w.dst)
		}
	}
	return true
}

// deliverReply completes the waiter m answers. It reports false when no
// waiter holds m's handle.
func (r *Router) deliverReply(m *Message) bool {
	r.wmu.Lock()
	w, ok := r.waiters[m.Handle]
	if !ok {
		r.wmu.Unlock()
		return false
	}
	if m.Src != w.dst && (!m.IsDead() || !r.mayFail(m.Src, w.dst)) {
		r.wmu.Unlock()
		r.log.Warn("dropped reply from the wrong node", "handle", m.Handle, "src", m.Src, "want", w.dst, "dead", m.IsDead())
		return true
	}
	delete(r.waiters, w.handle)
	if set := r.byDst[w.dst]; set != nil {
		delete(set, w.handle)
		if len(set) == 0 {
			delete(r.byDst, w.dst)
		}
	}
	r.wmu.Unlock()
	if m.IsDead() {
		reason, err := wire.DecodeDeadReason(m.Payload)
		if err != nil {
			reason = "undecodable dead reply: " + err.Error()
		}
		w.ch <- result{err: &DeadError{Node: m.Src, Reason: reason}}
		return true
	}
	w.ch <- result{msg: m}
	return true
}

// FailPending fails every request waiting on node id with err, at once.
// The RouteMonitor calls it when id disconnects.
func (r *Router) FailPending(id uint32, err error) int {
	r.wmu.Lock()
	set := r.byDst[id]
	delete(r.byDst, id)
	for h := range set {
		delete(r.waiters, h)
	}
	r.wmu.Unlock()
	for _, w := range set {
		w.ch <- result{err: err}
	}
	return len(set)
}

// FailPendingExcept fails every request waiting on a node for which keep
// returns false. Used when the parent link is lost: only nodes routed
// through children stay reachable.
func (r *Router) FailPendingExcept(keep func(id uint32) bool, err func(id uint32) error) int {
	r.wmu.Lock()
	var lost []*waiter
	for dst, set := range r.byDst {
		if keep(dst) {
			continue
		}
		for h, w := range set {
			delete(r.waiters, h)
			lost = append(lost, w)
		}
		delete(r.byDst, dst)
	}
	r.wmu.Unlock()
	for _, w := range lost {
		w.ch <- result{err: err(w.dst)}
	}
	return len(lost)
}

func (r *Router) failAll(err error) {
	r.FailPendingExcept(func(uint32) bool { return false }, func(uint32) error { return err })
}

// PendingCount is the number of requests waiting for replies.
func (r *Router) PendingCount() int {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	return len(r.waiters)
}

// mayFail reports whether node src may answer a request to dst with a dead
// reply: src is this node, an ancestor, a node on the path down to dst, or
// — for a dst not below this node — any node outside this node's subtree
// (the parent link's side, which the reverse-path check vouched for). A
// node below this one may not fail a request that does not go through it.
func (r *Router) mayFail(src, dst uint32) bool {
	if src == r.id || r.isAncestor(src) {
		return true
	}
	if _, _, below := r.Lookup(dst); below {
		return r.OnPathTo(src, dst)
	}
	_, _, srcBelow := r.Lookup(src)
	return !srcBelow
}
