package router

import (
	"context"
	"errors"
	"fmt"
	"github.com/arbor-project/arbor/internal/errs"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
)

// Message is a frame as the router hands it to a handler.
type Message struct {
	wire.Header
	Payload []byte
	// Port is the link the message arrived on; nil when it was sent by
	// this node to itself.
	Port *Port
}

// Observer learns about links coming and going. The RouteMonitor is the
// one observer a node has. Both methods are called on the link's own
// goroutines and must not block for long.
type Observer interface {
	// PortUp is called when a link is attached, before its first frame is
	// read, so routes it brings are known before any traffic from it. An
	// error refuses the link: it is closed, PortDown is not called, and the
	// attach fails with that error.
	PortUp(p *Port) error
	// PortDown is called once, after the link has closed and its loops have
	// ended. Routes through p are still in the table when it is called.
	PortDown(p *Port, cause error)
}

// Port is a link as the router sees it: which node is at the other end,
// whether it is the parent, and the IDs its traffic has been sent to.
type Port struct {
	Link     *stream.Link
	PeerID   uint32
	PeerName string
	IsParent bool

	// authority marks a child link trusted with this node's authority
	// (see AttachChildWithAuthority).
	authority bool

	origin origin // what may be routed through this link (origin.go)
	// clientCalls tracks the requests of a link with authority (origin.go).
	clientCalls clientCalls

	lastEgress atomic.Uint64 // dst+1 of the last recorded egress: skips the lock on repeats
	egressMu   sync.Mutex
	egress     map[uint32]struct{}
	egressAll  bool // the set overflowed: every withdrawal goes down the link
}

// maxEgress bounds a link's egress set: a child may address any of 2^32
// IDs, and each would cost an entry. Past it the link is treated as having
// talked to every node, which costs a DEL_ROUTE per withdrawal instead.
const maxEgress = 4096

func (p *Port) String() string {
	if p.IsParent {
		return fmt.Sprintf("parent link (node %d)", p.PeerID)
	}
	return fmt.Sprintf("link to node %d (%s)", p.PeerID, p.PeerName)
}

// noteEgress records that traffic arriving on p was sent toward dst.
func (p *Port) noteEgress(dst uint32) {
	if p.lastEgress.Load() == uint64(dst)+1 {
		return
	}
	p.egressMu.Lock()
	if len(p.egress) < maxEgress {
		p.egress[dst] = struct{}{}
	} else if _, ok := p.egress[dst]; !ok {
		p.egressAll = true
	}
	p.egressMu.Unlock()
	p.lastEgress.Store(uint64(dst) + 1)
}

// TalkedTo reports whether traffic from this link was ever sent toward id.
func (p *Port) TalkedTo(id uint32) bool {
	p.egressMu.Lock()
	defer p.egressMu.Unlock()
	_, ok := p.egress[id]
	return ok || p.egressAll
}

// ForgetEgress drops id from the link's egress set (after DEL_ROUTE went down it).
func (p *Port) ForgetEgress(id uint32) {
	p.egressMu.Lock()
	delete(p.egress, id)
	p.egressMu.Unlock()
	p.lastEgress.CompareAndSwap(uint64(id)+1, 0)
}

type route struct {
	port   *Port
	name   string
	parent uint32 // the node's parent, as its ADD_ROUTE told
}

// Router routes messages for one node. It is safe for concurrent use.
type Router struct {
	id        uint32
	name      string
	ancestors []uint32
	maxMsg    uint32
	siblings  bool
	quota     Quota
	log       hclog.Logger

	mu       sync.RWMutex
	shut     bool // set by Close under mu: no link is attached after it
	parent   *Port
	children map[uint32]*Port // child ID → port
	routes   map[uint32]route // node ID → child port it is reached through
	handlers map[uint32]handlerEntry
	observer Observer

	nextHandle atomic.Uint32
	wmu        sync.Mutex
	waiters    map[uint32]*waiter            // reply handle → waiter
	byDst      map[uint32]map[uint32]*waiter // dst → reply handle → waiter

	ids idAllocator

	chans channelTable // bulk channels (channel.go)

	closeOnce sync.Once
	closed    chan struct{}

	// Counters, for tests and diagnostics.
	spoofed   atomic.Uint64
	dead      atomic.Uint64
	congested atomic.Uint64
}

