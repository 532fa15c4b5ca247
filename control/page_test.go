package control_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/builtin"
	"github.com/arbor-project/arbor/control"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/internal/testtree"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
)

// long pads s to the longest string a node's name, method or host may be.
func long(s string) string { return s + strings.Repeat("x", wire.MaxHopNameLen-len(s)) }

// answerSize is the size of the CALL reply that carries v.
func answerSize(t *testing.T, v any) int {
	t.Helper()
	res, err := wire.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	body, err := wire.Marshal(wire.CallReply{Result: res})
	if err != nil {
		t.Fatal(err)
	}
	return len(body)
}

// attachHub attaches an in-process agent to root as its child.
func attachHub(t *testing.T, root *agent.Node) *agent.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	id, err := root.Router.AllocateID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pc, cc, err := testtree.OSPipe()
	if err != nil {
		t.Fatal(err)
	}
	type attached struct {
		n   *agent.Node
		err error
	}
	ch := make(chan attached, 1)
	go func() {
		n, err := agent.Attach(cc, agent.Options{Logger: hclog.NewNullLogger()}, patience)
		ch <- attached{n, err}
	}()
	pl, _, err := stream.Open(pc, root.ChildHello(id, "hub"), nil)
	a := <-ch
	if err != nil || a.err != nil {
		t.Fatalf("attaching the hub: open: %v, attach: %v", err, a.err)
	}
	t.Cleanup(func() { a.n.Close() })
	if _, err := root.Router.AttachChild(pl); err != nil {
		t.Fatal(err)
	}
	return a.n
}

// bigTree gives root n nodes below a child hub, each with a name, method
// and host of the longest length allowed: hub takes their IDs from its
// own blocks (the real path) and announces them itself, with ADD_ROUTE
// frames of its own making and spawn reports (NODE_STATE). It returns the
// IDs.
func bigTree(t *testing.T, ctx context.Context, root *agent.Node, n int) (hub *agent.Node, ids []uint32) {
	t.Helper()
	hub = attachHub(t, root)
	added := make(chan struct{}, n+1)
	unsub := root.Tree.Subscribe(func(e agent.TreeEvent) {
		if e.Kind == "add_route" {
			added <- struct{}{}
		}
	})
	defer unsub()
	if _, err := hub.Router.Request(ctx, wire.RootID, wire.HandlePing, nil); err != nil {
		t.Fatal(err)
	}
	up := hub.Router.Parent()
	for i := 0; i < n; i++ {
		id, err := hub.Router.AllocateID(ctx)
		if err != nil {
			t.Fatal(err)
		}
		body, err := wire.Marshal(wire.AddRoute{ID: id, Name: long(fmt.Sprintf("hub/n%d-", id)), Parent: hub.Router.ID()})
		if err != nil {
			t.Fatal(err)
		}
		h := wire.Header{Dst: wire.RootID, Src: hub.Router.ID(), Auth: hub.Router.ID(), Handle: wire.HandleAddRoute}
		if err := up.Link.Send(h, body); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for seen := 0; seen < n; {
		select {
		case <-added:
			seen++
		case <-ctx.Done():
			t.Fatalf("%d of %d nodes reached the tree", seen, n)
		}
	}
	for _, id := range ids {
		body, err := wire.Marshal(wire.NodeState{ID: id, Parent: hub.Router.ID(), State: agent.StateUp, Spawned: true,
			Label: long("l"), Method: long("m"), Target: long("t"), Host: long("h"), PID: 1 << 30})
		if err != nil {
			t.Fatal(err)
		}
		if err := hub.Router.SendContext(ctx, wire.Header{Dst: wire.RootID, Handle: wire.HandleNodeState}, body); err != nil {
			t.Fatal(err)
		}
	}
	// A round trip on the same link: the reports were handled before it.
	if _, err := hub.Router.Request(ctx, wire.RootID, wire.HandlePing, nil); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if m, ok := root.Tree.Node(id); !ok || m.Method != long("m") || m.Host != long("h") {
			t.Fatalf("node %d in the root's tree: %+v, %v; want the hub's report", id, m, ok)
		}
	}
	return hub, ids
}

