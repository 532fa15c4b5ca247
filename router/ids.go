package router

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/arbor-project/arbor/internal/errs"
	"github.com/arbor-project/arbor/stream/wire"
)

// idAllocator hands out node IDs for this node's children. The root counts
// from 1; every other node takes blocks from its parent, which takes them
// from its own parent, up to the root: each node on the way records the
// block against the child link it went down (origin.go), so a route may be
// announced through a link only for an ID allocated through it. Blocks
// start small and double (16, 32, … IDBlockSize) as a node keeps spawning,
// so a node with a few children holds few unused IDs. IDs are never reused,
// except one handed out for a child that never attached (ReleaseID). mu is
// never held across the round trip: one caller fetches a block while the
// others wait for it (or for their own ctx).
type idAllocator struct {
	r    *Router
	mu   sync.Mutex
	next uint32 // next free ID (the root's counter, or within the block)
	end  uint32 // end of the current block (exclusive); unused at the root
	// blocks is how many blocks this node has fetched: it sizes the next.
	blocks int
	// free holds IDs released by ReleaseID, handed out first.
	free []uint32
	// fetching is closed when the block request in flight ends; nil when
	// none is in flight.
	fetching chan struct{}
}

// firstBlockSize is the size of a node's first ID block; each next one is
// twice the last, up to wire.IDBlockSize.
const firstBlockSize = 16

func (a *idAllocator) init(r *Router) {
	a.r = r
	if r.id == wire.RootID {
		a.next = 1
	}
}

// take reserves n consecutive IDs at the root.
func (a *idAllocator) take(n uint32) (uint32, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if uint64(a.next)+uint64(n) > math.MaxUint32 {
		return 0, fmt.Errorf("arbor: node ID space exhausted")
	}
	start := a.next
	a.next += n
	return start, nil
}

// AllocateID returns a fresh node ID for a child of this node. At the root
// it never blocks; elsewhere it may ask the parent for a new block, and
// returns when the block comes, ctx ends or the parent becomes unreachable.
// Concurrent callers share one block request; each can give up on its own.
func (r *Router) AllocateID(ctx context.Context) (uint32, error) {
	a := &r.ids
	for {
		a.mu.Lock()
		if n := len(a.free); n > 0 {
			id := a.free[n-1]
			a.free = a.free[:n-1]
			a.mu.Unlock()
			return id, nil
		}
		if r.id == wire.RootID {
			a.mu.Unlock()
			return a.take(1)
		}
		if a.next < a.end {
			id := a.next
			a.next++
			a.mu.Unlock()
			return id, nil
		}
		if wait := a.fetching; wait != nil {
			a.mu.Unlock()
			select {
			case <-wait:
				continue // the block came (or its request failed): look again
			case <-ctx.Done():
				return 0, fmt.Errorf("arbor: node %d: waiting for an ID block from its parent: %w", r.id, ctx.Err())
			}
		}
		done := make(chan struct{})
		a.fetching = done
		size := uint32(min(firstBlockSize<<min(a.blocks, 16), wire.IDBlockSize))
		a.mu.Unlock()
		blk, err := r.requestIDBlock(ctx, size, 0)
		a.mu.Lock()
		a.fetching = nil
		if err == nil {
			a.next, a.end = blk.Start, blk.Start+blk.Count
			a.blocks++
		}
		a.mu.Unlock()
		close(done)
		if err != nil {
			return 0, err
		}
	}
}

// ReleaseID gives back an ID from AllocateID whose child never attached
// (its spawn failed before the link came up): no route to it was ever
// announced, so handing it out again confuses no one, and a run of failed
// spawns does not use up this node's quota at its parent.
func (r *Router) ReleaseID(id uint32) {
	a := &r.ids
	a.mu.Lock()
	a.free = append(a.free, id)
	a.mu.Unlock()
}

