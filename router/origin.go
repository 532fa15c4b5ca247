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

// grant is a block of IDs given out through one child link, with a bit per
// ID set once a route to it was announced through that link.
type grant struct {
	start, count uint32
	seen         []uint64
}

func (g *grant) contains(id uint32) bool { return id >= g.start && id-g.start < g.count }

// origin is the ledger of one child link. Its mutex is taken after the
// router's r.mu when both are held (AddRoute) and never around a send.
type origin struct {
	mu      sync.Mutex
	grants  []grant // ascending by start: the allocator counts up
	granted uint64  // IDs granted through the link, ever
	used    uint64  // of those, IDs a route was announced for
	routes  int     // routes through the link now (its peer included)

	tokens float64 // ID budget (token bucket), refilled at IDRate
	filled time.Time

	fetching bool // a block request for this link is on its way up
}

// find returns the grant holding id, or nil.
func (o *origin) find(id uint32) *grant {
	i := sort.Search(len(o.grants), func(i int) bool { return o.grants[i].start+o.grants[i].count > id })
	if i < len(o.grants) && o.grants[i].contains(id) {
		return &o.grants[i]
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
		o.used++
	}
	o.routes++
	return nil
}

// releaseRoute forgets one route through p. r.mu is held.
func (p *Port) releaseRoute() {
	p.origin.mu.Lock()
	if p.origin.routes > 0 {
		p.origin.routes--
	}
	p.origin.mu.Unlock()
}

// reserveIDs checks that n more IDs may be granted through p and takes
// them from its bucket; the caller records the block with recordGrant or
// gives them back with unreserveIDs. upstream marks a request this node
// must pass on to its own parent: only one may be in flight per link.
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
	unused := o.granted - o.used
	switch {
	case upstream && o.fetching:
		return fmt.Errorf("arbor: node %d: an ID block request from %s is already on its way to the root", r.id, p)
	case o.granted+uint64(n) > q.MaxIDsPerLink:
		return &QuotaError{Node: r.id, Link: p.String(), What: "node IDs in the link's lifetime", Limit: q.MaxIDsPerLink}
	case unused+uint64(n) > max(q.MaxUnusedIDs, o.used):
		return fmt.Errorf("arbor: node %d: no more node IDs for %s: %d IDs granted through it have never been used by a route",
			r.id, p, unused)
	case o.tokens < float64(n):
		wait := time.Duration((float64(n) - o.tokens) / q.IDRate * float64(time.Second))
		return fmt.Errorf("arbor: node %d: no more node IDs for %s for now: it drew %d IDs, faster than %g a second; try again in %s",
			r.id, p, o.granted, q.IDRate, wait.Round(time.Millisecond))
	}
	o.tokens -= float64(n)
	o.fetching = o.fetching || upstream
	return nil
}

// unreserveIDs returns n IDs reserved by reserveIDs that were not granted.
func (p *Port) unreserveIDs(n uint32, upstream bool) {
	p.origin.mu.Lock()
	p.origin.tokens += float64(n)
	if upstream {
		p.origin.fetching = false
	}
	p.origin.mu.Unlock()
}

// recordGrant notes that blk was granted through p.
func (p *Port) recordGrant(blk wire.IDBlock, upstream bool) {
	o := &p.origin
	o.mu.Lock()
	defer o.mu.Unlock()
	if upstream {
		o.fetching = false
	}
	g := grant{start: blk.Start, count: blk.Count, seen: make([]uint64, (blk.Count+63)/64)}
	i := sort.Search(len(o.grants), func(i int) bool { return o.grants[i].start > blk.Start })
	o.grants = append(o.grants, grant{})
	copy(o.grants[i+1:], o.grants[i:])
	o.grants[i] = g
	o.granted += uint64(blk.Count)
}

// LinkUsage is what one child link holds of this node's quotas.
type LinkUsage struct {
	Routes  int    // routes through the link now
	Granted uint64 // node IDs ever granted through it
	Used    uint64 // of those, IDs a route was announced for
}

// Usage reports p's share of the quotas.
func (p *Port) Usage() LinkUsage {
	p.origin.mu.Lock()
	defer p.origin.mu.Unlock()
	return LinkUsage{Routes: p.origin.routes, Granted: p.origin.granted, Used: p.origin.used}
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
