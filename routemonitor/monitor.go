package routemonitor

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/arbor-project/arbor/internal/errs"
	"github.com/arbor-project/arbor/internal/logsafe"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
)

// EventKind says what happened to a route.
type EventKind int

const (
	// AddRoute: a node became reachable.
	AddRoute EventKind = iota + 1
	// DelRoute: a node is gone; Cause says why.
	DelRoute
	// ParentLost: this node's parent link closed.
	ParentLost
)

func (k EventKind) String() string {
	switch k {
	case AddRoute:
		return "add_route"
	case DelRoute:
		return "del_route"
	case ParentLost:
		return "parent_lost"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one change to the route table.
type Event struct {
	Kind EventKind
	ID   uint32
	Name string
	Via  uint32 // the child link's peer, for AddRoute
	// Parent is the node's parent as its ADD_ROUTE told, for AddRoute.
	Parent uint32
	Cause  string // for DelRoute and ParentLost
	Time   time.Time
}

// Monitor is a node's RouteMonitor. It is safe for concurrent use.
type Monitor struct {
	r   *router.Router
	log hclog.Logger

	mu   sync.Mutex
	sets map[*router.Port]map[uint32]struct{} // child link → IDs routed through it
	subs map[int]func(Event)
	nsub int
}

// New attaches a monitor to r: it becomes r's observer and handles
// ADD_ROUTE and DEL_ROUTE. Call it before attaching any link.
func New(r *router.Router) *Monitor {
	m := &Monitor{
		r:    r,
		log:  r.Logger().Named("routemonitor"),
		sets: make(map[*router.Port]map[uint32]struct{}),
		subs: make(map[int]func(Event)),
	}
	r.SetObserver(m)
	// The monitor checks link ownership itself; the router's reverse-path
	// check has already proven src and auth came the right way.
	r.Handle(wire.HandleAddRoute, m.onAddRoute, router.Anyone)
	r.Handle(wire.HandleDelRoute, m.onDelRoute, router.Anyone)
	return m
}

// Subscribe calls fn for every event until the returned function is
// called. fn runs on a link's read loop and must not block.
func (m *Monitor) Subscribe(fn func(Event)) (unsubscribe func()) {
	m.mu.Lock()
	id := m.nsub
	m.nsub++
	m.subs[id] = fn
	m.mu.Unlock()
	return func() {
		m.mu.Lock()
		delete(m.subs, id)
		m.mu.Unlock()
	}
}

func (m *Monitor) emit(e Event) {
	e.Time = time.Now()
	m.mu.Lock()
	fns := make([]func(Event), 0, len(m.subs))
	for _, fn := range m.subs {
		fns = append(fns, fn)
	}
	m.mu.Unlock()
	for _, fn := range fns {
		fn(e)
	}
}

// RoutesVia lists the IDs routed through child link p, ordered.
func (m *Monitor) RoutesVia(p *router.Port) []uint32 {
	m.mu.Lock()
	ids := make([]uint32, 0, len(m.sets[p]))
	for id := range m.sets[p] {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// PortUp implements router.Observer: a new child link routes its child.
// When the route cannot be installed (its ID is taken, its name is bad)
// the link is refused: the router closes it and the attach fails.
func (m *Monitor) PortUp(p *router.Port) error {
	if p.IsParent {
		return nil
	}
	if err := m.r.AddRoute(p.PeerID, p.PeerName, p); err != nil {
		m.log.Error("new child link refused: its route cannot be installed", "error", err)
		return err
	}
	m.mu.Lock()
	m.sets[p] = map[uint32]struct{}{p.PeerID: {}}
	m.mu.Unlock()
	m.sendUp(wire.HandleAddRoute, wire.AddRoute{ID: p.PeerID, Name: p.PeerName, Parent: m.r.ID()})
	m.emit(Event{Kind: AddRoute, ID: p.PeerID, Name: p.PeerName, Via: p.PeerID, Parent: m.r.ID()})
	return nil
}

// PortDown implements router.Observer: every ID of a lost child link is
// withdrawn; a lost parent link fails everything not reached through a child.
func (m *Monitor) PortDown(p *router.Port, cause error) {
	why := describeCause(cause)
	if p.IsParent {
		reason := fmt.Sprintf("parent link of node %d (to node %d) lost: %s", m.r.ID(), p.PeerID, why)
		m.r.FailPendingExcept(func(id uint32) bool {
			_, _, ok := m.r.Lookup(id)
			return ok
		}, func(id uint32) error {
			return &router.DisconnectError{ID: id, Cause: reason}
		})
		m.emit(Event{Kind: ParentLost, ID: p.PeerID, Cause: reason})
		return
	}
	m.mu.Lock()
	set := m.sets[p]
	delete(m.sets, p)
	m.mu.Unlock()
	ids := make([]uint32, 0, len(set))
	for id := range set {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	reason := fmt.Sprintf("link from node %d to node %d (%s) lost: %s", m.r.ID(), p.PeerID, p.PeerName, why)
	for _, id := range ids {
		m.withdraw(id, "", reason, p, true)
	}
}

// withdraw removes the route to id (if it goes through owner), fails what
// waits on it, fires the event, and propagates DEL_ROUTE: up unless the
// withdrawal came from the parent, and down every other child link whose
// traffic was sent toward id.
func (m *Monitor) withdraw(id uint32, name, cause string, from *router.Port, up bool) {
	if port, n, ok := m.r.Lookup(id); ok && port == from {
		m.r.DelRoute(id)
		name = n
	}
	m.r.FailPending(id, &router.DisconnectError{ID: id, Name: name, Cause: cause})
	m.emit(Event{Kind: DelRoute, ID: id, Name: name, Cause: cause})
	msg := wire.DelRoute{ID: id, Cause: cause, Name: name}
	if up {
		m.sendUp(wire.HandleDelRoute, msg)
	}
	for _, c := range m.r.Children() {
		if c == from || !c.TalkedTo(id) {
			continue
		}
		c.ForgetEgress(id)
		m.send(c, wire.HandleDelRoute, msg)
	}
}

func (m *Monitor) onAddRoute(msg *router.Message) {
	p := msg.Port
	if p == nil || p.IsParent || msg.Src != p.PeerID || msg.Auth != p.PeerID {
		m.log.Error("ADD_ROUTE refused: not from the child that owns the link",
			"src", msg.Src, "auth", msg.Auth, "link", portName(p))
		return
	}
	var ar wire.AddRoute
	if err := wire.Unmarshal(msg.Payload, &ar); err != nil {
		m.log.Error("ADD_ROUTE refused: bad payload; closing link", "link", p.String(), "error", err)
		p.Link.Abort(fmt.Errorf("%w (ADD_ROUTE payload)", err))
		return
	}
	parentName := p.PeerName
	if ar.Parent != p.PeerID {
		via, name, ok := m.r.Lookup(ar.Parent)
		if !ok || via != p {
			m.log.Error("ADD_ROUTE refused: its parent is not behind the link", "id", ar.ID,
				"parent", ar.Parent, "link", p.String())
			return
		}
		parentName = name
	}
	if err := wire.CheckName(ar.Name); err != nil {
		m.log.Error("ADD_ROUTE refused", "id", ar.ID, "name", logsafe.Clip(ar.Name, 300), "link", p.String(), "error", err)
		return
	}
	if len(ar.Name) <= len(parentName)+1 || !strings.HasPrefix(ar.Name, parentName+"/") {
		// A node is named after its parent (parent/hop): a node that claims
		// a name outside its parent's would pose as a node the operator
		// names, spawned elsewhere or later.
		m.log.Error("ADD_ROUTE refused: name outside its parent's; closing link", "id", ar.ID,
			"name", logsafe.Clip(ar.Name, 300), "parent", ar.Parent, "link", p.String())
		p.Link.Abort(fmt.Errorf("arbor: node %d: route to %d via %s named outside its parent %q", m.r.ID(), ar.ID, p, parentName))
		return
	}
	if err := m.r.AddChildRoute(ar.ID, ar.Parent, ar.Name, p); err != nil {
		if errors.Is(err, router.ErrOrigin) {
			// A hijack: the next ID this node will hand out, a dead node's,
			// a sibling subtree's. No honest node announces it.
			m.log.Error("ADD_ROUTE refused: route hijack; closing link", "id", ar.ID, "name", ar.Name, "link", p.String(), "error", err)
			p.Link.Abort(err)
			return
		}
		m.log.Error("ADD_ROUTE refused", "id", ar.ID, "name", ar.Name, "link", p.String(), "error", err)
		return
	}
	m.mu.Lock()
	set, live := m.sets[p]
	if live {
		_, known := set[ar.ID]
		set[ar.ID] = struct{}{}
		live = !known
	}
	m.mu.Unlock()
	if !live {
		return // a repeat, or the link is already gone
	}
	m.sendUp(wire.HandleAddRoute, ar)
	m.emit(Event{Kind: AddRoute, ID: ar.ID, Name: ar.Name, Via: p.PeerID, Parent: ar.Parent})
}

func (m *Monitor) onDelRoute(msg *router.Message) {
	p := msg.Port
	if p == nil {
		return
	}
	var dr wire.DelRoute
	if err := wire.Unmarshal(msg.Payload, &dr); err != nil {
		m.log.Error("DEL_ROUTE refused: bad payload; closing link", "link", p.String(), "error", err)
		p.Link.Abort(fmt.Errorf("%w (DEL_ROUTE payload)", err))
		return
	}
	if !p.IsParent {
		// The cause reaches every node above and every watcher: a line of
		// text, bounded and with no control characters.
		dr.Cause = logsafe.Clip(dr.Cause, maxCause)
	}
	if msg.Src != p.PeerID || msg.Auth != p.PeerID {
		m.log.Error("DEL_ROUTE ignored: not from the node at the other end of the link",
			"id", dr.ID, "from", p.String(), "src", msg.Src, "auth", msg.Auth)
		return
	}
	owner, _, routed := m.r.Lookup(dr.ID)
	if p.IsParent {
		// Going down: the parent tells us a node elsewhere is gone. A node
		// we route through a child is ours to withdraw, not the parent's.
		if routed {
			m.log.Error("DEL_ROUTE from parent ignored: route is owned by a child link",
				"id", dr.ID, "owner", owner.String())
			return
		}
		m.withdraw(dr.ID, dr.Name, dr.Cause, p, false)
		return
	}
	if !routed || owner != p {
		m.log.Error("DEL_ROUTE ignored: not from the link that owns the route",
			"id", dr.ID, "from", p.String(), "src", msg.Src, "owner", portName(owner))
		return
	}
	m.mu.Lock()
	delete(m.sets[p], dr.ID)
	m.mu.Unlock()
	m.withdraw(dr.ID, dr.Name, dr.Cause, p, true)
}

// maxCause bounds a withdrawal's cause as it enters from a child link.
const maxCause = 1024

func (m *Monitor) sendUp(handle uint32, v any) {
	if parent := m.r.Parent(); parent != nil {
		m.send(parent, handle, v)
	}
}

// send puts a route update on one link's control queue, addressed to its
// peer. It never blocks: it runs on read loops (see stream.Link.SendControl).
func (m *Monitor) send(p *router.Port, handle uint32, v any) {
	body, err := wire.Marshal(v)
	if err != nil {
		m.log.Error("encoding route update", "error", err)
		return
	}
	hdr := wire.Header{Dst: p.PeerID, Src: m.r.ID(), Auth: m.r.ID(), Handle: handle}
	if err := p.Link.SendControl(hdr, body); err != nil {
		m.log.Debug("route update not sent", "link", p.String(), "error", err)
	}
}

func portName(p *router.Port) string {
	if p == nil {
		return "none"
	}
	return p.String()
}

func describeCause(err error) string {
	switch {
	case err == nil:
		return "closed"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return "EOF"
	}
	return errs.Reason(err) // the cause is told inside a DisconnectError, which has the prefix
}

// Subscriptions is how many subscriptions are in place.
func (m *Monitor) Subscriptions() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.subs)
}