// New builds a router. A nil cfg means DefaultConfig (the root).
func New(cfg *Config) (*Router, error) {
	if cfg == nil {
		cfg = DefaultConfig()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = hclog.Default()
	}
	r := &Router{
		id:        cfg.ID,
		name:      cfg.Name,
		ancestors: append([]uint32(nil), cfg.Ancestors...),
		maxMsg:    cfg.MaxMessage,
		siblings:  cfg.AllowSiblingRoutes,
		quota:     cfg.Quota.withDefaults(),
		log:       log.With("node", cfg.ID),
		children:  make(map[uint32]*Port),
		routes:    make(map[uint32]route),
		handlers:  make(map[uint32]handlerEntry),
		waiters:   make(map[uint32]*waiter),
		byDst:     make(map[uint32]map[uint32]*waiter),
		closed:    make(chan struct{}),
	}
	r.nextHandle.Store(wire.FirstDynamicHandle - 1)
	r.ids.init(r)
	r.Handle(wire.HandleAllocateID, r.handleAllocateID, fromChildPeer)
	return r, nil
}

// ID is this node's ID.
func (r *Router) ID() uint32 { return r.id }

// Name is this node's name.
func (r *Router) Name() string { return r.name }

// Ancestors lists this node's ancestors, parent first.
func (r *Router) Ancestors() []uint32 { return append([]uint32(nil), r.ancestors...) }

// MaxMessage is the largest payload this node sends.
func (r *Router) MaxMessage() uint32 { return r.maxMsg }

// AllowSiblingRoutes reports whether unidirectional routing is lifted.
func (r *Router) AllowSiblingRoutes() bool { return r.siblings }

// Logger is the node's logger.
func (r *Router) Logger() hclog.Logger { return r.log }

// Done is closed when the router has been closed.
func (r *Router) Done() <-chan struct{} { return r.closed }

// Congested counts messages refused because the link they were to leave
// on had a full send queue.
func (r *Router) Congested() uint64 { return r.congested.Load() }

// SpoofedDropped counts frames dropped by the reverse-path check.
func (r *Router) SpoofedDropped() uint64 { return r.spoofed.Load() }

// SetObserver installs the observer of link events. It must be called
// before the first link is attached.
func (r *Router) SetObserver(o Observer) {
	r.mu.Lock()
	r.observer = o
	r.mu.Unlock()
}

// AttachParent makes l this node's parent link and starts it.
func (r *Router) AttachParent(l *stream.Link) (*Port, error) {
	p := &Port{Link: l, PeerID: l.PeerID(), IsParent: true, egress: map[uint32]struct{}{}}
	r.mu.Lock()
	if r.shut {
		r.mu.Unlock()
		l.Close()
		return nil, ErrClosed
	}
	if r.parent != nil {
		r.mu.Unlock()
		return nil, fmt.Errorf("arbor: node %d already has a parent link", r.id)
	}
	if len(r.ancestors) == 0 || r.ancestors[0] != p.PeerID {
		r.mu.Unlock()
		return nil, fmt.Errorf("arbor: node %d: parent link peer %d is not the parent named in hello", r.id, p.PeerID)
	}
	r.parent = p
	r.mu.Unlock()
	if err := r.start(p); err != nil {
		return nil, err
	}
	return p, nil
}

// AttachChild attaches l, a link opened with stream.Open, as a child link
// and starts it. The observer hears of it before any frame is read.
func (r *Router) AttachChild(l *stream.Link) (*Port, error) {
	return r.attachChild(l, false)
}

// AttachChildWithAuthority attaches l like AttachChild, for a peer this
// node trusts to act with its own authority: a CLI client on the control
// socket of arbor serve. Frames from it pass the reverse-path check as
// usual (src and auth must be the peer or routed through it) and then
// carry this node's ID as their authority, so the tree treats them as the
// root's own. They may also be forwarded to and from other child links.
func (r *Router) AttachChildWithAuthority(l *stream.Link) (*Port, error) {
	return r.attachChild(l, true)
}

