package router_test

import (
	"os"
	"testing"

	"github.com/arbor-project/arbor/internal/testtree"
	"github.com/arbor-project/arbor/routemonitor"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
)

// attachClient attaches a new node below root with AttachChildWithAuthority,
// as arbor serve attaches a CLI client, and returns the client's router.
func attachClient(t *testing.T, root *testtree.Node) (*router.Router, *router.Port) {
	t.Helper()
	id, err := root.R.AllocateID(ctxPatience(t))
	if err != nil {
		t.Fatal(err)
	}
	pc, cc, err := testtree.UnixPair()
	if err != nil {
		t.Fatal(err)
	}
	type accepted struct {
		l   *stream.Link
		h   wire.Hello
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		l, h, err := stream.Accept(cc, nil, os.Getpid())
		ch <- accepted{l, h, err}
	}()
	hello := wire.Hello{ID: id, Name: "client", ParentID: root.ID(), Ancestors: []uint32{root.ID()}, MaxMessage: root.R.MaxMessage()}
	cfg := stream.DefaultConfig()
	cfg.Logger = hclog.NewNullLogger()
	pl, _, err := stream.Open(pc, hello, cfg)
	acc := <-ch
	if err != nil || acc.err != nil {
		t.Fatalf("client link: open %v, accept %v", err, acc.err)
	}
	rc := router.FromHello(acc.h)
	rc.Logger = hclog.NewNullLogger()
	cr, err := router.New(rc)
	if err != nil {
		t.Fatal(err)
	}
	routemonitor.New(cr)
	if _, err := cr.AttachParent(acc.l); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cr.Close() })
	port, err := root.R.AttachChildWithAuthority(pl)
	if err != nil {
		t.Fatal(err)
	}
	root.WaitRoute(t, id)
	return cr, port
}

// TestAttachChildWithAuthority: frames from a client attached with the
// root's authority reach handlers that admit only ancestors, carrying the
// root as their authority and the client as their source; replies come
// back across the root (child link to child link); a client claiming
// another node's ID is still dropped by the reverse-path check; a plain
// child gets none of this.
func TestAttachChildWithAuthority(t *testing.T) {
	o := testtree.Options{}
	root := testtree.Root(t, o)
	a := root.Spawn(t, o, "a")
	b := a.Spawn(t, o, "b")
	plain := root.Spawn(t, o, "plain")
	root.WaitRoute(t, b.ID())
	client, port := attachClient(t, root)
	if !port.HasAuthority() {
		t.Fatal("client port has no authority")
	}

	got := make(chan *router.Message, 4)
	h := b.R.AddHandler(func(m *router.Message) {
		got <- m
		_ = b.R.Reply(m, []byte{0x40})
	}, router.AncestorsOnly(b.R))
	rep, err := client.Request(ctxPatience(t), b.ID(), h, []byte{0x40})
	if err != nil {
		t.Fatalf("client → b (ancestors only): %v", err)
	}
	m := <-got
	if m.Auth != root.ID() || m.Src != client.ID() {
		t.Errorf("b saw auth %d src %d, want auth %d (the root's) and src %d", m.Auth, m.Src, root.ID(), client.ID())
	}
	if rep.Src != b.ID() {
		t.Errorf("reply from %d, want %d", rep.Src, b.ID())
	}

	// The same call from a plain sibling of the client is refused.
	if _, err := plain.R.Request(ctxPatience(t), b.ID(), h, []byte{0x40}); err == nil {
		t.Error("plain child → b: delivered, want refused")
	}

	// A client frame claiming to come from a is dropped. A request sent
	// after it on the same link is the barrier: once its reply is back,
	// the root has judged the spoofed frame.
	before := root.R.SpoofedDropped()
	if err := client.Parent().Link.Send(wire.Header{Dst: b.ID(), Src: a.ID(), Auth: a.ID(), Handle: h}, []byte{0x40}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Request(ctxPatience(t), b.ID(), h, []byte{0x40}); err != nil {
		t.Fatalf("barrier: %v", err)
	}
	<-got // the barrier's own message
	if root.R.SpoofedDropped() != before+1 {
		t.Fatalf("spoofed frames dropped: %d, want %d", root.R.SpoofedDropped(), before+1)
	}
	select {
	case m := <-got:
		t.Fatalf("spoofed frame delivered: %s", m.Header)
	default:
	}
}
