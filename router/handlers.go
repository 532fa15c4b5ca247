package router

import (
	"context"
	"fmt"

	"github.com/arbor-project/arbor/stream/wire"
)

// Handler receives messages addressed to one handle. It runs on the read
// loop of the link the message arrived on (or the sender's goroutine for a
// local message) and must not block: hand long work to a goroutine or a
// bounded queue.
type Handler func(m *Message)

// Policy decides whether a message may reach a handler. A refused message
// gets a dead reply "refused by policy".
type Policy func(m *Message) bool

type handlerEntry struct {
	fn     Handler
	policy Policy
}

// AncestorsOnly admits messages sent with the authority of this node or one
// of its ancestors: the default policy for calls into a node.
func AncestorsOnly(r *Router) Policy {
	return func(m *Message) bool { return m.Auth == r.id || r.isAncestor(m.Auth) }
}

// Descendants admits messages with the authority of a node routed below
// this one (or this node itself): for log records and ID requests.
func Descendants(r *Router) Policy {
	return func(m *Message) bool {
		if m.Auth == r.id {
			return true
		}
		_, _, ok := r.Lookup(m.Auth)
		return ok
	}
}

// Anyone admits every message that passed the reverse-path check.
func Anyone(*Message) bool { return true }

// Handle registers fn on a well-known handle. A nil policy means
// AncestorsOnly. Registering a handle twice replaces the first.
func (r *Router) Handle(handle uint32, fn Handler, policy Policy) {
	if policy == nil {
		policy = AncestorsOnly(r)
	}
	r.mu.Lock()
	r.handlers[handle] = handlerEntry{fn: fn, policy: policy}
	r.mu.Unlock()
}

// AddHandler registers fn on a newly allocated handle (from
// wire.FirstDynamicHandle up, never reused) and returns it.
func (r *Router) AddHandler(fn Handler, policy Policy) uint32 {
	h := r.NewHandle()
	r.Handle(h, fn, policy)
	return h
}

// RemoveHandler unregisters a handle; later messages to it get "invalid handle".
func (r *Router) RemoveHandler(handle uint32) {
	r.mu.Lock()
	delete(r.handlers, handle)
	r.mu.Unlock()
}

// NewHandle allocates a handle number from wire.FirstDynamicHandle up.
func (r *Router) NewHandle() uint32 { return r.nextHandle.Add(1) }

// deliver hands m to the local receiver for its handle: a reply waiter or a
// registered handler.
func (r *Router) deliver(m *Message) {
	if m.Handle >= wire.FirstDynamicHandle && r.deliverReply(m) {
		return
	}
	r.mu.RLock()
	e, ok := r.handlers[m.Handle]
	r.mu.RUnlock()
	if !ok {
		if m.IsDead() {
			return // a dead reply for a waiter that already gave up
		}
		r.log.Debug("message for unknown handle", "handle", m.Handle, "src", m.Src)
		r.refuse(m, ReasonInvalidHandle)
		return
	}
	if !e.policy(m) {
		r.log.Warn("message refused by policy", "handle", m.Handle, "auth", m.Auth, "src", m.Src)
		r.refuse(m, ReasonRefused)
		return
	}
	e.fn(m)
}

// Reply answers m with payload, addressed to m's ReplyTo on m's source. It
// never blocks, so a handler may call it, and it is not refused when the
// first hop's data queue is full: an answer is owed to a request the peer
// made, and a caller must never wait on a lost reply. It goes in the
// control class (stream.Link.SendControl), whose bound closes the link of
// a peer that sends requests and never reads the answers. Called from the
// read loop m arrived on with nothing buffered behind m, it may write the
// answer itself (stream/inline.go); a goroutine of its own (a worker)
// uses ReplyContext.
func (r *Router) Reply(m *Message, payload []byte) error {
	return r.reply(nil, m, payload, direct(sendControl, m.Port))
}

// ReplyContext is Reply for a goroutine that may wait for room in the next
// hop's queue (see SendContext): a worker that ran a call.
func (r *Router) ReplyContext(ctx context.Context, m *Message, payload []byte) error {
	return r.reply(ctx, m, payload, sendWait)
}

// ReplyUrgent is Reply ahead of everything queued (see SendUrgent): the
// answer to a heartbeat probe.
func (r *Router) ReplyUrgent(m *Message, payload []byte) error {
	return r.reply(nil, m, payload, sendUrgent)
}

func (r *Router) reply(ctx context.Context, m *Message, payload []byte, mode sendMode) error {
	if m.ReplyTo == wire.HandleNone {
		return fmt.Errorf("arbor: node %d: message from %d on handle %d wants no reply", r.id, m.Src, m.Handle)
	}
	return r.send(ctx, wire.Header{Dst: m.Src, Handle: m.ReplyTo, Flags: wire.FlagReply}, payload, mode)
}

// ReplyError answers m with a dead reply carrying reason.
func (r *Router) ReplyError(m *Message, reason string) { r.refuse(m, reason) }