// TestTreeAndRoutesPages: a tree of 352 nodes with the longest names,
// methods and hosts is four times a 64 KiB message. serve.tree and
// serve.routes answer it in pages that each fit (cut by size, well below
// their count); ReadTree and ReadRoutes get every node and route once, in
// ID order, each node's parent before it, the control-socket client left
// out; asking for the whole tree at once is refused with a reason instead
// of failing to send.
func TestTreeAndRoutesPages(t *testing.T) {
	const maxMessage = 64 << 10
	const n = 350
	path, root, _ := serveWith(t, control.Config{}, agent.Options{MaxMessage: maxMessage})
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	hub, ids := bigTree(t, ctx, root, n)
	client, err := dial(t, ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	rm := client.Remote(wire.RootID, "root")
	defer rm.Release()

	es, err := control.ReadTree(ctx, rm)
	if err != nil {
		t.Fatal(err)
	}
	if n := answerSize(t, es); n < 4*maxMessage {
		t.Fatalf("the whole tree is %d bytes: not larger than a few messages of %d", n, maxMessage)
	}
	want := append([]uint32{wire.RootID, hub.Router.ID()}, ids...)
	got := make([]uint32, len(es))
	seen := map[uint32]bool{}
	for i, e := range es {
		got[i] = e.ID
		switch {
		case i == 0 && e.Parent != nil:
			t.Fatalf("first entry %+v is not the root", e)
		case i > 0 && (e.Parent == nil || !seen[*e.Parent]):
			t.Fatalf("entry %d (node %d) comes before its parent %v", i, e.ID, e.Parent)
		case i > 1 && (*e.Parent != hub.Router.ID() || e.Method != long("m") || e.Host != long("h") || e.Name != long(fmt.Sprintf("hub/n%d-", e.ID))):
			t.Fatalf("entry %d: %+v; want a node below the hub as the hub reported it", i, e)
		}
		seen[e.ID] = true
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ReadTree: IDs %v; want %v", got, want)
	}

	pages := 0
	for a := (builtin.PageArgs{Limit: builtin.MaxPageLimit}); ; pages++ {
		var page []control.NodeEntry
		if err := rm.Call(ctx, "serve.tree", a, &page); err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		if n := answerSize(t, page); n > maxMessage || len(page) >= builtin.MaxPageLimit {
			t.Fatalf("serve.tree page from %d: %d entries, %d bytes; want fewer than %d entries in at most %d bytes",
				a.From, len(page), n, builtin.MaxPageLimit, maxMessage)
		}
		a.From = page[len(page)-1].ID + 1
	}
	if pages < 4 {
		t.Fatalf("%d serve.tree pages for a tree of four messages", pages)
	}
	var whole []control.NodeEntry
	err = rm.Call(ctx, "serve.tree", nil, &whole)
	var re *funcs.RemoteError
	if !errors.As(err, &re) || !strings.Contains(re.Message, "in pages") {
		t.Fatalf("whole tree in one answer: %v, want a refusal saying to ask in pages", err)
	}

	tb, err := builtin.ReadRoutes(ctx, rm, "serve.routes")
	if err != nil {
		t.Fatal(err)
	}
	routed := make([]uint32, len(tb.Routes))
	for i, r := range tb.Routes {
		routed[i] = r.ID
		if r.Via != hub.Router.ID() {
			t.Fatalf("route %+v not via the hub", r)
		}
	}
	if tb.ID != wire.RootID || tb.Parent != nil || !reflect.DeepEqual(routed, want[1:]) {
		t.Fatalf("serve.routes: node %d parent %v routes %v; want the root's routes %v (not the client %d)",
			tb.ID, tb.Parent, routed, want[1:], client.Router.ID())
	}
	for a := (builtin.PageArgs{Limit: builtin.MaxPageLimit}); ; {
		var page router.Table
		if err := rm.Call(ctx, "serve.routes", a, &page); err != nil {
			t.Fatal(err)
		}
		if len(page.Routes) == 0 {
			break
		}
		if n := answerSize(t, page); n > maxMessage {
			t.Fatalf("serve.routes page from %d: %d bytes, max %d", a.From, n, maxMessage)
		}
		a.From = page.Routes[len(page.Routes)-1].ID + 1
	}
}
