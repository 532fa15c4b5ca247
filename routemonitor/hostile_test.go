package routemonitor_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/arbor-project/arbor/internal/testtree"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream/wire"
)

// A hostile child in these tests is a real node of an in-process tree: it
// completed the real hello over a real pipe, and then puts frames of its
// own making on its link (inject), bypassing its router's rules.

// nameEcho registers a handler on n that answers with n's name, so a
// caller can tell which node it reached.
func nameEcho(n *testtree.Node) uint32 {
	return n.R.AddHandler(func(m *router.Message) { _ = n.R.Reply(m, []byte(n.R.Name())) }, router.Anyone)
}

func hostileUp(n *testtree.Node, handle uint32) wire.Header {
	return wire.Header{Dst: n.Parent.ID(), Src: n.ID(), Auth: n.ID(), Handle: handle}
}

// TestRouteHijack has a child announce routes to IDs that were never
// allocated through its link: the ID the root hands out next, a dead
// node's, one far ahead of the allocator. Each is refused, logged, and
// closes the hijacking link; the honest spawn that follows gets the ID and
// is the node that answers for it. A route to an ID the child did take
// from its own block is accepted.
func TestRouteHijack(t *testing.T) {
	for _, tc := range []struct {
		name   string
		target func(t *testing.T, root *testtree.Node, o testtree.Options) uint32
	}{
		{"the next ID the root hands out", func(t *testing.T, root *testtree.Node, o testtree.Options) uint32 {
			return 0 // filled in below: the honest spawn's ID
		}},
		{"a dead node's ID", func(t *testing.T, root *testtree.Node, o testtree.Options) uint32 {
			d := root.Spawn(t, o, "dead")
			d.R.Close()
			root.WaitNoRoute(t, d.ID())
			return d.ID()
		}},
		{"an ID far ahead of the allocator", func(t *testing.T, root *testtree.Node, o testtree.Options) uint32 {
			return 99_999
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs, logger := testtree.NewLogCapture()
			o := testtree.Options{Logger: logger}
			root := testtree.Root(t, o)
			evil := root.Spawn(t, o, "evil")

			// The child's own block works as it should.
			own, err := evil.R.AllocateID(ctxPatience(t))
			if err != nil {
				t.Fatal(err)
			}
			inject(t, evil.Down, hostileUp(evil, wire.HandleAddRoute), wire.AddRoute{ID: own, Name: "evil/own", Parent: evil.ID()})
			root.WaitRoute(t, own)

			target := tc.target(t, root, o)
			rec := record(t, root)
			next := target == 0
			if next {
				// The root's next ID: allocate it to learn it, then give it
				// back so the honest spawn below gets it again.
				id, err := root.R.AllocateID(ctxPatience(t))
				if err != nil {
					t.Fatal(err)
				}
				root.R.ReleaseID(id)
				target = id
			}
			inject(t, evil.Down, hostileUp(evil, wire.HandleAddRoute), wire.AddRoute{ID: target, Name: "evil/honest", Parent: evil.ID()})
			root.WaitNoRoute(t, evil.ID())
			root.WaitNoRoute(t, own)
			if _, _, ok := root.R.Lookup(target); ok {
				t.Fatalf("root routes %d after the hijack", target)
			}
			recs := logs.Find(t, "ADD_ROUTE refused: route hijack; closing link", map[string]any{"id": target})
			if len(recs) != 1 {
				t.Fatalf("want one hijack record for %d, got %v", target, recs)
			}
			if msg, _ := recs[0]["error"].(string); !strings.Contains(msg, "refusing route to") {
				t.Errorf("hijack record error: %q", msg)
			}
			for _, e := range rec.all() {
				if e.ID == target && e.Kind.String() == "add_route" {
					t.Fatalf("root fired %+v for the hijacked ID", e)
				}
			}

			if next {
				honest := root.Spawn(t, o, "honest")
				if honest.ID() != target {
					t.Fatalf("honest spawn got ID %d, want %d (the hijacked one)", honest.ID(), target)
				}
				reply, err := root.R.Request(ctxPatience(t), target, nameEcho(honest), nil)
				if err != nil {
					t.Fatal(err)
				}
				if string(reply.Payload) != "honest" {
					t.Fatalf("node %d answered as %q, want the honest node", target, reply.Payload)
				}
			}
		})
	}
}

