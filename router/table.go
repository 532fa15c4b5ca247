package router

import "sort"

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
func (r *Router) Table() Table {
	t := Table{ID: r.id, Name: r.name, Routes: []RouteEntry{}}
	if len(r.ancestors) > 0 {
		p := r.ancestors[0]
		t.Parent = &p
	}
	r.mu.RLock()
	for id, rt := range r.routes {
		t.Routes = append(t.Routes, RouteEntry{ID: id, Name: rt.name, Via: rt.port.PeerID})
	}
	r.mu.RUnlock()
	sort.Slice(t.Routes, func(i, j int) bool { return t.Routes[i].ID < t.Routes[j].ID })
	return t
}
