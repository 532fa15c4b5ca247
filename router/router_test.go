package router_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arbor-project/arbor/internal/testtree"
	"github.com/arbor-project/arbor/routemonitor"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
)

// patience is how long a test waits for something before failing instead
// of hanging. It is a deadline, never a measurement.
const patience = time.Minute

func ctxPatience(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	t.Cleanup(cancel)
	return ctx
}

// sink is a handler that admits anyone and never replies; every message it
// receives is passed to its channel.
type sink struct {
	handle uint32
	ch     chan *router.Message
}

func newSink(n *testtree.Node) *sink {
	s := &sink{ch: make(chan *router.Message, 64)}
	s.handle = n.R.AddHandler(func(m *router.Message) { s.ch <- m }, router.Anyone)
	return s
}

// next waits for the next message the sink receives.
func (s *sink) next(t *testing.T) *router.Message {
	t.Helper()
	select {
	case m := <-s.ch:
		return m
	case <-time.After(patience):
		t.Fatalf("handle %d: nothing arrived", s.handle)
		return nil
	}
}

// empty fails if the sink has received anything not yet read.
func (s *sink) empty(t *testing.T, what string) {
	t.Helper()
	select {
	case m := <-s.ch:
		t.Fatalf("%s: handle %d received %s", what, s.handle, m.Header)
	default:
	}
}

// echo is a handler that answers every message with its own payload,
// admitting anyone; it counts the messages it answered.
type echo struct {
	handle uint32
	mu     sync.Mutex
	got    []wire.Header
}

func newEcho(n *testtree.Node) *echo {
	e := &echo{}
	e.handle = n.R.AddHandler(func(m *router.Message) {
		e.mu.Lock()
		e.got = append(e.got, m.Header)
		e.mu.Unlock()
		_ = n.R.Reply(m, m.Payload)
	}, router.Anyone)
	return e
}

func (e *echo) calls() []wire.Header {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]wire.Header(nil), e.got...)
}

// barrier makes a round trip from one node to an echo handle on another.
// Frames on one link are handled in order, each before the next is read,
// so when the reply is back every frame sent earlier along that path has
// been handled at every hop.
func barrier(t *testing.T, from, to *testtree.Node, e *echo) {
	t.Helper()
	if _, err := from.R.Request(ctxPatience(t), to.ID(), e.handle, []byte{0x40}); err != nil {
		t.Fatalf("barrier %d → %d: %v", from.ID(), to.ID(), err)
	}
}

func link(n *testtree.Node, name string) string {
	return fmt.Sprintf("link to node %d (%s)", n.ID(), name)
}

// deadWith checks that err is exactly the dead reply want.
func deadWith(t *testing.T, what string, err error, want router.DeadError) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: delivered, want dead reply %q from node %d", what, want.Reason, want.Node)
	}
	if !errors.Is(err, router.ErrDead) {
		t.Fatalf("%s: failed with %v, want a dead reply", what, err)
	}
	var de *router.DeadError
	if !errors.As(err, &de) {
		t.Fatalf("%s: error %T is not a *router.DeadError", what, err)
	}
	if *de != want {
		t.Fatalf("%s: got dead reply %+v, want %+v", what, *de, want)
	}
	if text := fmt.Sprintf("arbor: message not delivered (node %d): %s", want.Node, want.Reason); err.Error() != text {
		t.Fatalf("%s: error text %q, want %q", what, err.Error(), text)
	}
}

// tooLarge checks that err is exactly the sender-side refusal of a payload
// of size bytes over a limit of max.
func tooLarge(t *testing.T, what string, err error, size int, max uint32) {
	t.Helper()
	var tl *wire.TooLargeError
	if !errors.As(err, &tl) || !errors.Is(err, wire.ErrTooLarge) {
		t.Fatalf("%s: got %v, want a *wire.TooLargeError", what, err)
	}
	if *tl != (wire.TooLargeError{Size: uint64(size), Max: max}) {
		t.Fatalf("%s: got %+v, want size %d max %d", what, *tl, size, max)
	}
	if want := fmt.Sprintf("message too large (max %d bytes)", max); tl.Reason() != want {
		t.Fatalf("%s: reason %q, want %q", what, tl.Reason(), want)
	}
	if want := fmt.Sprintf("arbor: message too large (max %d bytes): %d bytes", max, size); err.Error() != want {
		t.Fatalf("%s: error text %q, want %q", what, err.Error(), want)
	}
}