// TestRouteQuotas drives one hostile child against every per-link bound at
// the root: ID blocks past the unused bound, routes past the route quota,
// over-long and control-laden names, and the ID token bucket. Each is
// refused with its own error while the honest sibling keeps answering, and
// the root's live heap stays bounded.
func TestRouteQuotas(t *testing.T) {
	const maxRoutes = 2000
	logs, logger := testtree.NewLogCapture()
	o := testtree.Options{Logger: logger, Quota: router.Quota{
		MaxRoutesPerLink: maxRoutes, MaxUnusedIDs: 64, IDBurst: 4096, IDRate: 0.001,
	}}
	root := testtree.Root(t, o)
	honest := root.Spawn(t, o, "honest")
	honestEcho := nameEcho(honest)
	evil := root.Spawn(t, o, "evil")
	ctx := ctxPatience(t)

	ask := func(n uint32) (wire.IDBlock, error) {
		body, _ := wire.Marshal(wire.AllocateIDRequest{Count: n})
		reply, err := evil.R.Request(ctx, root.ID(), wire.HandleAllocateID, body)
		if err != nil {
			return wire.IDBlock{}, err
		}
		var blk wire.IDBlock
		return blk, wire.Unmarshal(reply.Payload, &blk)
	}
	ping := func() {
		t.Helper()
		if r, err := root.R.Request(ctx, honest.ID(), honestEcho, nil); err != nil || string(r.Payload) != "honest" {
			t.Fatalf("honest sibling: %v", err)
		}
	}
	var m0 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)

	// Blocks nobody uses: five of 16, then refused.
	var blocks []wire.IDBlock
	for {
		blk, err := ask(16)
		if err != nil {
			if !strings.Contains(err.Error(), "never been used by a route") {
				t.Fatalf("block refused with %v", err)
			}
			break
		}
		blocks = append(blocks, blk)
		if len(blocks) > 64 {
			t.Fatal("unused ID blocks never refused")
		}
	}
	if len(blocks) != 5 {
		t.Fatalf("got %d unused blocks of 16, want 5 (MaxUnusedIDs 64, plus 16 for the one route)", len(blocks))
	}
	ping()

	// Names: too long, or holding a newline.
	id := blocks[0].Start
	for _, name := range []string{strings.Repeat("n", 4<<10), "x\n[ERROR] arbor: forged"} {
		inject(t, evil.Down, hostileUp(evil, wire.HandleAddRoute), wire.AddRoute{ID: id, Name: name, Parent: evil.ID()})
	}
	barrier(t, evil, root, echo(root))
	if _, _, ok := root.R.Lookup(id); ok {
		t.Fatal("a route with a bad name was installed")
	}
	if n := len(logs.Find(t, "ADD_ROUTE refused", map[string]any{"id": id})); n != 2 {
		t.Fatalf("%d refusals logged for the bad names, want 2", n)
	}

	// Use every ID, ask again, and so on, to the route quota.
	announced := 0
	refused := false
	for !refused {
		for _, blk := range blocks {
			for i := uint32(0); i < blk.Count; i++ {
				inject(t, evil.Down, hostileUp(evil, wire.HandleAddRoute), wire.AddRoute{ID: blk.Start + i, Name: "evil/n", Parent: evil.ID()})
				announced++
			}
		}
		barrier(t, evil, root, echo(root))
		blocks = blocks[:0]
		// A link may hold as many unused IDs as it used: ask for that.
		if blk, err := ask(uint32(min(announced, 1000))); err == nil {
			blocks = append(blocks, blk)
		}
		if len(blocks) == 0 {
			t.Fatalf("no more blocks after %d routes: %v", announced, root.R.Children())
		}
		refused = evil.Up.Usage().Routes >= maxRoutes
	}
	// One more route past the quota.
	inject(t, evil.Down, hostileUp(evil, wire.HandleAddRoute), wire.AddRoute{ID: blocks[0].Start, Name: "evil/over", Parent: evil.ID()})
	barrier(t, evil, root, echo(root))
	if u := evil.Up.Usage(); u.Routes != maxRoutes {
		t.Fatalf("evil's link holds %d routes, want the quota %d", u.Routes, maxRoutes)
	}
	quota := logs.Find(t, "ADD_ROUTE refused", map[string]any{"id": blocks[0].Start})
	if len(quota) != 1 || !strings.Contains(quota[0]["error"].(string), "reached its quota of 2000 routes") {
		t.Fatalf("route past the quota: %v", quota)
	}
	ping()

	var m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m1)
	grew := int64(m1.HeapAlloc) - int64(m0.HeapAlloc)
	t.Logf("root and tree heap grew by %d KiB for %d routes", grew>>10, maxRoutes)
	if grew > 32<<20 {
		t.Fatalf("live heap grew by %d MiB", grew>>20)
	}
}