// requestIDBlock asks the parent for a block of n IDs for node owner (0:
// this node).
func (r *Router) requestIDBlock(ctx context.Context, n, owner uint32) (wire.IDBlock, error) {
	body, err := wire.Marshal(wire.AllocateIDRequest{Count: n, For: owner})
	if err != nil {
		return wire.IDBlock{}, err
	}
	parent := r.ancestors[0]
	reply, err := r.Request(ctx, parent, wire.HandleAllocateID, body)
	if err != nil {
		if errs.IsContext(err) {
			return wire.IDBlock{}, fmt.Errorf("arbor: node %d: allocating IDs from its parent %d: %w", r.id, parent, err)
		}
		return wire.IDBlock{}, fmt.Errorf("%w (node %d allocating IDs from its parent %d)", err, r.id, parent)
	}
	var blk wire.IDBlock
	if err := wire.Unmarshal(reply.Payload, &blk); err != nil {
		return wire.IDBlock{}, fmt.Errorf("%w (ID block from node %d to node %d)", err, parent, r.id)
	}
	if blk.Count == 0 || blk.Count > n || uint64(blk.Start)+uint64(blk.Count) > math.MaxUint32 || blk.Start == wire.RootID {
		return wire.IDBlock{}, fmt.Errorf("arbor: node %d: parent %d sent a bad ID block [%d, +%d)", r.id, parent, blk.Start, blk.Count)
	}
	return blk, nil
}

// fromChildPeer admits a message only from the peer of the child link it
// arrived on, with that peer's own authority: the one node that may ask
// for IDs through the link.
func fromChildPeer(m *Message) bool {
	p := m.Port
	return p != nil && !p.IsParent && !p.authority && m.Src == p.PeerID && m.Auth == p.PeerID
}

// blockFetchTimeout bounds the round trip an intermediate node makes to
// its own parent for a child's block.
const blockFetchTimeout = time.Minute

// handleAllocateID answers a child's ALLOCATE_ID. The root takes the block
// from its counter; any other node passes the request to its own parent
// (from a goroutine: handlers never wait) and records what comes back.
func (r *Router) handleAllocateID(m *Message) {
	var req wire.AllocateIDRequest
	if err := wire.Unmarshal(m.Payload, &req); err != nil {
		r.ReplyError(m, err.Error())
		return
	}
	n := req.Count
	if n == 0 || n > wire.IDBlockSize {
		n = wire.IDBlockSize
	}
	owner := m.Port.PeerID
	if req.For != 0 && req.For != owner {
		if via, _, ok := r.Lookup(req.For); !ok || via != m.Port {
			r.log.Warn("ALLOCATE_ID refused: for a node not behind the link", "link", m.Port.String(), "for", req.For)
			r.ReplyError(m, fmt.Sprintf("node %d: IDs asked for node %d, which is not behind %s", r.id, req.For, m.Port))
			return
		}
		owner = req.For
	}
	upstream := r.id != wire.RootID
	if err := r.reserveIDs(m.Port, n, upstream); err != nil {
		r.log.Warn("ALLOCATE_ID refused", "link", m.Port.String(), "count", n, "error", err)
		r.ReplyError(m, errs.Reason(err))
		return
	}
	if !upstream {
		start, err := r.ids.take(n)
		if err != nil {
			m.Port.unreserveIDs(n, false)
			r.ReplyError(m, err.Error())
			return
		}
		r.grant(m, wire.IDBlock{Start: start, Count: n}, owner, false)
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), blockFetchTimeout)
		defer cancel()
		blk, err := r.requestIDBlock(ctx, n, owner)
		if err != nil {
			m.Port.unreserveIDs(n, true)
			r.ReplyError(m, errs.Reason(err))
			return
		}
		r.grant(m, blk, owner, true)
	}()
}

// grant records blk against the link m came on, as owner's, and sends it.
func (r *Router) grant(m *Message, blk wire.IDBlock, owner uint32, upstream bool) {
	m.Port.recordGrant(blk, owner, upstream)
	body, err := wire.Marshal(blk)
	if err != nil {
		r.ReplyError(m, err.Error())
		return
	}
	if err := r.Reply(m, body); err != nil {
		r.log.Warn("could not answer ALLOCATE_ID", "to", m.Src, "error", err)
	}
}