// HasAuthority reports whether frames from p carry this node's authority.
func (p *Port) HasAuthority() bool { return p.authority }

func (r *Router) attachChild(l *stream.Link, authority bool) (*Port, error) {
	h := l.Hello()
	p := &Port{Link: l, PeerID: h.ID, PeerName: h.Name, authority: authority, egress: map[uint32]struct{}{}}
	r.mu.Lock()
	if r.shut {
		r.mu.Unlock()
		l.Close()
		return nil, ErrClosed
	}
	if _, dup := r.children[p.PeerID]; dup || p.PeerID == r.id {
		r.mu.Unlock()
		l.Close()
		return nil, fmt.Errorf("arbor: node %d: child ID %d already in use", r.id, p.PeerID)
	}
	r.children[p.PeerID] = p
	r.mu.Unlock()
	if err := r.start(p); err != nil {
		return nil, err
	}
	return p, nil
}

// start tells the observer of p and starts its loops. When the observer
// refuses p, p is detached and closed and the refusal returned.
func (r *Router) start(p *Port) error {
	r.mu.RLock()
	obs := r.observer
	r.mu.RUnlock()
	if obs != nil {
		if err := obs.PortUp(p); err != nil {
			r.detach(p)
			p.Link.Abort(err)
			return err
		}
	}
	go r.acceptChannels(p)
	p.Link.Start(func(h wire.Header, payload []byte) {
		r.Route(&Message{Header: h, Payload: payload, Port: p})
	}, func(cause error) {
		if obs != nil {
			obs.PortDown(p, cause)
		}
		r.detach(p)
	})
	return nil
}

// detach forgets p as the parent or a child link.
func (r *Router) detach(p *Port) {
	r.mu.Lock()
	if p.IsParent {
		if r.parent == p {
			r.parent = nil
		}
	} else if r.children[p.PeerID] == p {
		delete(r.children, p.PeerID)
	}
	r.mu.Unlock()
}

// Parent is the parent port, or nil at the root or after the parent link closed.
func (r *Router) Parent() *Port {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.parent
}

// Children lists the child ports, ordered by child ID.
func (r *Router) Children() []*Port {
	r.mu.RLock()
	ps := make([]*Port, 0, len(r.children))
	for _, p := range r.children {
		ps = append(ps, p)
	}
	r.mu.RUnlock()
	sort.Slice(ps, func(i, j int) bool { return ps[i].PeerID < ps[j].PeerID })
	return ps
}

// AddRoute routes id (named name) through child port p. It fails if id is
// this node or an ancestor, already routed through another port, neither
// p's peer nor inside a block of IDs allocated through p (origin.go),
// routed through p before and withdrawn, past p's route quota, or if name
// breaks the name rules (wire.CheckName). Adding a route p already has is
// a no-op.
func (r *Router) AddRoute(id uint32, name string, p *Port) error {
	parent := r.id
	if id != p.PeerID {
		parent = p.PeerID
	}
	return r.AddChildRoute(id, parent, name, p)
}