// TestIDBucket has a child draw IDs as fast as it can, never using them,
// under a bound on unused IDs too large to stop it: the token bucket does,
// and says when to try again.
func TestIDBucket(t *testing.T) {
	o := testtree.Options{Quota: router.Quota{MaxUnusedIDs: 1 << 30, IDBurst: 4096, IDRate: 0.001}}
	root := testtree.Root(t, o)
	evil := root.Spawn(t, o, "evil")
	body, _ := wire.Marshal(wire.AllocateIDRequest{Count: 1000})
	var err error
	n := 0
	for ; n < 100 && err == nil; n++ {
		_, err = evil.R.Request(ctxPatience(t), root.ID(), wire.HandleAllocateID, body)
	}
	if err == nil || !strings.Contains(err.Error(), "try again in") {
		t.Fatalf("ID bucket never ran dry: %v", err)
	}
	if u := evil.Up.Usage(); u.Granted != 4000 {
		t.Fatalf("granted %d IDs, want 4000 (a burst of 4096 in blocks of 1000)", u.Granted)
	}
}

// TestForgedUpdatesToClients has a leaf send route updates and calls to a
// client that acts with the root's authority: the root forwards none of
// them, and the client's table and its calls to the leaf's sibling are
// untouched. A reply to the client's own request still reaches it.
func TestForgedUpdatesToClients(t *testing.T) {
	logs, logger := testtree.NewLogCapture()
	_ = logs
	o := testtree.Options{Logger: logger}
	root := testtree.Root(t, o)
	evil := root.Spawn(t, o, "evil")
	sibling := root.Spawn(t, o, "sibling")
	client := testtree.Client(t, root, o, "client")
	siblingEcho := nameEcho(sibling)

	for _, handle := range []uint32{wire.HandleDelRoute, wire.HandleAddRoute, wire.HandleCall, wire.HandleShutdown} {
		body, _ := wire.Marshal(wire.DelRoute{ID: sibling.ID(), Cause: "forged"})
		_, err := evil.R.Request(ctxPatience(t), client.ID(), handle, body)
		var de *router.DeadError
		if !errors.As(err, &de) || de.Node != root.ID() || !strings.Contains(de.Reason, "may not send") {
			t.Fatalf("%s to the client: %v, want a dead reply from the root", wire.HandleName(handle), err)
		}
	}
	// The client still reaches the sibling, and a reply from the leaf to
	// the client's own request passes.
	if r, err := client.R.Request(ctxPatience(t), sibling.ID(), siblingEcho, nil); err != nil || string(r.Payload) != "sibling" {
		t.Fatalf("client → sibling after the forgeries: %v", err)
	}
	if r, err := client.R.Request(ctxPatience(t), evil.ID(), nameEcho(evil), nil); err != nil || string(r.Payload) != "evil" {
		t.Fatalf("client → evil: %v", err)
	}
}

func ctxPatience(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	t.Cleanup(cancel)
	return ctx
}

// TestAttachWithoutRouteFails attaches a child whose route cannot be
// installed (its name would forge a log line): the attach fails, the link
// is closed, and nothing of it stays in the table or the child list.
func TestAttachWithoutRouteFails(t *testing.T) {
	o := testtree.Options{}
	root := testtree.Root(t, o)
	n, err := root.SpawnErr(o, "bad\n[ERROR] forged")
	if err == nil {
		n.R.Close()
		t.Fatal("a child whose route could not be installed was attached")
	}
	if !strings.Contains(err.Error(), "control character") {
		t.Fatalf("attach failed with %v, want the name's error", err)
	}
	if got := root.R.Children(); len(got) != 0 {
		t.Fatalf("root keeps child links %v", got)
	}
	if tb := root.R.Table(); len(tb.Routes) != 0 {
		t.Fatalf("root routes %+v", tb.Routes)
	}
}