// TestSpoofedFramesDropped injects frames straight onto links of
//
//	root ─┬─ a ─┬─ b
//	      │     └─ b2
//	      └─ x
//
// whose auth or src is not routed through the link they arrive on. Each is
// dropped before delivery or forwarding: the handler is never called, no
// dead reply is sent, the node's SpoofedDropped counter goes up by one, and
// one error record names the claimed ID, both IDs of the header, the link
// it came in on and the link it should have come in on. The same frames
// with honest headers are delivered, so the injection path itself works.
func TestSpoofedFramesDropped(t *testing.T) {
	for _, tr := range testtree.Transports {
		t.Run(tr.Name, func(t *testing.T) {
			logs, logger := testtree.NewLogCapture()
			o := testtree.Options{Transport: tr, Logger: logger}
			root := testtree.Root(t, o)
			a := root.Spawn(t, o, "a")
			x := root.Spawn(t, o, "x")
			b := a.Spawn(t, o, "b")
			b2 := a.Spawn(t, o, "b2")
			root.WaitRoute(t, b.ID())
			root.WaitRoute(t, b2.ID())

			atA, atRoot := newSink(a), newSink(root)
			aEcho, rootEcho := newEcho(a), newEcho(root)
			// Where a dead reply for each source would land, were one sent.
			replies := map[uint32]*sink{b.ID(): newSink(b), b2.ID(): newSink(b2), root.ID(): newSink(root), a.ID(): newSink(a)}

			send := func(t *testing.T, p *router.Port, h wire.Header) {
				t.Helper()
				if s, ok := replies[h.Src]; ok {
					h.ReplyTo = s.handle
				}
				if err := p.Link.Send(h, []byte{0x63, 'a', 'b', 'c'}); err != nil {
					t.Fatal(err)
				}
			}

			t.Run("honest frames are delivered", func(t *testing.T) {
				send(t, b.Down, wire.Header{Dst: a.ID(), Src: b.ID(), Auth: b.ID(), Handle: atA.handle})
				if m := atA.next(t); m.Src != b.ID() || m.Auth != b.ID() || m.Port != b.Up {
					t.Fatalf("a got %s on %v", m.Header, m.Port)
				}
				send(t, a.Up, wire.Header{Dst: a.ID(), Src: root.ID(), Auth: root.ID(), Handle: atA.handle})
				if m := atA.next(t); m.Src != root.ID() || m.Port != a.Down {
					t.Fatalf("a got %s on %v", m.Header, m.Port)
				}
				send(t, b.Down, wire.Header{Dst: root.ID(), Src: b.ID(), Auth: b.ID(), Handle: atRoot.handle})
				if m := atRoot.next(t); m.Src != b.ID() || m.Port != a.Up {
					t.Fatalf("root got %s on %v", m.Header, m.Port)
				}
			})

			cases := []struct {
				name    string
				on      *router.Port     // the link the frame is put on (sending end)
				hdr     wire.Header      // what it claims
				at      *testtree.Node   // the node that must drop it
				handler *sink            // the handler it is addressed to
				field   string           // which check fails
				claimed uint32           // the ID that is not routed via the link
				arrived string           // the link it arrives on, as the dropping node names it
				expect  string           // the link the claimed ID is routed via
				from    *testtree.Node   // barrier: a round trip from here...
				to      *testtree.Node   // ...to here passes the dropping node after the frame
				echo    *echo            // ...on this handle
				others  []*testtree.Node // nodes whose counters must not move
			}{
				{
					name: "auth claims the root", on: b.Down,
					hdr: wire.Header{Dst: a.ID(), Src: b.ID(), Auth: root.ID(), Handle: atA.handle},
					at:  a, handler: atA, field: "auth", claimed: root.ID(),
					arrived: link(b, "a/b"), expect: "parent link (node 0)",
					from: b, to: a, echo: aEcho,
				},
				{
					name: "auth claims a sibling", on: b.Down,
					hdr: wire.Header{Dst: a.ID(), Src: b.ID(), Auth: b2.ID(), Handle: atA.handle},
					at:  a, handler: atA, field: "auth", claimed: b2.ID(),
					arrived: link(b, "a/b"), expect: link(b2, "a/b2"),
					from: b, to: a, echo: aEcho,
				},
				{
					name: "auth claims an unknown node", on: b.Down,
					hdr: wire.Header{Dst: a.ID(), Src: b.ID(), Auth: 4242, Handle: atA.handle},
					at:  a, handler: atA, field: "auth", claimed: 4242,
					arrived: link(b, "a/b"), expect: "parent link (node 0)",
					from: b, to: a, echo: aEcho,
				},
				{
					name: "src claims a sibling", on: b.Down,
					hdr: wire.Header{Dst: a.ID(), Src: b2.ID(), Auth: b.ID(), Handle: atA.handle},
					at:  a, handler: atA, field: "src", claimed: b2.ID(),
					arrived: link(b, "a/b"), expect: link(b2, "a/b2"),
					from: b, to: a, echo: aEcho,
				},
				{
					name: "src claims the root", on: b.Down,
					hdr: wire.Header{Dst: a.ID(), Src: root.ID(), Auth: b.ID(), Handle: atA.handle},
					at:  a, handler: atA, field: "src", claimed: root.ID(),
					arrived: link(b, "a/b"), expect: "parent link (node 0)",
					from: b, to: a, echo: aEcho,
				},
				{
					name: "auth claims a sibling, in transit to the root", on: b.Down,
					hdr: wire.Header{Dst: root.ID(), Src: b.ID(), Auth: b2.ID(), Handle: atRoot.handle},
					at:  a, handler: atRoot, field: "auth", claimed: b2.ID(),
					arrived: link(b, "a/b"), expect: link(b2, "a/b2"),
					from: b, to: root, echo: rootEcho, others: []*testtree.Node{root},
				},
				{
					name: "auth claims another branch, at the root", on: a.Down,
					hdr: wire.Header{Dst: root.ID(), Src: a.ID(), Auth: x.ID(), Handle: atRoot.handle},
					at:  root, handler: atRoot, field: "auth", claimed: x.ID(),
					arrived: link(a, "a"), expect: link(x, "x"),
					from: a, to: root, echo: rootEcho, others: []*testtree.Node{a},
				},
				{
					name: "from the parent, auth claims a child", on: a.Up,
					hdr: wire.Header{Dst: a.ID(), Src: b.ID(), Auth: b.ID(), Handle: atA.handle},
					at:  a, handler: atA, field: "auth", claimed: b.ID(),
					arrived: "parent link (node 0)", expect: link(b, "a/b"),
					from: root, to: a, echo: aEcho, others: []*testtree.Node{root},
				},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					before := tc.at.R.SpoofedDropped()
					othersBefore := make([]uint64, len(tc.others))
					for i, n := range tc.others {
						othersBefore[i] = n.R.SpoofedDropped()
					}
					send(t, tc.on, tc.hdr)
					barrier(t, tc.from, tc.to, tc.echo)
					tc.handler.empty(t, "spoofed frame")
					if got := tc.at.R.SpoofedDropped() - before; got != 1 {
						t.Errorf("node %d: SpoofedDropped went up by %d, want 1", tc.at.ID(), got)
					}
					for i, n := range tc.others {
						if got := n.R.SpoofedDropped() - othersBefore[i]; got != 0 {
							t.Errorf("node %d: SpoofedDropped went up by %d, want 0", n.ID(), got)
						}
					}
					recs := logs.Find(t, "dropped spoofed frame: reverse-path check failed", map[string]any{
						"@level": "error", "node": tc.at.ID(),
						"field": tc.field, "claimed": tc.claimed,
						"auth": tc.hdr.Auth, "src": tc.hdr.Src, "dst": tc.hdr.Dst, "handle": tc.hdr.Handle,
						"arrived_on": tc.arrived, "expected": tc.expect,
					})
					if len(recs) != 1 {
						t.Errorf("want one log record of the drop, got %d: %v", len(recs), recs)
					}
				})
			}

			// No spoofed frame produced a dead reply: round trips over every
			// link a dead reply would have taken come back first.
			barrier(t, a, b, newEcho(b))
			barrier(t, a, b2, newEcho(b2))
			barrier(t, a, root, rootEcho)
			for id, s := range replies {
				s.empty(t, fmt.Sprintf("dead reply to node %d", id))
			}
			if got, want := a.R.SpoofedDropped()+root.R.SpoofedDropped(), uint64(len(cases)); got != want {
				t.Errorf("%d frames dropped in all, want %d", got, want)
			}
		})
	}
}

