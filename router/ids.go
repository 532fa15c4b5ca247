package router

import (
	"context"
	"fmt"
	"math"
	"sync"

	"github.com/arbor-project/arbor/internal/errs"
	"github.com/arbor-project/arbor/stream/wire"
)

// idAllocator hands out node IDs for this node's children. The root counts
// from 1; every other node takes blocks of wire.IDBlockSize from the root,
// so spawning a child costs a round trip to the root once per block. IDs
// are never reused. mu is never held across the round trip: one caller
// fetches a block while the others wait for it (or for their own ctx).
type idAllocator struct {
	r    *Router
	mu   sync.Mutex
	next uint32 // next free ID (the root's counter, or within the block)
	end  uint32 // end of the current block (exclusive); unused at the root
	// fetching is closed when the block request in flight ends; nil when
	// none is in flight.
	fetching chan struct{}
}

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
// it never blocks; elsewhere it may ask the root for a new block, and
// returns when the block comes, ctx ends or the root becomes unreachable.
// Concurrent callers share one block request; each can give up on its own.
func (r *Router) AllocateID(ctx context.Context) (uint32, error) {
	a := &r.ids
	if r.id == wire.RootID {
		return a.take(1)
	}
	for {
		a.mu.Lock()
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
				return 0, fmt.Errorf("arbor: node %d: waiting for an ID block from the root: %w", r.id, ctx.Err())
			}
		}
		done := make(chan struct{})
		a.fetching = done
		a.mu.Unlock()
		blk, err := r.requestIDBlock(ctx)
		a.mu.Lock()
		a.fetching = nil
		if err == nil {
			a.next, a.end = blk.Start, blk.Start+blk.Count
		}
		a.mu.Unlock()
		close(done)
		if err != nil {
			return 0, err
		}
	}
}

// requestIDBlock asks the root for a block of IDs.
func (r *Router) requestIDBlock(ctx context.Context) (wire.IDBlock, error) {
	body, err := wire.Marshal(wire.AllocateIDRequest{Count: wire.IDBlockSize})
	if err != nil {
		return wire.IDBlock{}, err
	}
	reply, err := r.Request(ctx, wire.RootID, wire.HandleAllocateID, body)
	if err != nil {
		if errs.IsContext(err) {
			return wire.IDBlock{}, fmt.Errorf("arbor: node %d: allocating IDs from the root: %w", r.id, err)
		}
		return wire.IDBlock{}, fmt.Errorf("%w (node %d allocating IDs from the root)", err, r.id)
	}
	var blk wire.IDBlock
	if err := wire.Unmarshal(reply.Payload, &blk); err != nil {
		return wire.IDBlock{}, fmt.Errorf("%w (ID block from the root to node %d)", err, r.id)
	}
	if blk.Count == 0 || uint64(blk.Start)+uint64(blk.Count) > math.MaxUint32 || blk.Start == wire.RootID {
		return wire.IDBlock{}, fmt.Errorf("arbor: node %d: root sent a bad ID block [%d, +%d)", r.id, blk.Start, blk.Count)
	}
	return blk, nil
}

// handleAllocateID runs at the root: it answers a descendant's ALLOCATE_ID.
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
	start, err := r.ids.take(n)
	if err != nil {
		r.ReplyError(m, err.Error())
		return
	}
	body, err := wire.Marshal(wire.IDBlock{Start: start, Count: n})
	if err != nil {
		r.ReplyError(m, err.Error())
		return
	}
	if err := r.Reply(m, body); err != nil {
		r.log.Warn("could not answer ALLOCATE_ID", "to", m.Src, "error", err)
	}
}