// TestForgedDeadReplies has a leaf fail requests that do not go through it:
// the root's own request to its sibling, and a client's. The forgeries are
// dropped; each request gets its real answer afterwards.
func TestForgedDeadReplies(t *testing.T) {
	o := testtree.Options{}
	root := testtree.Root(t, o)
	evil := root.Spawn(t, o, "evil")
	sibling := root.Spawn(t, o, "sibling")
	client := testtree.Client(t, root, o, "client")
	release := make(chan struct{})
	held := make(chan *router.Message, 2)
	slow := sibling.R.AddHandler(func(m *router.Message) { held <- m }, router.Anyone)

	for _, asker := range []*testtree.Node{root, client} {
		pending, err := asker.R.Begin(sibling.ID(), slow, nil)
		if err != nil {
			t.Fatal(err)
		}
		m := <-held
		forged := wire.Header{Dst: asker.ID(), Src: evil.ID(), Auth: evil.ID(), Handle: pending.ReplyHandle(), Flags: wire.FlagDead}
		body := wire.EncodeDeadReason("permission denied by node 3 (honest)")
		forged.Length = uint32(len(body))
		if err := evil.Down.Link.Send(forged, body); err != nil {
			t.Fatal(err)
		}
		barrier(t, evil, root, echo(root)) // the forgery was handled at the root
		if asker == client {
			barrier(t, root, client, echo(client))
		}
		if err := sibling.R.Reply(m, []byte("real")); err != nil {
			t.Fatal(err)
		}
		reply, err := pending.Wait(ctxPatience(t))
		if err != nil || string(reply.Payload) != "real" {
			t.Fatalf("%s's request to the sibling: %v, %v; want the sibling's real answer", asker.R.Name(), reply, err)
		}
	}
	close(release)
}

// TestNameOutsideParent has a leaf name a node of its own block as if it
// were a node the operator spawns elsewhere: the link is closed.
func TestNameOutsideParent(t *testing.T) {
	o := testtree.Options{}
	root := testtree.Root(t, o)
	evil := root.Spawn(t, o, "evil")
	id, err := evil.R.AllocateID(ctxPatience(t))
	if err != nil {
		t.Fatal(err)
	}
	inject(t, evil.Down, hostileUp(evil, wire.HandleAddRoute), wire.AddRoute{ID: id, Name: "ssh:db3", Parent: evil.ID()})
	root.WaitNoRoute(t, evil.ID())
	if _, _, ok := root.R.Lookup(id); ok {
		t.Fatal("the root routes the node named outside its parent")
	}
}

// TestHonestWideAndChurningTrees: the ID quotas refuse none of a wide
// tree (300 children under one node, each with a child of its own), a
// node's children spawned and closed over and over, or many nodes asking
// for IDs through one link at once.
func TestHonestWideAndChurningTrees(t *testing.T) {
	o := testtree.Options{}
	root := testtree.Root(t, o)
	bastion := root.Spawn(t, o, "bastion")
	for i := range 300 {
		c := bastion.Spawn(t, o, fmt.Sprintf("c%d", i))
		c.Spawn(t, o, "sudo")
	}
	for i := range 300 {
		c := bastion.Spawn(t, o, fmt.Sprintf("churn%d", i))
		g := c.Spawn(t, o, "sudo")
		g.R.Close()
		c.R.Close()
		root.WaitNoRoute(t, c.ID())
	}
	mid := bastion.Spawn(t, o, "mid")
	var kids []*testtree.Node
	for i := range 8 {
		kids = append(kids, mid.Spawn(t, o, fmt.Sprintf("k%d", i)))
	}
	errs := make(chan error, len(kids))
	for _, k := range kids {
		go func() {
			_, err := k.R.AllocateID(ctxPatience(t))
			errs <- err
		}()
	}
	for range kids {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent allocation: %v", err)
		}
	}
	t.Logf("root's link to the bastion: %+v", bastion.Up.Usage())
}