// TestDeadReplies checks every dead reply a caller can get, in
//
//	root ── a ── b ── c
//
// with the exact reason and the node that gave up on the message.
func TestDeadReplies(t *testing.T) {
	for _, tr := range testtree.Transports {
		t.Run(tr.Name, func(t *testing.T) {
			o := testtree.Options{Transport: tr}
			root := testtree.Root(t, o)
			a := root.Spawn(t, o, "a")
			b := a.Spawn(t, o, "b")
			c := b.Spawn(t, o, "c")
			root.WaitRoute(t, c.ID())
			// An ID allocated through a, b and c but never routed: a
			// stale route to it is one the tree could really have had.
			ghost, err := c.R.AllocateID(ctxPatience(t))
			if err != nil {
				t.Fatal(err)
			}

			t.Run("no route, from the parent: answered, not bounced", func(t *testing.T) {
				// A stale route at the root and at a sends the request down
				// to b, which does not know the ID. b must answer it, not send
				// it back up its default route: bounced, it would reach a on
				// the link from b carrying the root's authority, and a would
				// drop it as spoofed, leaving the caller without an answer.
				spoofedBefore := a.R.SpoofedDropped()
				if err := root.R.AddChildRoute(ghost, b.ID(), "ghost", a.Up); err != nil {
					t.Fatal(err)
				}
				if err := a.R.AddChildRoute(ghost, b.ID(), "ghost", b.Up); err != nil {
					t.Fatal(err)
				}
				defer root.R.DelRoute(ghost)
				defer a.R.DelRoute(ghost)
				_, err := root.R.Request(ctxPatience(t), ghost, wire.HandlePing, nil)
				deadWith(t, "root → ghost", err, router.DeadError{
					Node: b.ID(), Reason: fmt.Sprintf("no route to %d, my ID is %d", ghost, b.ID())})
				if n := root.R.PendingCount(); n != 0 {
					t.Errorf("root: %d requests still pending", n)
				}
				// The dead reply came up the b → a link after anything b could
				// have bounced, so a has seen all b sent.
				if n := a.R.SpoofedDropped() - spoofedBefore; n != 0 {
					t.Errorf("a dropped %d frames from b: the message was bounced", n)
				}
			})
			t.Run("no route at the root", func(t *testing.T) {
				_, err := root.R.Request(ctxPatience(t), ghost, wire.HandlePing, nil)
				deadWith(t, "root → ghost", err, router.DeadError{Node: 0, Reason: fmt.Sprintf("no route to %d, my ID is 0", ghost)})
			})
			t.Run("no route anywhere, from below", func(t *testing.T) {
				// Up the default route to the root, which has nowhere to send it.
				_, err := c.R.Request(ctxPatience(t), ghost, wire.HandlePing, nil)
				deadWith(t, "c → ghost", err, router.DeadError{Node: 0, Reason: fmt.Sprintf("no route to %d, my ID is 0", ghost)})
			})
			t.Run("invalid handle", func(t *testing.T) {
				_, err := root.R.Request(ctxPatience(t), c.ID(), 555, nil)
				deadWith(t, "well-known handle nobody registered", err, router.DeadError{Node: c.ID(), Reason: "invalid handle"})
				_, err = root.R.Request(ctxPatience(t), c.ID(), 999999, nil)
				deadWith(t, "dynamic handle never allocated", err, router.DeadError{Node: c.ID(), Reason: "invalid handle"})
				e := newEcho(c)
				c.R.RemoveHandler(e.handle)
				_, err = b.R.Request(ctxPatience(t), c.ID(), e.handle, nil)
				deadWith(t, "removed handle", err, router.DeadError{Node: c.ID(), Reason: "invalid handle"})
				if got := e.calls(); len(got) != 0 {
					t.Errorf("removed handler was called: %v", got)
				}
			})
			t.Run("refused by policy", func(t *testing.T) {
				// The default policy admits only the node itself and its
				// ancestors: c, below b, is refused; a and the root are not.
				var mu sync.Mutex
				var auths []uint32
				h := b.R.AddHandler(func(m *router.Message) {
					mu.Lock()
					auths = append(auths, m.Auth)
					mu.Unlock()
					_ = b.R.Reply(m, nil)
				}, nil)
				_, err := c.R.Request(ctxPatience(t), b.ID(), h, nil)
				deadWith(t, "c → b (descendant)", err, router.DeadError{Node: b.ID(), Reason: "refused by policy"})
				for _, n := range []*testtree.Node{root, a, b} {
					if _, err := n.R.Request(ctxPatience(t), b.ID(), h, nil); err != nil {
						t.Fatalf("node %d → b: %v", n.ID(), err)
					}
				}
				mu.Lock()
				got := append([]uint32(nil), auths...)
				mu.Unlock()
				if want := []uint32{root.ID(), a.ID(), b.ID()}; !reflect.DeepEqual(got, want) {
					t.Errorf("handler ran with authorities %v, want %v", got, want)
				}
				// A policy of the handler's own.
				never := c.R.AddHandler(func(m *router.Message) { t.Errorf("refused handler ran: %s", m.Header) },
					func(*router.Message) bool { return false })
				_, err = root.R.Request(ctxPatience(t), c.ID(), never, nil)
				deadWith(t, "root → c (refusing policy)", err, router.DeadError{Node: c.ID(), Reason: "refused by policy"})
			})
		})
	}
}

