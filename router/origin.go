package router

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/arbor-project/arbor/stream/wire"
)

// Route origin validation (PROTOCOL.md §13): a child link may announce a
// route only to its own peer or to an ID inside a block allocated through
// it, as a BGP neighbour may announce only the prefixes assigned to it
// (RFC 6811). Node IDs are allocated down the tree: a node asks its parent
// for a block, the parent asks its own parent, and so on to the root, and
// every node on the way records the block against the child link the
// request came in on. Each node therefore knows, for each child link,
// exactly which IDs can live behind it, and nothing behind a link can take
// an ID that belongs elsewhere (the next node the root will spawn, a
// sibling, a node that died: IDs are never reused).
//
// The same ledger bounds what one link can cost this node: routes per link
// are capped, IDs are granted only while earlier grants are mostly used by
// real routes, and a token bucket bounds how fast a link draws on the ID
// space at all.

// grant is a block of IDs given out through one child link for one node
// behind it (its owner), with a bit per ID set once a route to it was
// announced through that link.
type grant struct {
	start, count uint32
	owner        uint32
	seen         []uint64
	nseen        uint32
	retired      bool // the owner is gone: its unused IDs no longer count
}

func (g *grant) contains(id uint32) bool { return id >= g.start && id-g.start < g.count }

// maxFetchesPerLink bounds the block requests of one child link this node
// passes up at once; more are refused until one is answered.
const maxFetchesPerLink = 16

// origin is the ledger of one child link. Its mutex is taken after the
// router's r.mu when both are held (AddRoute, DelRoute) and never around a
// send.
type origin struct {
	mu      sync.Mutex
	grants  []*grant // ascending by start: the allocator counts up
	byOwner map[uint32][]*grant
	granted uint64 // IDs granted through the link, ever
	used    uint64 // of those, IDs a route was announced for
	unused  uint64 // IDs of live owners' grants never routed
	routes  int    // routes through the link now (its peer included)

	tokens float64 // ID budget (token bucket), refilled at IDRate
	filled time.Time

	fetching int // block requests for this link on their way up
}

// find returns the grant holding id, or nil.
func (o *origin) find(id uint32) *grant {
	i := sort.Search(len(o.grants), func(i int) bool { return o.grants[i].start+o.grants[i].count > id })
	if i < len(o.grants) && o.grants[i].contains(id) {
		return o.grants[i]
	}
	return nil
}

// admitRoute checks that id may be routed through p and records it. It
// is called with r.mu held.
func (r *Router) admitRoute(id uint32, p *Port) error {
	o := &p.origin
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.routes >= r.quota.MaxRoutesPerLink {
		return &QuotaError{Node: r.id, Link: p.String(), What: "routes", Limit: uint64(r.quota.MaxRoutesPerLink)}
	}
	if id != p.PeerID {
		g := o.find(id)
		if g == nil {
			return &OriginError{Node: r.id, ID: id, Link: p.String(), Why: "that ID was not allocated through the link"}
		}
		bit, word := uint64(1)<<((id-g.start)%64), (id-g.start)/64
		if g.seen[word]&bit != 0 {
			return &OriginError{Node: r.id, ID: id, Link: p.String(), Why: "that node was withdrawn before and IDs are never reused"}
		}
		g.seen[word] |= bit
		g.nseen++
		o.used++
		if !g.retired {
			o.unused--
		}
	}
	o.routes++
	return nil
}

// releaseRoute forgets the route to id through p, and retires the grants
// id owned: a node that is gone spawns nothing, so the IDs it left unused
// no longer count against the link. r.mu is held.
func (p *Port) releaseRoute(id uint32) {
	o := &p.origin
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.routes > 0 {
		o.routes--
	}
	for _, g := range o.byOwner[id] {
		if !g.retired {
			g.retired = true
			o.unused -= uint64(g.count - g.nseen)
		}
	}
	delete(o.byOwner, id)
}

