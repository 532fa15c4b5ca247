package routemonitor_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/arbor-project/arbor/internal/testtree"
	"github.com/arbor-project/arbor/routemonitor"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream/wire"
)

// patience is how long a test waits for an event before failing instead of
// hanging. It is a deadline, never a measurement.
const patience = time.Minute

// recorder keeps every route event a node's monitor fires, without times.
type recorder struct {
	mu     sync.Mutex
	events []routemonitor.Event
	notify chan struct{}
}

func record(t *testing.T, n *testtree.Node) *recorder {
	t.Helper()
	rec := &recorder{notify: make(chan struct{}, 1)}
	unsub := n.M.Subscribe(func(e routemonitor.Event) {
		e.Time = time.Time{}
		rec.mu.Lock()
		rec.events = append(rec.events, e)
		rec.mu.Unlock()
		select {
		case rec.notify <- struct{}{}:
		default:
		}
	})
	t.Cleanup(unsub)
	return rec
}

func (r *recorder) all() []routemonitor.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]routemonitor.Event(nil), r.events...)
}

// waitFor blocks until an event satisfying match has been recorded.
func (r *recorder) waitFor(t *testing.T, what string, match func(routemonitor.Event) bool) routemonitor.Event {
	t.Helper()
	deadline := time.NewTimer(patience)
	defer deadline.Stop()
	for {
		for _, e := range r.all() {
			if match(e) {
				return e
			}
		}
		select {
		case <-r.notify:
		case <-deadline.C:
			t.Fatalf("timed out waiting for event %s; have %+v", what, r.all())
		}
	}
}

// waitEvent blocks until exactly want (ignoring time) has been recorded.
func (r *recorder) waitEvent(t *testing.T, want routemonitor.Event) {
	t.Helper()
	r.waitFor(t, fmt.Sprintf("%+v", want), func(e routemonitor.Event) bool { return e == want })
}

// settle waits until every event of want has been recorded, checks that
// nothing else was (in any order: updates climbing different links
// interleave), and forgets them, so later checks see only what follows.
func (r *recorder) settle(t *testing.T, who string, want ...routemonitor.Event) {
	t.Helper()
	for _, e := range want {
		r.waitEvent(t, e)
	}
	r.mu.Lock()
	got := r.events
	r.events = nil
	r.mu.Unlock()
	byID := func(es []routemonitor.Event) []routemonitor.Event {
		es = append([]routemonitor.Event(nil), es...)
		sort.Slice(es, func(i, j int) bool {
			if es[i].Kind != es[j].Kind {
				return es[i].Kind < es[j].Kind
			}
			return es[i].ID < es[j].ID
		})
		return es
	}
	if g, w := byID(got), byID(want); !reflect.DeepEqual(g, w) {
		t.Fatalf("%s events:\n got  %+v\n want %+v", who, g, w)
	}
}

// added is the AddRoute event for n, learned through the link to via.
func added(n *testtree.Node, name string, via *testtree.Node) routemonitor.Event {
	return routemonitor.Event{Kind: routemonitor.AddRoute, ID: n.ID(), Name: name, Via: via.ID(), Parent: n.Parent.ID()}
}

// expectLog fails unless exactly one record matches msg and fields.
func expectLog(t *testing.T, c *testtree.LogCapture, msg string, fields map[string]any) {
	t.Helper()
	if got := c.Find(t, msg, fields); len(got) != 1 {
		all := c.Find(t, msg, nil)
		t.Fatalf("want exactly one log record %q with %v, got %d; records with that message: %v", msg, fields, len(got), all)
	}
}

// echo registers a handler on n that answers every message with its own
// payload, whoever sends it, and returns its handle.
func echo(n *testtree.Node) uint32 {
	return n.R.AddHandler(func(m *router.Message) { _ = n.R.Reply(m, m.Payload) }, router.Anyone)
}

// barrier makes a round trip from one node to the echo handle of another.
// Frames on one link are handled in order on its read loop, so when the
// reply is back every frame from sent earlier along that path has been
// handled at every hop, and whatever those hops sent on because of it was
// queued ahead of the request on the next link.
func barrier(t *testing.T, from *testtree.Node, to *testtree.Node, handle uint32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if _, err := from.R.Request(ctx, to.ID(), handle, []byte{0x40}); err != nil {
		t.Fatalf("barrier %d → %d: %v", from.ID(), to.ID(), err)
	}
}