// spawnLimited attaches a child to parent, like testtree's Spawn, but over
// a link whose limit is max, smaller than the rest of the tree's.
func spawnLimited(t *testing.T, tr testtree.Transport, parent *testtree.Node, name string, max uint32) *testtree.Node {
	t.Helper()
	id, err := parent.R.AllocateID(ctxPatience(t))
	if err != nil {
		t.Fatal(err)
	}
	pc, cc, err := tr.Pair()
	if err != nil {
		t.Fatal(err)
	}
	hello := wire.Hello{
		ID: id, Name: parent.R.Name() + "/" + name, ParentID: parent.ID(),
		Ancestors:  append([]uint32{parent.ID()}, parent.R.Ancestors()...),
		MaxMessage: max,
	}
	type accepted struct {
		l   *stream.Link
		h   wire.Hello
		err error
	}
	ch := make(chan accepted, 1)
	go func() {
		cfg := stream.DefaultConfig()
		cfg.Logger = hclog.NewNullLogger()
		l, h, err := stream.Accept(cc, cfg, 0)
		ch <- accepted{l, h, err}
	}()
	pcfg := stream.DefaultConfig()
	pcfg.MaxMessage = max
	pcfg.Logger = hclog.NewNullLogger()
	pl, _, err := stream.Open(pc, hello, pcfg)
	acc := <-ch
	if err != nil || acc.err != nil {
		if acc.l != nil {
			acc.l.Close()
		}
		if pl != nil {
			pl.Close()
		}
		t.Fatalf("open: %v, accept: %v", err, acc.err)
	}
	cfg := router.FromHello(acc.h)
	cfg.Logger = hclog.NewNullLogger()
	cr, err := router.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cr.Close() })
	child := &testtree.Node{R: cr, M: routemonitor.New(cr), Parent: parent}
	if child.Down, err = cr.AttachParent(acc.l); err != nil {
		pl.Close()
		t.Fatal(err)
	}
	if child.Up, err = parent.R.AttachChild(pl); err != nil {
		t.Fatal(err)
	}
	return child
}