// reserveIDs checks that n more IDs may be granted through p and takes
// them from its bucket; the caller records the block with recordGrant or
// gives them back with unreserveIDs. upstream marks a request this node
// must pass on to its own parent: a few may be in flight per link.
func (r *Router) reserveIDs(p *Port, n uint32, upstream bool) error {
	q := r.quota
	o := &p.origin
	o.mu.Lock()
	defer o.mu.Unlock()
	now := time.Now()
	if o.filled.IsZero() {
		o.tokens = float64(q.IDBurst)
	} else {
		o.tokens = min(float64(q.IDBurst), o.tokens+now.Sub(o.filled).Seconds()*q.IDRate)
	}
	o.filled = now
	// Every live node behind the link may hold a partly used block; most
	// hold a first one (firstBlockSize), and MaxUnusedIDs leaves room for
	// the few that spawn much and hold larger ones.
	bound := q.MaxUnusedIDs + firstBlockSize*uint64(o.routes)
	switch {
	case upstream && o.fetching >= maxFetchesPerLink:
		return fmt.Errorf("arbor: node %d: %d ID block requests from %s are already on their way to the root", r.id, o.fetching, p)
	case o.granted+uint64(n) > q.MaxIDsPerLink:
		return &QuotaError{Node: r.id, Link: p.String(), What: "node IDs in the link's lifetime", Limit: q.MaxIDsPerLink}
	case o.unused+uint64(n) > bound:
		return fmt.Errorf("arbor: node %d: no more node IDs for %s: %d IDs granted to its live nodes have never been used by a route",
			r.id, p, o.unused)
	case o.tokens < float64(n):
		wait := time.Duration((float64(n) - o.tokens) / q.IDRate * float64(time.Second))
		return fmt.Errorf("arbor: node %d: no more node IDs for %s for now: it drew %d IDs, faster than %g a second; try again in %s",
			r.id, p, o.granted, q.IDRate, wait.Round(time.Millisecond))
	}
	o.tokens -= float64(n)
	if upstream {
		o.fetching++
	}
	return nil
}

// unreserveIDs returns n IDs reserved by reserveIDs that were not granted.
func (p *Port) unreserveIDs(n uint32, upstream bool) {
	p.origin.mu.Lock()
	p.origin.tokens += float64(n)
	if upstream {
		p.origin.fetching--
	}
	p.origin.mu.Unlock()
}

// recordGrant notes that blk was granted through p for node owner.
func (p *Port) recordGrant(blk wire.IDBlock, owner uint32, upstream bool) {
	o := &p.origin
	o.mu.Lock()
	defer o.mu.Unlock()
	if upstream {
		o.fetching--
	}
	g := &grant{start: blk.Start, count: blk.Count, owner: owner, seen: make([]uint64, (blk.Count+63)/64)}
	i := sort.Search(len(o.grants), func(i int) bool { return o.grants[i].start > blk.Start })
	o.grants = append(o.grants, nil)
	copy(o.grants[i+1:], o.grants[i:])
	o.grants[i] = g
	if o.byOwner == nil {
		o.byOwner = make(map[uint32][]*grant)
	}
	o.byOwner[owner] = append(o.byOwner[owner], g)
	o.granted += uint64(blk.Count)
	o.unused += uint64(blk.Count)
}

// LinkUsage is what one child link holds of this node's quotas.
type LinkUsage struct {
	Routes  int    // routes through the link now
	Granted uint64 // node IDs ever granted through it
	Used    uint64 // of those, IDs a route was announced for
	Unused  uint64 // IDs granted to live nodes behind it, never routed
}

// Usage reports p's share of the quotas.
func (p *Port) Usage() LinkUsage {
	p.origin.mu.Lock()
	defer p.origin.mu.Unlock()
	o := &p.origin
	return LinkUsage{Routes: o.routes, Granted: o.granted, Used: o.used, Unused: o.unused}
}

