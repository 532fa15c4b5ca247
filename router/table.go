package router

import (
	"container/heap"
	"sort"
)

// RouteEntry is one row of a route table: node ID is reached through the
// child link to Via.
type RouteEntry struct {
	ID   uint32 `json:"id"`
	Name string `json:"name"`
	Via  uint32 `json:"via"`
}

// Table is a snapshot of one node's routes.
type Table struct {
	ID     uint32       `json:"id"`
	Name   string       `json:"name"`
	Parent *uint32      `json:"parent"` // nil at the root
	Routes []RouteEntry `json:"routes"`
}

// Table returns a snapshot of this node's route table, ordered by ID.
func (r *Router) Table() Table { return r.TablePage(0, 0, nil) }

// TablePage returns a snapshot of part of this node's route table: the
// routes to IDs from from on that keep admits (nil admits all), ordered by
// ID, the limit lowest of them (limit <= 0: all). It makes one pass over the
// table and sorts only what it returns, so reading a large table a page at
// a time costs one pass per page, not a sort of the whole table. keep runs
// with the table's read lock held: it must not call the router.
func (r *Router) TablePage(from uint32, limit int, keep func(id uint32) bool) Table {
	t := Table{ID: r.id, Name: r.name}
	if len(r.ancestors) > 0 {
		p := r.ancestors[0]
		t.Parent = &p
	}
	h := lowestRoutes{}
	r.mu.RLock()
	for id, rt := range r.routes {
		if id < from || keep != nil && !keep(id) {
			continue
		}
		e := RouteEntry{ID: id, Name: rt.name, Via: rt.port.PeerID}
		switch {
		case limit <= 0 || len(h) < limit:
			h = append(h, e)
			if len(h) == limit {
				heap.Init(&h)
			}
		case id < h[0].ID:
			h[0] = e
			heap.Fix(&h, 0)
		}
	}
	r.mu.RUnlock()
	sort.Slice(h, func(i, j int) bool { return h[i].ID < h[j].ID })
	t.Routes = h
	return t
}

// lowestRoutes keeps the routes with the lowest IDs seen so far as a
// max-heap: its top is the highest ID kept, the one a lower ID replaces.
type lowestRoutes []RouteEntry

func (h lowestRoutes) Len() int           { return len(h) }
func (h lowestRoutes) Less(i, j int) bool { return h[i].ID > h[j].ID }
func (h lowestRoutes) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *lowestRoutes) Push(x any)        { *h = append(*h, x.(RouteEntry)) }
func (h *lowestRoutes) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