// TestMessageTooLarge checks the size limit: children inherit it; a payload
// over it is refused at the sender with *wire.TooLargeError ("message too
// large (max N bytes)"), by the router and by the link alike; a payload of
// exactly the limit goes through; and a message forwarded onto a link with
// a smaller limit gets a dead reply with that text from the forwarding node.
func TestMessageTooLarge(t *testing.T) {
	const max = 4096
	for _, tr := range testtree.Transports {
		t.Run(tr.Name, func(t *testing.T) {
			o := testtree.Options{Transport: tr, MaxMessage: max}
			root := testtree.Root(t, o)
			a := root.Spawn(t, o, "a")
			b := a.Spawn(t, o, "b")
			root.WaitRoute(t, b.ID())
			bEcho, rootEcho := newEcho(b), newEcho(root)

			for _, n := range []*testtree.Node{root, a, b} {
				if got := n.R.MaxMessage(); got != max {
					t.Errorf("node %d: MaxMessage %d, want %d (inherited)", n.ID(), got, max)
				}
			}
			for _, p := range []*router.Port{a.Up, a.Down, b.Up, b.Down} {
				if got := p.Link.MaxMessage(); got != max {
					t.Errorf("%s: link MaxMessage %d, want %d", p, got, max)
				}
			}

			big := make([]byte, max+1)
			tooLarge(t, "root Send", root.R.Send(wire.Header{Dst: b.ID(), Handle: bEcho.handle}, big), max+1, max)
			_, err := root.R.Request(ctxPatience(t), b.ID(), bEcho.handle, big)
			tooLarge(t, "root Request", err, max+1, max)
			_, err = b.R.Request(ctxPatience(t), root.ID(), rootEcho.handle, big)
			tooLarge(t, "b Request", err, max+1, max)
			_, err = a.R.Begin(b.ID(), bEcho.handle, big)
			tooLarge(t, "a Begin", err, max+1, max)
			tooLarge(t, "link Send", a.Down.Link.Send(wire.Header{Dst: root.ID(), Src: a.ID(), Auth: a.ID(), Handle: rootEcho.handle}, big), max+1, max)
			for _, n := range []*testtree.Node{root, a, b} {
				if got := n.R.PendingCount(); got != 0 {
					t.Errorf("node %d: %d requests left pending by refused sends", n.ID(), got)
				}
			}
			if got := bEcho.calls(); len(got) != 0 {
				t.Errorf("b's handler ran: %v", got)
			}

			full := bytes.Repeat([]byte{0xAB}, max)
			rep, err := root.R.Request(ctxPatience(t), b.ID(), bEcho.handle, full)
			if err != nil {
				t.Fatalf("payload of exactly the limit: %v", err)
			}
			if !bytes.Equal(rep.Payload, full) {
				t.Fatalf("echoed %d bytes, want the %d sent", len(rep.Payload), len(full))
			}

			t.Run("forwarded onto a smaller link", func(t *testing.T) {
				const small = 1024
				s := spawnLimited(t, tr, a, "small", small)
				root.WaitRoute(t, s.ID())
				if s.R.MaxMessage() != small || s.Up.Link.MaxMessage() != small || s.Down.Link.MaxMessage() != small {
					t.Fatalf("small node: router %d, links %d/%d, want %d", s.R.MaxMessage(),
						s.Up.Link.MaxMessage(), s.Down.Link.MaxMessage(), small)
				}
				sEcho := newEcho(s)
				_, err := root.R.Request(ctxPatience(t), s.ID(), sEcho.handle, make([]byte, small+1))
				deadWith(t, "root → small, one byte over", err, router.DeadError{
					Node: a.ID(), Reason: fmt.Sprintf("message too large (max %d bytes)", small)})
				if got := sEcho.calls(); len(got) != 0 {
					t.Errorf("small node's handler ran: %v", got)
				}
				if _, err := root.R.Request(ctxPatience(t), s.ID(), sEcho.handle, make([]byte, small)); err != nil {
					t.Fatalf("root → small, exactly its limit: %v", err)
				}
			})
		})
	}
}