// QuotaError is a per-link quota reached.
type QuotaError struct {
	Node  uint32
	Link  string
	What  string
	Limit uint64
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("arbor: node %d: %s reached its quota of %d %s", e.Node, e.Link, e.Limit, e.What)
}

// Is makes errors.Is(err, ErrQuota) match.
func (e *QuotaError) Is(target error) bool { return target == ErrQuota }

// OriginError is a route announced through a link its ID does not belong
// to: what no honest node sends, so the link is closed (routemonitor).
type OriginError struct {
	Node uint32 // the node that refused the route
	ID   uint32 // the route's ID
	Link string // the link it came through
	Why  string
}

func (e *OriginError) Error() string {
	return fmt.Sprintf("arbor: node %d: refusing route to %d via %s: %s", e.Node, e.ID, e.Link, e.Why)
}

// Is makes errors.Is(err, ErrOrigin) match.
func (e *OriginError) Is(target error) bool { return target == ErrOrigin }

// maxClientCalls bounds the requests tracked per client link; past it the
// oldest are forgotten (their answers are then dropped as forged).
const maxClientCalls = 1 << 16

// clientCalls remembers, for a link with this node's authority (a client
// of the control socket), which node each of its outstanding requests went
// to: reply handle → destination. A node below may answer a request only
// as its destination, and fail it only as a node on the path to it.
type clientCalls struct {
	mu    sync.Mutex
	calls map[uint32]uint32
	order []uint32 // reply handles in the order they were tracked
}

func (c *clientCalls) track(handle, dst uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.calls == nil {
		c.calls = make(map[uint32]uint32)
	}
	if _, ok := c.calls[handle]; !ok {
		c.order = append(c.order, handle)
	}
	c.calls[handle] = dst
	for len(c.calls) > maxClientCalls && len(c.order) > 0 {
		delete(c.calls, c.order[0])
		c.order = c.order[1:]
	}
	if len(c.order) > 2*maxClientCalls { // drop handles already answered
		live := c.order[:0]
		for _, h := range c.order {
			if _, ok := c.calls[h]; ok {
				live = append(live, h)
			}
		}
		c.order = live
	}
}

// lookup returns the destination of the request answered on handle, and
// forgets it when done is set.
func (c *clientCalls) lookup(handle uint32, done bool) (uint32, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	dst, ok := c.calls[handle]
	if ok && done {
		delete(c.calls, handle)
	}
	return dst, ok
}

// answersClient decides whether h, from a node of the tree, may go to the
// client at the end of link out: a reply from the node the client asked, a
// dead reply from that node or one on the path to it, or a message on a
// handle the client did not ask anything on (a stream the client made,
// which its own handler checks).
func (r *Router) answersClient(out *Port, h *wire.Header) bool {
	dst, asked := out.clientCalls.lookup(h.Handle, false)
	switch {
	case !asked:
		return !h.IsDead()
	case h.IsDead():
		if h.Src != dst && !r.OnPathTo(h.Src, dst) {
			return false
		}
	case h.Src != dst:
		return false
	}
	out.clientCalls.lookup(h.Handle, true)
	return true
}

// onPathTo reports whether node via lies on this node's path down to dst:
// dst's ancestors as the routes here know them. r.mu is held on entry.
func (r *Router) onPathTo(via, dst uint32) bool {
	for hops := 0; hops < 256; hops++ {
		rt, ok := r.routes[dst]
		if !ok {
			return false
		}
		if rt.parent == via {
			return true
		}
		if rt.parent == r.id {
			return false
		}
		dst = rt.parent
	}
	return false
}

// OnPathTo reports whether node via lies on this node's path down to dst.
func (r *Router) OnPathTo(via, dst uint32) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.onPathTo(via, dst)
}

func (r *Router) dropForgedReply(in *Port, h *wire.Header) {
	r.spoofed.Add(1)
	r.log.Error("dropped forged answer to a client: not from the node asked or the path to it",
		"src", h.Src, "dst", h.Dst, "handle", h.Handle, "dead", h.IsDead(), "arrived_on", in.String())
}
