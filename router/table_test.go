package router_test

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/arbor-project/arbor/internal/testtree"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream/wire"
)

// manyRoutes gives hub a table of n+1 routes: its child leaf, and n IDs
// leaf takes from its own blocks (the real path: leaf asks hub, hub asks
// the root) and announces with ADD_ROUTE frames of its own making. It
// returns once hub routes them all.
func manyRoutes(t *testing.T, o testtree.Options, n int) (root, hub, leaf *testtree.Node) {
	t.Helper()
	root = testtree.Root(t, o)
	hub = root.Spawn(t, o, "hub")
	leaf = hub.Spawn(t, o, "leaf")
	ctx := ctxPatience(t)
	var last uint32
	for i := 0; i < n; i++ {
		id, err := leaf.R.AllocateID(ctx)
		if err != nil {
			t.Fatal(err)
		}
		body, err := wire.Marshal(wire.AddRoute{ID: id, Name: fmt.Sprintf("hub/leaf/r%d", id), Parent: leaf.ID()})
		if err != nil {
			t.Fatal(err)
		}
		h := wire.Header{Dst: hub.ID(), Src: leaf.ID(), Auth: leaf.ID(), Handle: wire.HandleAddRoute}
		if err := leaf.Down.Link.Send(h, body); err != nil {
			t.Fatal(err)
		}
		last = id
	}
	hub.WaitRoute(t, last) // routes are handled in order: the last one is the last
	if got := len(hub.R.Table().Routes); got != n+1 {
		t.Fatalf("hub routes %d, want %d", got, n+1)
	}
	return root, hub, leaf
}

// TestTablePage reads a table of 1,501 routes page by page with limits
// below, at and above its size, with and without a filter: the pages,
// each at most its limit and ordered by ID, join up to the whole table
// (filtered), each route once.
func TestTablePage(t *testing.T) {
	_, hub, _ := manyRoutes(t, testtree.Options{}, 1500)
	whole := hub.R.Table()
	odd := func(id uint32) bool { return id%2 == 1 }
	for _, limit := range []int{1, 7, 500, 1501, 5000, 0} {
		for _, keep := range []func(uint32) bool{nil, odd} {
			var want []router.RouteEntry
			for _, r := range whole.Routes {
				if keep == nil || keep(r.ID) {
					want = append(want, r)
				}
			}
			var got []router.RouteEntry
			from, pages := uint32(0), 0
			for {
				p := hub.R.TablePage(from, limit, keep)
				if p.ID != whole.ID || p.Name != whole.Name || !reflect.DeepEqual(p.Parent, whole.Parent) {
					t.Fatalf("limit %d: page header %d %q %v, want the table's", limit, p.ID, p.Name, p.Parent)
				}
				if len(p.Routes) == 0 {
					break
				}
				if limit > 0 && len(p.Routes) > limit {
					t.Fatalf("limit %d: page of %d routes", limit, len(p.Routes))
				}
				got = append(got, p.Routes...)
				from = p.Routes[len(p.Routes)-1].ID + 1
				if pages++; pages > len(whole.Routes)+1 {
					t.Fatalf("limit %d: more pages than routes", limit)
				}
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("limit %d, filter %v: pages hold %d routes, want the %d of the table in ID order", limit, keep != nil, len(got), len(want))
			}
		}
	}
	if p := hub.R.TablePage(^uint32(0), 10, nil); p.Routes == nil || len(p.Routes) != 0 {
		t.Fatalf("page past the end: %#v, want an empty, non-nil list", p.Routes)
	}
}