// TestSiblingRouting checks unidirectional routing in
//
//	root ─┬─ a ─┬─ b
//	      │     └─ c
//	      └─ x ── y
//
// By default a child's message to its sibling (refused by a) or its cousin
// (refused by the root) gets a dead reply naming both nodes and both links
// and never reaches the handler; with AllowSiblingRoutes both are delivered
// and answered. Traffic to and from ancestors flows either way.
func TestSiblingRouting(t *testing.T) {
	for _, tr := range testtree.Transports {
		t.Run(tr.Name, func(t *testing.T) {
			for _, allow := range []bool{false, true} {
				t.Run(fmt.Sprintf("AllowSiblingRoutes=%v", allow), func(t *testing.T) {
					o := testtree.Options{Transport: tr, AllowSiblingRoutes: allow}
					root := testtree.Root(t, o)
					a := root.Spawn(t, o, "a")
					x := root.Spawn(t, o, "x")
					b := a.Spawn(t, o, "b")
					c := a.Spawn(t, o, "c")
					y := x.Spawn(t, o, "y")
					root.WaitRoute(t, c.ID())
					root.WaitRoute(t, y.ID())
					for _, n := range []*testtree.Node{root, a, x, b, c, y} {
						if n.R.AllowSiblingRoutes() != allow {
							t.Fatalf("node %d: AllowSiblingRoutes %v, want %v (inherited)", n.ID(), n.R.AllowSiblingRoutes(), allow)
						}
					}
					cEcho, yEcho, rootEcho := newEcho(c), newEcho(y), newEcho(root)
					payload := []byte{0x62, 'h', 'i'}

					sibling, errS := b.R.Request(ctxPatience(t), c.ID(), cEcho.handle, payload)
					cousin, errC := b.R.Request(ctxPatience(t), y.ID(), yEcho.handle, payload)
					if !allow {
						deadWith(t, "b → c", errS, router.DeadError{Node: a.ID(), Reason: fmt.Sprintf(
							"routing mode prevents forwarding from node %d to node %d (between child links to %d and %d), my ID is %d",
							b.ID(), c.ID(), b.ID(), c.ID(), a.ID())})
						deadWith(t, "b → y", errC, router.DeadError{Node: root.ID(), Reason: fmt.Sprintf(
							"routing mode prevents forwarding from node %d to node %d (between child links to %d and %d), my ID is 0",
							b.ID(), y.ID(), a.ID(), x.ID())})
						if got := append(cEcho.calls(), yEcho.calls()...); len(got) != 0 {
							t.Errorf("refused messages were delivered: %v", got)
						}
						// Refused traffic is not egress: no DEL_ROUTE will follow it.
						if b.Up.TalkedTo(c.ID()) || a.Up.TalkedTo(y.ID()) {
							t.Errorf("refused traffic recorded as egress")
						}
					} else {
						for _, r := range []struct {
							what string
							rep  *router.Message
							err  error
							e    *echo
							dst  uint32
						}{{"b → c", sibling, errS, cEcho, c.ID()}, {"b → y", cousin, errC, yEcho, y.ID()}} {
							if r.err != nil {
								t.Fatalf("%s: %v", r.what, r.err)
							}
							if !bytes.Equal(r.rep.Payload, payload) || r.rep.Src != r.dst {
								t.Fatalf("%s: reply %s %q", r.what, r.rep.Header, r.rep.Payload)
							}
							got := r.e.calls()
							if len(got) != 1 || got[0].Src != b.ID() || got[0].Auth != b.ID() {
								t.Fatalf("%s: handler saw %v, want one call from %d", r.what, got, b.ID())
							}
						}
						// The forwarding nodes remember the egress, for DEL_ROUTE.
						if !b.Up.TalkedTo(c.ID()) || !a.Up.TalkedTo(y.ID()) {
							t.Errorf("forwarded traffic not recorded as egress")
						}
					}

					// Up to an ancestor and down from one: always allowed.
					if _, err := c.R.Request(ctxPatience(t), root.ID(), rootEcho.handle, payload); err != nil {
						t.Fatalf("c → root: %v", err)
					}
					if _, err := root.R.Request(ctxPatience(t), y.ID(), yEcho.handle, payload); err != nil {
						t.Fatalf("root → y: %v", err)
					}
				})
			}
		})
	}
}