// AddChildRoute is AddRoute with the node's parent as its ADD_ROUTE named
// it. The router keeps it to tell which nodes lie on the path to a node
// (a dead reply is believed only from one of them).
func (r *Router) AddChildRoute(id, parent uint32, name string, p *Port) error {
	if p.IsParent {
		return fmt.Errorf("arbor: node %d: routes are learned from children only", r.id)
	}
	if err := wire.CheckName(name); err != nil {
		return fmt.Errorf("%w (route to %d via %s at node %d)", err, id, p, r.id)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if id == r.id || r.isAncestor(id) {
		return fmt.Errorf("arbor: node %d: refusing route to %d via %s: that is this node or an ancestor", r.id, id, p)
	}
	if old, ok := r.routes[id]; ok {
		if old.port == p {
			return nil
		}
		return fmt.Errorf("arbor: node %d: refusing duplicate route to %d via %s: already routed via %s", r.id, id, p, old.port)
	}
	if err := r.admitRoute(id, p); err != nil {
		return err
	}
	r.routes[id] = route{port: p, name: name, parent: parent}
	return nil
}

// DelRoute removes the route to id and returns the port it went through.
func (r *Router) DelRoute(id uint32) (*Port, string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rt, ok := r.routes[id]
	if ok {
		delete(r.routes, id)
		rt.port.releaseRoute(id)
	}
	return rt.port, rt.name, ok
}

// Lookup returns the child port id is routed through, if any, and its name.
func (r *Router) Lookup(id uint32) (*Port, string, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	rt, ok := r.routes[id]
	return rt.port, rt.name, ok
}

func (r *Router) isAncestor(id uint32) bool {
	for _, a := range r.ancestors {
		if a == id {
			return true
		}
	}
	return false
}

// IsAncestor reports whether id is one of this node's ancestors.
func (r *Router) IsAncestor(id uint32) bool { return r.isAncestor(id) }

// How a message this node originates leaves it, by the links' send rule
// (stream/queue.go): nothing that runs on a read loop ever waits for room
// in a queue.
type sendMode int

const (
	// sendNow never blocks: a full queue refuses the message at once.
	sendNow sendMode = iota
	// sendControl never blocks and is admitted beyond the data bound, in
	// order with data: replies from handlers, dead replies, route updates,
	// node states, cancels, shutdowns.
	sendControl
	// sendUrgent goes ahead of everything queued: heartbeats only.
	sendUrgent
	// sendWait waits for room in the next hop's queue until ctx ends.
	sendWait
	// The direct modes are sendNow, sendControl and sendWait for a
	// sender that may write a small frame itself on an idle link
	// (stream/inline.go): a read loop with nothing buffered behind the
	// frame it forwards or answers, a caller that waits for the answer
	// right after.
	sendNowDirect
	sendControlDirect
	sendWaitDirect
)

// direct is mode for a message forwarded or answered on behalf of one
// that arrived on in: a direct mode when nothing waits behind it there.
func direct(mode sendMode, in *Port) sendMode {
	if in == nil || in.Link.MoreBuffered() {
		return mode
	}
	switch mode {
	case sendNow:
		return sendNowDirect
	case sendControl:
		return sendControlDirect
	}
	return mode
}

// Send routes a message this node originates, with this node as Src and
// Auth. It never blocks: when the next hop's queue is full it returns an
// error matching stream.ErrQueueFull, and the message is not sent. Handlers
// (which run on read loops) send and reply with it. A payload larger than
// the node's limit is refused with a *wire.TooLargeError. Failures further
// on come back as dead replies to ReplyTo, if set.
func (r *Router) Send(h wire.Header, payload []byte) error {
	return r.send(nil, h, payload, sendNow)
}

// SendContext is Send for a goroutine that may wait: while the next hop's
// queue is full it blocks until there is room, ctx ends or the link closes.
// It must not be called from a handler.
func (r *Router) SendContext(ctx context.Context, h wire.Header, payload []byte) error {
	return r.send(ctx, h, payload, sendWait)
}

// SendControl is Send for control messages (route updates, node states,
// cancels, shutdowns): on the first hop a full data queue does not refuse
// them (stream.Link.SendControl). Further hops forward them as any message.
func (r *Router) SendControl(h wire.Header, payload []byte) error {
	return r.send(nil, h, payload, sendControl)
}

// SendUrgent is Send for heartbeats: on the first hop they are written
// before anything already queued (stream.Link.SendUrgent).
func (r *Router) SendUrgent(h wire.Header, payload []byte) error {
	return r.send(nil, h, payload, sendUrgent)
}

func (r *Router) send(ctx context.Context, h wire.Header, payload []byte, mode sendMode) error {
	if uint64(len(payload)) > uint64(r.maxMsg) {
		return &wire.TooLargeError{Size: uint64(len(payload)), Max: r.maxMsg}
	}
	select {
	case <-r.closed:
		return ErrClosed
	default:
	}
	h.Src = r.id
	h.Auth = r.id
	h.Length = uint32(len(payload))
	return r.route(ctx, &Message{Header: h, Payload: payload}, mode)
}

// Route is the router's core: it delivers, forwards or refuses m. m.Port
// is the link m arrived on, nil for a message this node originated. It
// never blocks: a message for a link whose queue is full is refused with a
// dead reply naming the congested link.
func (r *Router) Route(m *Message) { _ = r.route(nil, m, direct(sendNow, m.Port)) }

// route is Route with the send mode of a message this node originates. It
// returns an error only for such a message, when the next hop would not
// take it; everything else is answered with a dead reply.
func (r *Router) route(ctx context.Context, m *Message, mode sendMode) error {
	v := r.decide(m.Port, &m.Header)
	switch {
	case v.spoofed:
		return nil
	case v.local:
		r.deliver(m)
		return nil
	case v.refuse != "":
		r.refuse(m, v.refuse)
		return nil
	}
	out, in := v.out, m.Port
	var err error
	switch mode {
	case sendControl:
		err = out.Link.SendControl(m.Header, m.Payload)
	case sendUrgent:
		err = out.Link.SendUrgent(m.Header, m.Payload)
	case sendWait:
		err = out.Link.SendWait(ctx, m.Header, m.Payload)
	case sendNowDirect:
		err = out.Link.SendDirect(m.Header, m.Payload)
	case sendControlDirect:
		err = out.Link.SendControlDirect(m.Header, m.Payload)
	case sendWaitDirect:
		err = out.Link.SendWaitDirect(ctx, m.Header, m.Payload)
	default:
		err = out.Link.Send(m.Header, m.Payload)
	}
	if err == nil {
		return nil
	}
	var tl *wire.TooLargeError
	switch {
	case in == nil && (errors.Is(err, stream.ErrQueueFull) || ctx != nil && ctx.Err() != nil):
		// The originator hears at once what it can act on (wait, retry,
		// give up); a link that closed under it is a delivery failure like
		// any other and comes back as a dead reply, as from further on.
		return fmt.Errorf("%w (%s)", err, out)
	case errors.As(err, &tl):
		r.refuse(m, tl.Reason())
	case errors.Is(err, stream.ErrQueueFull):
		r.congested.Add(1)
		r.refuse(m, errs.Reason(err))
	default:
		r.refuse(m, fmt.Sprintf("%s: %s", out, errs.Reason(err)))
	}
	return nil
}

// verdict is where a frame goes: to this node, out of a link, or nowhere.
type verdict struct {
	out     *Port  // the next hop
	local   bool   // the frame is for this node
	refuse  string // why it goes nowhere (a dead reply's reason)
	spoofed bool   // dropped by the reverse-path check (logged, no reply)
}

// decide is the one place that decides where a frame goes: messages
// (route) and channel opens (serveChannel) both ask it. in is the link the
// frame arrived on, nil for one this node originates. It applies the
// reverse-path check (rule 4), gives an authority link's frames this
// node's authority (rewriting h.Auth), and then rule 1 (delivery), rule 2
// (child routes win, the parent is the default, parent traffic is never
// bounced back up) and rule 5 (no child-to-child forwarding unless
// allowed), and records the egress of a forwarded frame (rule 7).
func (r *Router) decide(in *Port, h *wire.Header) verdict {
	r.mu.RLock()
	if in != nil {
		for _, f := range [...]struct {
			name string
			id   uint32
		}{{"auth", h.Auth}, {"src", h.Src}} {
			if exp := r.expectedPort(f.id); exp != in {
				r.mu.RUnlock()
				r.dropSpoofed(in, h, f.name, f.id, exp)
				return verdict{spoofed: true}
			}
			if h.Src == h.Auth {
				break
			}
		}
		if in.authority {
			h.Auth = r.id
		}
	}
	if in != nil && in.authority && h.ReplyTo != wire.HandleNone && !h.IsDead() && h.Dst != r.id {
		in.clientCalls.track(h.ReplyTo, h.Dst)
	}
	if h.Dst == r.id {
		r.mu.RUnlock()
		return verdict{local: true}
	}
	out := r.routes[h.Dst].port
	if out == nil && (in == nil || !in.IsParent) {
		out = r.parent
	}
	r.mu.RUnlock()
	switch {
	case out == nil:
		return verdict{refuse: fmt.Sprintf("no route to %d, my ID is %d", h.Dst, r.id)}
	case out.authority && in != nil && !in.authority && h.Handle < wire.FirstDynamicHandle && h.Handle != wire.HandleChannel:
		// A client acting with this node's authority hears from the tree
		// only what answers it: replies and streams on the handles it
		// made. A node below must not reach its route table, its logs or
		// anything else on a well-known handle.
		return verdict{refuse: fmt.Sprintf("node %d may not send %s to client %d, my ID is %d",
			h.Src, wire.HandleName(h.Handle), h.Dst, r.id)}
	case out.authority && in != nil && !in.authority && !r.answersClient(out, h):
		r.dropForgedReply(in, h)
		return verdict{spoofed: true}
	case in != nil && !in.IsParent && !out.IsParent && !r.siblings && !in.authority && !out.authority:
		return verdict{refuse: fmt.Sprintf("routing mode prevents forwarding from node %d to node %d (between child links to %d and %d), my ID is %d",
			h.Src, h.Dst, in.PeerID, out.PeerID, r.id)}
	}
	if in != nil && !in.IsParent {
		in.noteEgress(h.Dst)
	}
	return verdict{out: out}
}

// expectedPort is the port traffic from id must arrive on: its child route,
// else the parent. r.mu is held on entry.
func (r *Router) expectedPort(id uint32) *Port {
	if rt, ok := r.routes[id]; ok {
		return rt.port
	}
	return r.parent
}

func (r *Router) dropSpoofed(in *Port, h *wire.Header, field string, claimed uint32, expected *Port) {
	r.spoofed.Add(1)
	exp := "no link"
	if expected != nil {
		exp = expected.String()
	}
	r.log.Error("dropped spoofed frame: reverse-path check failed",
		"field", field, "claimed", claimed, "auth", h.Auth, "src", h.Src, "dst", h.Dst,
		"arrived_on", in.String(), "expected", exp, "handle", h.Handle)
}

// refuse answers m with a dead reply carrying reason, if m wants replies.
func (r *Router) refuse(m *Message, reason string) {
	r.dead.Add(1)
	if m.ReplyTo == wire.HandleNone || m.IsDead() {
		r.log.Debug("dropped undeliverable message", "reason", reason, "msg", m.Header.String())
		return
	}
	r.log.Debug("dead reply", "reason", reason, "msg", m.Header.String())
	h := wire.Header{
		Dst:     m.Src,
		Src:     r.id,
		Auth:    r.id,
		Handle:  m.ReplyTo,
		Flags:   wire.FlagDead,
		ReplyTo: wire.HandleNone,
	}
	payload := wire.EncodeDeadReason(reason)
	h.Length = uint32(len(payload))
	// Like a reply, a dead reply is owed: the control class admits it
	// past a full data queue (see Reply).
	if err := r.route(nil, &Message{Header: h, Payload: payload}, sendControl); err != nil {
		r.log.Debug("dead reply not sent", "reason", reason, "msg", m.Header.String(), "error", err)
	}
}

// Close closes every link and fails every pending reply. It is idempotent
// and waits for the links' loops to end.
func (r *Router) Close() error {
	r.closeOnce.Do(func() { close(r.closed) })
	r.mu.Lock()
	r.shut = true
	ports := make([]*Port, 0, len(r.children)+1)
	for _, p := range r.children {
		ports = append(ports, p)
	}
	if r.parent != nil {
		ports = append(ports, r.parent)
	}
	r.mu.Unlock()
	// Fail what waits first: the router closing is the cause, not the
	// links it closes next (whose loss would otherwise race to report it).
	r.failAll(ErrClosed)
	for _, p := range ports {
		p.Link.Close()
	}
	return nil
}