// inject puts a frame straight on a link, bypassing the sender's router:
// what a compromised or buggy peer could send.
func inject(t *testing.T, p *router.Port, h wire.Header, v any) {
	t.Helper()
	body, err := wire.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Link.Send(h, body); err != nil {
		t.Fatalf("inject %s on %s: %v", h, p, err)
	}
}

func ids(ns ...*testtree.Node) []uint32 {
	out := make([]uint32, len(ns))
	for i, n := range ns {
		out[i] = n.ID()
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// wantTable builds the expected route table of n; routes are sorted by ID.
func wantTable(n *testtree.Node, name string, routes ...router.RouteEntry) router.Table {
	t := router.Table{ID: n.ID(), Name: name, Routes: append([]router.RouteEntry{}, routes...)}
	if n.Parent != nil {
		p := n.Parent.ID()
		t.Parent = &p
	}
	sort.Slice(t.Routes, func(i, j int) bool { return t.Routes[i].ID < t.Routes[j].ID })
	return t
}

func via(n *testtree.Node, name string, child *testtree.Node) router.RouteEntry {
	return router.RouteEntry{ID: n.ID(), Name: name, Via: child.ID()}
}

func checkTable(t *testing.T, n *testtree.Node, want router.Table) {
	t.Helper()
	if got := n.R.Table(); !reflect.DeepEqual(got, want) {
		t.Errorf("node %d table:\n got  %s\n want %s", n.ID(), fmtTable(got), fmtTable(want))
	}
}

func fmtTable(tb router.Table) string {
	parent := "none"
	if tb.Parent != nil {
		parent = fmt.Sprint(*tb.Parent)
	}
	return fmt.Sprintf("{id=%d name=%q parent=%s routes=%+v}", tb.ID, tb.Name, parent, tb.Routes)
}

// TestAddRouteFourLevelsDown spawns a node four levels below the root, in a
// tree with a sibling at every level, and checks that its ADD_ROUTE reaches
// the root with its name and that every table on the way routes it (and
// everything else) through the right child.
func TestAddRouteFourLevelsDown(t *testing.T) {
	for _, tr := range testtree.Transports {
		t.Run(tr.Name, func(t *testing.T) {
			o := testtree.Options{Transport: tr}
			root := testtree.Root(t, o)
			rootEvents := record(t, root)
			a := root.Spawn(t, o, "a")
			aEvents := record(t, a)
			x := root.Spawn(t, o, "x")
			b := a.Spawn(t, o, "b")
			b2 := a.Spawn(t, o, "b2")
			c := b.Spawn(t, o, "c")
			c2 := b.Spawn(t, o, "c2")
			rootEvents.settle(t, "root", added(a, "a", a), added(x, "x", x), added(b, "a/b", a),
				added(b2, "a/b2", a), added(c, "a/b/c", a), added(c2, "a/b/c2", a))
			aEvents.settle(t, "a", added(b, "a/b", b), added(b2, "a/b2", b2),
				added(c, "a/b/c", b), added(c2, "a/b/c2", b))

			d := c.Spawn(t, o, "d")
			want := added(d, "a/b/c/d", a)
			rootEvents.waitEvent(t, want)

			// A message from the root reaches d along those routes; once its
			// reply is back, nothing about d is still in flight.
			barrier(t, root, d, echo(d))
			if got := rootEvents.all(); !reflect.DeepEqual(got, []routemonitor.Event{want}) {
				t.Errorf("root events: got %+v, want exactly %+v", got, want)
			}
			wantA := added(d, "a/b/c/d", b)
			if got := aEvents.all(); !reflect.DeepEqual(got, []routemonitor.Event{wantA}) {
				t.Errorf("a events: got %+v, want exactly %+v", got, wantA)
			}

			checkTable(t, root, wantTable(root, "root",
				via(a, "a", a), via(x, "x", x),
				via(b, "a/b", a), via(b2, "a/b2", a),
				via(c, "a/b/c", a), via(c2, "a/b/c2", a),
				via(d, "a/b/c/d", a)))
			checkTable(t, x, wantTable(x, "x"))
			checkTable(t, a, wantTable(a, "a",
				via(b, "a/b", b), via(b2, "a/b2", b2),
				via(c, "a/b/c", b), via(c2, "a/b/c2", b),
				via(d, "a/b/c/d", b)))
			checkTable(t, b2, wantTable(b2, "a/b2"))
			checkTable(t, b, wantTable(b, "a/b",
				via(c, "a/b/c", c), via(c2, "a/b/c2", c2),
				via(d, "a/b/c/d", c)))
			checkTable(t, c2, wantTable(c2, "a/b/c2"))
			checkTable(t, c, wantTable(c, "a/b/c", via(d, "a/b/c/d", d)))
			checkTable(t, d, wantTable(d, "a/b/c/d"))

			// The monitors' per-link sets agree with the tables.
			sets := []struct {
				at   *testtree.Node
				link *testtree.Node
				want []uint32
			}{
				{root, a, ids(a, b, b2, c, c2, d)},
				{root, x, ids(x)},
				{a, b, ids(b, c, c2, d)},
				{a, b2, ids(b2)},
				{b, c, ids(c, d)},
				{b, c2, ids(c2)},
				{c, d, ids(d)},
			}
			for _, s := range sets {
				if got := s.at.M.RoutesVia(s.link.Up); !reflect.DeepEqual(got, s.want) {
					t.Errorf("node %d: routes via link to %d: got %v, want %v", s.at.ID(), s.link.ID(), got, s.want)
				}
			}
		})
	}
}

// holder registers a handler on n that admits anyone and never replies: a
// call into it stays pending until something fails it. Each message is
// passed to the returned channel.
func holder(n *testtree.Node) (uint32, <-chan *router.Message) {
	ch := make(chan *router.Message, 16)
	h := n.R.AddHandler(func(m *router.Message) { ch <- m }, router.Anyone)
	return h, ch
}

func received(t *testing.T, ch <-chan *router.Message, src uint32) {
	t.Helper()
	select {
	case m := <-ch:
		if m.Src != src {
			t.Fatalf("held call from %d, want from %d", m.Src, src)
		}
	case <-time.After(patience):
		t.Fatalf("call from %d never arrived", src)
	}
}

// failsWith waits for p and checks that it failed with exactly want.
func failsWith(t *testing.T, who string, p *router.Pending, want router.DisconnectError) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	m, err := p.Wait(ctx)
	if err == nil {
		t.Fatalf("%s: pending call got a reply %+v, want a disconnect", who, m.Header)
	}
	if !errors.Is(err, router.ErrDisconnected) {
		t.Fatalf("%s: pending call failed with %v, want ErrDisconnected", who, err)
	}
	var de *router.DisconnectError
	if !errors.As(err, &de) {
		t.Fatalf("%s: error %T is not a *router.DisconnectError", who, err)
	}
	if *de != want {
		t.Fatalf("%s: got %+v, want %+v", who, *de, want)
	}
	wantText := fmt.Sprintf("arbor: node %d disconnected: %s", want.ID, want.Cause)
	if want.Name != "" {
		wantText = fmt.Sprintf("arbor: node %d (%s) disconnected: %s", want.ID, want.Name, want.Cause)
	}
	if err.Error() != wantText {
		t.Fatalf("%s: error text %q, want %q", who, err.Error(), wantText)
	}
}

// TestLinkCutWithdrawsSubtree cuts the link between a and b in
//
//	root ─┬─ a ─┬─ b ── c ── d
//	      │     └─ b2            (near sibling: sent to d)
//	      └─ x ── y              (far sibling: sent to c and d)
//
// and checks that the root and a lose b, c and d; that calls pending at
// the root, at a, at b2 and at y fail at once with a DisconnectError naming the
// node and the hop; and that DEL_ROUTE reached b2 and y (through x) for
// exactly the IDs they had sent traffic to. The link is cut either by
// aborting it at a or by closing b's router.
func TestLinkCutWithdrawsSubtree(t *testing.T) {
	errCut := errors.New("cut by test")
	modes := []struct {
		name string
		why  string // the cause a reports
		cut  func(a, b *testtree.Node)
	}{
		{"abort", "cut by test", func(a, b *testtree.Node) { b.Up.Link.Abort(errCut) }},
		{"close", "EOF", func(a, b *testtree.Node) { b.R.Close() }},
	}
	for _, tr := range testtree.Transports {
		t.Run(tr.Name, func(t *testing.T) {
			for _, mode := range modes {
				t.Run(mode.name, func(t *testing.T) {
					o := testtree.Options{Transport: tr, AllowSiblingRoutes: true}
					root := testtree.Root(t, o)
					evRoot := record(t, root)
					a := root.Spawn(t, o, "a")
					evA := record(t, a)
					x := root.Spawn(t, o, "x")
					evX := record(t, x)
					b := a.Spawn(t, o, "b")
					evB := record(t, b)
					b2 := a.Spawn(t, o, "b2")
					evB2 := record(t, b2)
					c := b.Spawn(t, o, "c")
					d := c.Spawn(t, o, "d")
					y := x.Spawn(t, o, "y")
					evY := record(t, y)
					evRoot.settle(t, "root", added(a, "a", a), added(x, "x", x), added(b, "a/b", a),
						added(b2, "a/b2", a), added(c, "a/b/c", a), added(d, "a/b/c/d", a), added(y, "x/y", x))
					evA.settle(t, "a", added(b, "a/b", b), added(b2, "a/b2", b2), added(c, "a/b/c", b), added(d, "a/b/c/d", b))
					evB.settle(t, "b", added(c, "a/b/c", c), added(d, "a/b/c/d", c))
					evX.settle(t, "x", added(y, "x/y", y))
					// The monitors withdraw a lost link's IDs in ascending
					// order, so anything sent about b arrives before c, and c
					// before d: that makes "nothing else arrived" checkable.
					if !(b.ID() < c.ID() && c.ID() < d.ID()) {
						t.Fatalf("IDs b=%d c=%d d=%d are not ascending", b.ID(), c.ID(), d.ID())
					}

					hc, atC := holder(c)
					hd, atD := holder(d)
					pRoot, err := root.R.Begin(d.ID(), hd, nil)
					if err != nil {
						t.Fatal(err)
					}
					received(t, atD, root.ID())
					pA, err := a.R.Begin(d.ID(), hd, nil)
					if err != nil {
						t.Fatal(err)
					}
					received(t, atD, a.ID())
					pB2, err := b2.R.Begin(d.ID(), hd, nil)
					if err != nil {
						t.Fatal(err)
					}
					received(t, atD, b2.ID())
					pYc, err := y.R.Begin(c.ID(), hc, nil)
					if err != nil {
						t.Fatal(err)
					}
					received(t, atC, y.ID())
					pYd, err := y.R.Begin(d.ID(), hd, nil)
					if err != nil {
						t.Fatal(err)
					}
					received(t, atD, y.ID())

					if got := append(evB2.all(), evY.all()...); len(got) != 0 {
						t.Fatalf("leaves fired events %+v", got)
					}

					mode.cut(a, b)

					// a withdraws b, c and d with the cause of its own lost link.
					// When b's router closes, b may first withdraw c and d itself
					// (its link to c closed while its parent link was still up);
					// either cause is right, but every node must agree on it.
					causeA := fmt.Sprintf("link from node %d to node %d (a/b) lost: %s", a.ID(), b.ID(), mode.why)
					causeB := fmt.Sprintf("link from node %d to node %d (a/b/c) lost: link closed", b.ID(), c.ID())
					names := map[uint32]string{b.ID(): "a/b", c.ID(): "a/b/c", d.ID(): "a/b/c/d"}
					for id := range names {
						evA.waitFor(t, fmt.Sprintf("del_route %d", id), func(e routemonitor.Event) bool {
							return e.Kind == routemonitor.DelRoute && e.ID == id
						})
					}
					lost := evA.all()
					cause := map[uint32]string{}
					for _, e := range lost {
						ok := e.Kind == routemonitor.DelRoute && e.Name == names[e.ID] && e.Cause == causeA
						if mode.name == "close" && e.ID != b.ID() && e.Cause == causeB {
							ok = e.Kind == routemonitor.DelRoute && e.Name == names[e.ID]
						}
						if !ok || cause[e.ID] != "" {
							t.Fatalf("a: unexpected event %+v among %+v", e, lost)
						}
						cause[e.ID] = e.Cause
					}
					if len(lost) != 3 {
						t.Fatalf("a: events %+v, want one del_route each for b, c and d", lost)
					}
					if mode.name == "abort" {
						want := []uint32{b.ID(), c.ID(), d.ID()}
						for i, e := range lost {
							if e.ID != want[i] {
								t.Fatalf("a: withdrew in order %+v, want b, c, d", lost)
							}
						}
					}

					failsWith(t, "root→d", pRoot, router.DisconnectError{ID: d.ID(), Name: "a/b/c/d", Cause: cause[d.ID()]})
					failsWith(t, "a→d", pA, router.DisconnectError{ID: d.ID(), Name: "a/b/c/d", Cause: cause[d.ID()]})
					failsWith(t, "b2→d", pB2, router.DisconnectError{ID: d.ID(), Name: "a/b/c/d", Cause: cause[d.ID()]})
					failsWith(t, "y→c", pYc, router.DisconnectError{ID: c.ID(), Name: "a/b/c", Cause: cause[c.ID()]})
					failsWith(t, "y→d", pYd, router.DisconnectError{ID: d.ID(), Name: "a/b/c/d", Cause: cause[d.ID()]})

					// The root hears of the losses in a's order; a sibling hears,
					// with names (DEL_ROUTE carries them), of exactly the IDs
					// it had sent traffic to: the down-propagation.
					lostOf := func(keep ...*testtree.Node) []routemonitor.Event {
						var out []routemonitor.Event
						for _, e := range lost {
							for _, k := range keep {
								if e.ID == k.ID() {
									out = append(out, e)
								}
							}
						}
						return out
					}
					checks := []struct {
						who  string
						rec  *recorder
						want []routemonitor.Event
					}{
						{"root", evRoot, lost},
						{"b2", evB2, lostOf(d)},
						{"x", evX, lostOf(c, d)},
						{"y", evY, lostOf(c, d)},
					}
					for _, ch := range checks {
						for _, e := range ch.want {
							ch.rec.waitEvent(t, e)
						}
						if got := ch.rec.all(); !reflect.DeepEqual(got, ch.want) {
							t.Errorf("%s events:\n got  %+v\n want %+v", ch.who, got, ch.want)
						}
					}

					checkTable(t, root, wantTable(root, "root",
						via(a, "a", a), via(x, "x", x), via(b2, "a/b2", a), via(y, "x/y", x)))
					checkTable(t, a, wantTable(a, "a", via(b2, "a/b2", b2)))
					checkTable(t, x, wantTable(x, "x", via(y, "x/y", y)))
					for _, n := range []*testtree.Node{root, a, b2, y} {
						if got := n.R.PendingCount(); got != 0 {
							t.Errorf("node %d: %d calls still pending", n.ID(), got)
						}
					}
					// The siblings forgot what they had talked to: a second
					// loss of the same IDs would not be sent to them again.
					if b2.Up.TalkedTo(d.ID()) || x.Up.TalkedTo(c.ID()) || x.Up.TalkedTo(d.ID()) || y.Up.TalkedTo(d.ID()) {
						t.Errorf("egress sets still hold the lost IDs")
					}

					if mode.name == "abort" {
						// Below the cut, b lost its parent and keeps its subtree.
						e := evB.waitFor(t, "parent_lost", func(e routemonitor.Event) bool { return e.Kind == routemonitor.ParentLost })
						wantB := routemonitor.Event{Kind: routemonitor.ParentLost, ID: a.ID(),
							Cause: fmt.Sprintf("parent link of node %d (to node %d) lost: EOF", b.ID(), a.ID())}
						if e != wantB {
							t.Errorf("b: got %+v, want %+v", e, wantB)
						}
						checkTable(t, b, wantTable(b, "a/b", via(c, "a/b/c", c), via(d, "a/b/c/d", c)))
					}

					// The survivors still talk across the tree.
					barrier(t, y, root, echo(root))
					barrier(t, root, b2, echo(b2))
				})
			}
		})
	}
}

// TestRouteUpdatesFromTheWrongLink injects route updates that no honest
// peer sends in
//
//	root ─┬─ a ─┬─ b ── c
//	      │     └─ b2
//	      └─ x
//
// and checks each is refused or ignored, logged, and changes nothing: a
// duplicate ADD_ROUTE for an ID routed through another link, ADD_ROUTE and
// DEL_ROUTE from a node that is not the link's own child, DEL_ROUTE from a
// link that does not own the route, and DEL_ROUTE from the parent for a
// route a child owns. An honest update on the same path is accepted, so the
// injection path itself works.
func TestRouteUpdatesFromTheWrongLink(t *testing.T) {
	for _, tr := range testtree.Transports {
		t.Run(tr.Name, func(t *testing.T) {
			logs, logger := testtree.NewLogCapture()
			o := testtree.Options{Transport: tr, Logger: logger}
			root := testtree.Root(t, o)
			evRoot := record(t, root)
			a := root.Spawn(t, o, "a")
			evA := record(t, a)
			x := root.Spawn(t, o, "x")
			b := a.Spawn(t, o, "b")
			b2 := a.Spawn(t, o, "b2")
			c := b.Spawn(t, o, "c")
			evRoot.settle(t, "root", added(a, "a", a), added(x, "x", x), added(b, "a/b", a),
				added(b2, "a/b2", a), added(c, "a/b/c", a))
			evA.settle(t, "a", added(b, "a/b", b), added(b2, "a/b2", b2), added(c, "a/b/c", b))
			rootEcho, bEcho := echo(root), echo(b)
			wantRoot := wantTable(root, "root", via(a, "a", a), via(x, "x", x),
				via(b, "a/b", a), via(b2, "a/b2", a), via(c, "a/b/c", a))
			wantA := wantTable(a, "a", via(b, "a/b", b), via(b2, "a/b2", b2), via(c, "a/b/c", b))

			up := func(from *testtree.Node) wire.Header {
				return wire.Header{Dst: from.Parent.ID(), Src: from.ID(), Auth: from.ID()}
			}
			addRoute := func(h wire.Header) wire.Header { h.Handle = wire.HandleAddRoute; return h }
			delRoute := func(h wire.Header) wire.Header { h.Handle = wire.HandleDelRoute; return h }
			link := func(n *testtree.Node, name string) string {
				return fmt.Sprintf("link to node %d (%s)", n.ID(), name)
			}

			t.Run("duplicate ADD_ROUTE at an intermediate", func(t *testing.T) {
				inject(t, b.Down, addRoute(up(b)), wire.AddRoute{ID: b2.ID(), Name: "a/b/evil", Parent: b.ID()})
				barrier(t, b, root, rootEcho)
				expectLog(t, logs, "ADD_ROUTE refused", map[string]any{
					"node": a.ID(), "id": b2.ID(), "name": "a/b/evil", "link": link(b, "a/b"),
					"error": fmt.Sprintf("arbor: node %d: refusing duplicate route to %d via %s: already routed via %s",
						a.ID(), b2.ID(), link(b, "a/b"), link(b2, "a/b2")),
				})
			})
			t.Run("duplicate ADD_ROUTE at the root", func(t *testing.T) {
				inject(t, a.Down, addRoute(up(a)), wire.AddRoute{ID: x.ID(), Name: "a/evil", Parent: a.ID()})
				barrier(t, a, root, rootEcho)
				expectLog(t, logs, "ADD_ROUTE refused", map[string]any{
					"node": root.ID(), "id": x.ID(), "name": "a/evil", "link": link(a, "a"),
					"error": fmt.Sprintf("arbor: node 0: refusing duplicate route to %d via %s: already routed via %s",
						x.ID(), link(a, "a"), link(x, "x")),
				})
			})
			t.Run("ADD_ROUTE for an ancestor", func(t *testing.T) {
				inject(t, b.Down, addRoute(up(b)), wire.AddRoute{ID: root.ID(), Name: "a/b/evil-root", Parent: b.ID()})
				barrier(t, b, root, rootEcho)
				expectLog(t, logs, "ADD_ROUTE refused", map[string]any{
					"node": a.ID(), "id": root.ID(), "name": "a/b/evil-root", "link": link(b, "a/b"),
					"error": fmt.Sprintf("arbor: node %d: refusing route to 0 via %s: that is this node or an ancestor",
						a.ID(), link(b, "a/b")),
				})
			})
			t.Run("ADD_ROUTE from a grandchild", func(t *testing.T) {
				// c's router sends it honestly addressed to a; it arrives on
				// the link a shares with b, whose child c is not.
				body, _ := wire.Marshal(wire.AddRoute{ID: 4242, Name: "ghost"})
				if err := c.R.Send(wire.Header{Dst: a.ID(), Handle: wire.HandleAddRoute}, body); err != nil {
					t.Fatal(err)
				}
				barrier(t, c, root, rootEcho)
				expectLog(t, logs, "ADD_ROUTE refused: not from the child that owns the link", map[string]any{
					"node": a.ID(), "src": c.ID(), "link": link(b, "a/b"),
				})
			})
			t.Run("DEL_ROUTE from a link that does not own the route", func(t *testing.T) {
				inject(t, b.Down, delRoute(up(b)), wire.DelRoute{ID: b2.ID(), Cause: "evil"})
				inject(t, b2.Down, delRoute(up(b2)), wire.DelRoute{ID: c.ID(), Cause: "evil"})
				barrier(t, b, root, rootEcho)
				barrier(t, b2, root, rootEcho)
				expectLog(t, logs, "DEL_ROUTE ignored: not from the link that owns the route", map[string]any{
					"node": a.ID(), "id": b2.ID(), "from": link(b, "a/b"), "src": b.ID(), "owner": link(b2, "a/b2"),
				})
				expectLog(t, logs, "DEL_ROUTE ignored: not from the link that owns the route", map[string]any{
					"node": a.ID(), "id": c.ID(), "from": link(b2, "a/b2"), "src": b2.ID(), "owner": link(b, "a/b"),
				})
			})
			t.Run("DEL_ROUTE from a grandchild", func(t *testing.T) {
				body, _ := wire.Marshal(wire.DelRoute{ID: c.ID(), Cause: "evil"})
				if err := c.R.Send(wire.Header{Dst: a.ID(), Handle: wire.HandleDelRoute}, body); err != nil {
					t.Fatal(err)
				}
				barrier(t, c, root, rootEcho)
				expectLog(t, logs, "DEL_ROUTE ignored: not from the node at the other end of the link", map[string]any{
					"node": a.ID(), "id": c.ID(), "from": link(b, "a/b"), "src": c.ID(), "auth": c.ID(),
				})
			})
			t.Run("DEL_ROUTE from the parent for a child's route", func(t *testing.T) {
				inject(t, a.Up, delRoute(wire.Header{Dst: a.ID(), Src: root.ID(), Auth: root.ID()}),
					wire.DelRoute{ID: b.ID(), Cause: "evil"})
				barrier(t, root, b, bEcho)
				expectLog(t, logs, "DEL_ROUTE from parent ignored: route is owned by a child link", map[string]any{
					"node": a.ID(), "id": b.ID(), "owner": link(b, "a/b"),
				})
			})

			// Nothing changed anywhere, and nothing was mistaken for spoofing.
			if got := evRoot.all(); len(got) != 0 {
				t.Errorf("root fired events %+v", got)
			}
			if got := evA.all(); len(got) != 0 {
				t.Errorf("a fired events %+v", got)
			}
			checkTable(t, root, wantRoot)
			checkTable(t, a, wantA)
			if n := root.R.SpoofedDropped() + a.R.SpoofedDropped(); n != 0 {
				t.Errorf("%d frames dropped as spoofed; these updates pass the reverse-path check", n)
			}

			t.Run("honest updates on the same path", func(t *testing.T) {
				// An ID b allocated itself, as for a child it spawns.
				ctx, cancel := context.WithTimeout(context.Background(), patience)
				defer cancel()
				fake, err := b.R.AllocateID(ctx)
				if err != nil {
					t.Fatal(err)
				}
				inject(t, b.Down, addRoute(up(b)), wire.AddRoute{ID: fake, Name: "a/b/extra", Parent: b.ID()})
				evRoot.waitEvent(t, routemonitor.Event{Kind: routemonitor.AddRoute, ID: fake, Name: "a/b/extra", Via: a.ID(), Parent: b.ID()})
				if port, name, ok := a.R.Lookup(fake); !ok || port != b.Up || name != "a/b/extra" {
					t.Fatalf("a: route to %d: %v %q %v, want via b", fake, port, name, ok)
				}
				inject(t, b.Down, delRoute(up(b)), wire.DelRoute{ID: fake, Cause: "gone"})
				evRoot.waitEvent(t, routemonitor.Event{Kind: routemonitor.DelRoute, ID: fake, Name: "a/b/extra", Cause: "gone"})
				checkTable(t, root, wantRoot)
				checkTable(t, a, wantA)
			})
		})
	}
}