// TestIDBlocks checks node ID allocation: the root numbers its own children
// from 1; every other node takes blocks from its parent (16 IDs first, twice
// as many each next time), which passes the request up to the root, so
// intermediates spawning side by side get disjoint IDs; an exhausted block
// is replaced by a fresh, larger one; an ID whose child never attached is
// handed out again; and no ID is handed out again after its node died,
// whether a leaf or an intermediate with a block of its own.
func TestIDBlocks(t *testing.T) {
	for _, tr := range testtree.Transports {
		t.Run(tr.Name, func(t *testing.T) {
			o := testtree.Options{Transport: tr}
			root := testtree.Root(t, o)
			seen := map[uint32]string{}
			spawn := func(parent *testtree.Node, name string, want uint32) *testtree.Node {
				t.Helper()
				n := parent.Spawn(t, o, name)
				if n.ID() != want {
					t.Fatalf("%s: ID %d, want %d", name, n.ID(), want)
				}
				if old, dup := seen[n.ID()]; dup {
					t.Fatalf("%s: ID %d already given to %s", name, n.ID(), old)
				}
				seen[n.ID()] = name
				return n
			}

			a := spawn(root, "a", 1)
			x := spawn(root, "x", 2)
			// Interleaved spawns under two intermediates: a's block is
			// [3, 19), x's the next one.
			b := spawn(a, "b", 3)
			y := spawn(x, "y", 19)
			spawn(a, "b2", 4)
			spawn(x, "y2", 20)
			spawn(root, "z", 35)
			root.WaitRoute(t, 20)

			// A leaf dies; its parent's next child gets a new ID.
			b.R.Close()
			a.WaitNoRoute(t, b.ID())
			root.WaitNoRoute(t, b.ID())
			b3 := spawn(a, "b3", 5)

			// An intermediate with a block dies; neither its ID nor its block
			// comes back.
			x.R.Close()
			root.WaitNoRoute(t, x.ID())
			root.WaitNoRoute(t, y.ID())
			w := spawn(root, "w", 36)
			spawn(w, "w1", 37)

			// A grandchild's block comes from the root through its parent.
			c := spawn(b3, "c", 53)
			root.WaitRoute(t, c.ID())
			if u := a.Up.Usage(); u.Granted != 16+16 || u.Routes != 4 {
				t.Errorf("root's link to a: %+v, want 32 IDs granted (a's block and b3's), 4 routes", u)
			}

			// a uses up its block; the next one is fresh and twice as large.
			var got []uint32
			for i := 0; i < 14; i++ {
				id, err := a.R.AllocateID(ctxPatience(t))
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, id)
			}
			for i, id := range got[:13] {
				if id != uint32(6+i) {
					t.Fatalf("a's ID #%d: %d, want %d", i, id, 6+i)
				}
			}
			if last := got[13]; last != 69 {
				t.Fatalf("a's first ID of its second block: %d, want 69", last)
			}
			// An ID whose child never attached comes back first.
			a.R.ReleaseID(got[13])
			if id, err := a.R.AllocateID(ctxPatience(t)); err != nil || id != got[13] {
				t.Fatalf("after ReleaseID(%d): AllocateID = %d, %v", got[13], id, err)
			}
			id, err := root.R.AllocateID(ctxPatience(t))
			if err != nil {
				t.Fatal(err)
			}
			if id != 101 {
				t.Fatalf("root's next ID %d, want 101", id)
			}
		})
	}
}

// TestRequestUnblock checks that a pending request returns when what it
// waits on goes away: its own router closing, the parent link being lost
// (a DisconnectError naming the node and the hop), and ALLOCATE_ID when the
// root stops answering. A request sent after the parent is gone fails at
// once with a dead reply from the node itself.
func TestRequestUnblock(t *testing.T) {
	for _, tr := range testtree.Transports {
		t.Run(tr.Name, func(t *testing.T) {
			t.Run("router closes", func(t *testing.T) {
				o := testtree.Options{Transport: tr}
				root := testtree.Root(t, o)
				a := root.Spawn(t, o, "a")
				held := newSink(a)
				done := make(chan error, 1)
				go func() {
					_, err := root.R.Request(context.Background(), a.ID(), held.handle, nil)
					done <- err
				}()
				held.next(t)
				root.R.Close()
				select {
				case err := <-done:
					if !errors.Is(err, router.ErrClosed) {
						t.Fatalf("got %v, want ErrClosed", err)
					}
				case <-time.After(patience):
					t.Fatal("Request did not return after Close")
				}
				if err := root.R.Send(wire.Header{Dst: a.ID(), Handle: held.handle}, nil); !errors.Is(err, router.ErrClosed) {
					t.Fatalf("Send after Close: %v, want ErrClosed", err)
				}
			})
			t.Run("parent link lost", func(t *testing.T) {
				o := testtree.Options{Transport: tr}
				root := testtree.Root(t, o)
				a := root.Spawn(t, o, "a")
				held := newSink(root)
				// The root stops answering ALLOCATE_ID: a's first allocation waits.
				allocHeld := make(chan *router.Message, 1)
				root.R.Handle(wire.HandleAllocateID, func(m *router.Message) { allocHeld <- m }, router.Descendants(root.R))
				pending, err := a.R.Begin(root.ID(), held.handle, nil)
				if err != nil {
					t.Fatal(err)
				}
				held.next(t)
				alloc := make(chan error, 1)
				go func() {
					_, err := a.R.AllocateID(context.Background())
					alloc <- err
				}()
				select {
				case <-allocHeld:
				case <-time.After(patience):
					t.Fatal("ALLOCATE_ID never reached the root")
				}

				a.Up.Link.Abort(errors.New("cut by test"))
				cause := fmt.Sprintf("parent link of node %d (to node 0) lost: EOF", a.ID())
				_, err = pending.Wait(ctxPatience(t))
				var de *router.DisconnectError
				if !errors.As(err, &de) || *de != (router.DisconnectError{ID: 0, Cause: cause}) {
					t.Fatalf("pending request: got %v, want DisconnectError for node 0: %s", err, cause)
				}
				select {
				case err := <-alloc:
					want := fmt.Sprintf("arbor: node 0 disconnected: %s (node %d allocating IDs from its parent 0)", cause, a.ID())
					if !errors.Is(err, router.ErrDisconnected) || err.Error() != want {
						t.Fatalf("AllocateID: got %v, want %q", err, want)
					}
				case <-time.After(patience):
					t.Fatal("AllocateID did not return after the parent link was lost")
				}
				// With the parent gone, a new request is answered at once by a
				// itself: "no route" once the parent port is detached, or the
				// closed link's error if it is sent in the moment before.
				_, err = a.R.Request(ctxPatience(t), root.ID(), held.handle, nil)
				var dead *router.DeadError
				if !errors.As(err, &dead) || dead.Node != a.ID() ||
					(dead.Reason != fmt.Sprintf("no route to 0, my ID is %d", a.ID()) &&
						!strings.HasPrefix(dead.Reason, "parent link (node 0): link closed")) {
					t.Fatalf("a → root after the loss: got %v, want a dead reply from node %d", err, a.ID())
				}
				if n := a.R.PendingCount(); n != 0 {
					t.Errorf("a: %d requests still pending", n)
				}
			})
		})
	}
}
