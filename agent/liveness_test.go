package agent_test

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/internal/testtree"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
)

// livenessPatience guards against a hang in these tests; it is far longer
// than the thresholds they set, and shorter than the 30 s transport
// keepalive that once decided liveness on its own clock.
const livenessPatience = 25 * time.Second

// shortHeartbeat is what these tests run with.
var shortHeartbeat = agent.HeartbeatConfig{Interval: 50 * time.Millisecond, UnresponsiveAfter: 400 * time.Millisecond, DownAfter: time.Second}

// newRoot starts a root with heartbeat thresholds hb, closed at the end of
// the test; local children are this test binary.
func newRoot(t *testing.T, hb agent.HeartbeatConfig) *agent.Node {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	root, err := agent.NewRoot(agent.Options{Exe: exe, Logger: hclog.NewNullLogger(), Heartbeat: hb})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	return root
}

// TestChildLeavesSilentParent: a node whose parent completes the hello and
// then says nothing (as across a partition that closes no socket) closes
// its parent link with a heartbeat-timeout cause and shuts down after the
// parent's DownAfter. Before, nothing but a transport keepalive on its own
// 30 s clock ever noticed, as "EOF".
func TestChildLeavesSilentParent(t *testing.T) {
	pc, cc, err := testtree.OSPipe()
	if err != nil {
		t.Fatal(err)
	}
	hello := wire.Hello{ID: 1, Name: "silent-parent-child", ParentID: wire.RootID, Ancestors: []uint32{wire.RootID},
		HeartbeatInterval: shortHeartbeat.Interval, UnresponsiveAfter: shortHeartbeat.UnresponsiveAfter, DownAfter: shortHeartbeat.DownAfter}
	opened := make(chan *stream.Link, 1)
	go func() {
		l, _, err := stream.Open(pc, hello, nil)
		if err != nil {
			t.Error(err)
			pc.Close()
			close(opened)
			return
		}
		opened <- l // never started: it neither reads nor writes again
	}()
	n, err := agent.Attach(cc, agent.Options{Logger: hclog.NewNullLogger()}, livenessPatience)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if l := <-opened; l != nil {
		defer l.Close()
	}
	parent := n.Router.Parent()
	if parent == nil {
		t.Fatal("no parent link")
	}
	select {
	case <-parent.Link.Done():
	case <-time.After(livenessPatience):
		t.Fatalf("the node still holds its parent link %s after the parent went silent", livenessPatience)
	}
	if err := parent.Link.Err(); !errors.Is(err, agent.ErrHeartbeatTimeout) || !strings.Contains(err.Error(), "nothing from parent node 0") {
		t.Fatalf("parent link closed with %v, want a heartbeat timeout naming the parent", err)
	}
}

// TestSenderThatNeverAnswersIsDown: a child that keeps sending frames but
// never answers the heartbeat's probes is not alive: it goes UNRESPONSIVE
// and DOWN on the configured thresholds, with a heartbeat cause. Before,
// any frame counted as life and such a child stayed UP forever.
func TestSenderThatNeverAnswersIsDown(t *testing.T) {
	root := newRoot(t, shortHeartbeat)
	ev := watchTree(t, root)

	pc, cc, err := testtree.OSPipe()
	if err != nil {
		t.Fatal(err)
	}
	const id = 77
	type accepted struct {
		l   *stream.Link
		err error
	}
	acc := make(chan accepted, 1)
	go func() {
		l, _, err := stream.Accept(cc, nil, os.Getpid())
		acc <- accepted{l, err}
	}()
	pl, _, err := stream.Open(pc, root.ChildHello(id, "chatty"), nil)
	if err != nil {
		t.Fatal(err)
	}
	a := <-acc
	if a.err != nil {
		t.Fatal(a.err)
	}
	child := a.l
	defer child.Close()
	// The child reads (so nothing backs up) but answers nothing.
	child.Start(func(wire.Header, []byte) {}, nil)
	if _, err := root.Router.AttachChild(pl); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-child.Done():
				return
			case <-t.C:
				// A message to the root on a handle nobody serves: traffic,
				// but not an answer to a probe.
				_ = child.Send(wire.Header{Dst: wire.RootID, Src: id, Auth: id, Handle: 999}, nil)
			}
		}
	}()
	ev.wait(t, agent.StateUnresponsive, id)
	down := ev.wait(t, agent.StateDown, id)
	if !strings.Contains(down.Cause, "heartbeat timeout") {
		t.Fatalf("DOWN cause %q, want heartbeat timeout", down.Cause)
	}
	select {
	case <-pl.Done():
	case <-time.After(livenessPatience):
		t.Fatal("the root kept the link of a child that never answered")
	}
}

// slowLink passes writes at about bytesPerSecond, in pieces: a slow hop
// (a WAN ssh link) for one direction of a pipe.
type slowLink struct {
	io.ReadWriteCloser
	bytesPerSecond int
}

func (s slowLink) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		c := min(len(p), 16<<10)
		time.Sleep(time.Duration(c) * time.Second / time.Duration(s.bytesPerSecond))
		k, err := s.ReadWriteCloser.Write(p[:c])
		n += k
		if err != nil {
			return n, err
		}
		p = p[c:]
	}
	return n, nil
}

// TestBusySlowHopStaysUp: over a hop of about 256 KB/s, with thresholds
// of 1.5 s and 3 s, a single 2 MiB frame (8 s on the wire) down or up, or
// 64 frames of 32 KiB up, hold every heartbeat frame behind them; a node
// at work is not a dead node. Neither end may declare the other gone, nor
// even unresponsive: bytes of a frame still arriving, or of ours still
// going out to a peer that takes them, are life (they move every 250 ms or
// so, six times inside the threshold). Before, the parent declared the
// busy child DOWN, or the child its parent, after 3 s.
func TestBusySlowHopStaysUp(t *testing.T) {
	for _, tc := range []struct {
		name   string
		up     bool // the child sends (else the root)
		frames int
		size   int
	}{
		{"one big frame down", false, 1, 2 << 20},
		{"one big frame up", true, 1, 2 << 20},
		{"many frames up", true, 64, 32 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hb := agent.HeartbeatConfig{Interval: 100 * time.Millisecond, UnresponsiveAfter: 1500 * time.Millisecond, DownAfter: 3 * time.Second}
			root := newRoot(t, hb)
			ev := watchTree(t, root)

			pc, cc, err := testtree.OSPipe()
			if err != nil {
				t.Fatal(err)
			}
			const slow = 256 << 10
			if tc.up {
				cc = slowLink{cc, slow}
			} else {
				pc = slowLink{pc, slow}
			}
			const id = 88
			attached := make(chan *agent.Node, 1)
			go func() {
				n, err := agent.Attach(cc, agent.Options{Logger: hclog.NewNullLogger()}, livenessPatience)
				if err != nil {
					t.Error(err)
				}
				attached <- n
			}()
			pl, _, err := stream.Open(pc, root.ChildHello(id, "busy"), nil)
			if err != nil {
				t.Fatal(err)
			}
			child := <-attached
			if child == nil {
				t.FailNow()
			}
			defer child.Close()
			if _, err := root.Router.AttachChild(pl); err != nil {
				t.Fatal(err)
			}

			from, to := root, child
			if tc.up {
				from, to = child, root
			}
			got := make(chan struct{}, tc.frames)
			h := to.Router.AddHandler(func(*router.Message) { got <- struct{}{} }, router.Anyone)
			ctx, cancel := context.WithTimeout(context.Background(), livenessPatience)
			defer cancel()
			go func() {
				for i := 0; i < tc.frames; i++ {
					if err := from.Router.SendContext(ctx, wire.Header{Dst: to.Router.ID(), Handle: h}, make([]byte, tc.size)); err != nil {
						t.Error(err)
						return
					}
				}
			}()
			for i := 0; i < tc.frames; i++ {
				select {
				case <-got:
				case <-ctx.Done():
					t.Fatalf("%d of %d frames arrived", i, tc.frames)
				}
			}
			select {
			case e := <-ev.ch:
				if e.ID == id && (e.Kind == agent.StateUnresponsive || e.Kind == agent.StateDown || e.Kind == "del_route") {
					t.Fatalf("the busy child was reported %s: %s", e.Kind, e.Cause)
				}
			default:
			}
			for len(ev.ch) > 0 {
				if e := <-ev.ch; e.ID == id && e.Kind != "add_route" && e.Kind != agent.StateUp {
					t.Fatalf("the busy child was reported %s: %s", e.Kind, e.Cause)
				}
			}
			if p := child.Router.Parent(); p == nil {
				t.Fatal("the busy child lost its parent link")
			} else if err := p.Link.Err(); err != nil {
				t.Fatalf("the child closed its link to a busy parent: %v", err)
			}
			if err := pl.Err(); err != nil {
				t.Fatalf("the root closed its link to a busy child: %v", err)
			}
		})
	}
}

// TestHeartbeatHoldsNoLockAcrossSend: node m's link to its parent is
// congested (the parent reads nothing), a child of m goes silent and is
// declared DOWN, and m's other child must go on being served. Before, the
// heartbeat sent the DOWN report while holding its mutex, blocked on the
// full parent queue, and every child's read loop then blocked in onPong on
// that mutex: m could no longer hear its healthy child.
func TestHeartbeatHoldsNoLockAcrossSend(t *testing.T) {
	log := hclog.NewNullLogger()
	// m's parent: it completes the hello, then never reads.
	pc, cc, err := testtree.OSPipe()
	if err != nil {
		t.Fatal(err)
	}
	hello := wire.Hello{ID: 1, Name: "m", ParentID: wire.RootID, Ancestors: []uint32{wire.RootID},
		HeartbeatInterval: 50 * time.Millisecond, UnresponsiveAfter: 300 * time.Millisecond, DownAfter: 600 * time.Millisecond}
	parentEnd := make(chan *stream.Link, 1)
	go func() {
		l, _, err := stream.Open(pc, hello, nil)
		if err != nil {
			t.Error(err)
		}
		parentEnd <- l
	}()
	m, err := agent.Attach(cc, agent.Options{Logger: log}, livenessPatience)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if l := <-parentEnd; l != nil {
		defer l.Close()
	}
	// (m's own watch may close its silent parent link meanwhile: m goes on
	// serving its children either way.)

	attach := func(id uint32, name string, answer bool) *stream.Link {
		t.Helper()
		p, c, err := testtree.OSPipe()
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			if answer {
				n, err := agent.Attach(c, agent.Options{Logger: log}, livenessPatience)
				if err != nil {
					t.Error(err)
					return
				}
				t.Cleanup(func() { n.Close() })
				return
			}
			l, _, err := stream.Accept(c, nil, os.Getpid())
			if err != nil {
				t.Error(err)
				return
			}
			t.Cleanup(func() { l.Close() }) // never started: it answers nothing
		}()
		pl, _, err := stream.Open(p, m.ChildHello(id, name), nil)
		if err != nil {
			t.Fatal(err)
		}
		<-done
		if _, err := m.Router.AttachChild(pl); err != nil {
			t.Fatal(err)
		}
		return pl
	}
	silent := attach(2, "silent", false)
	attach(3, "healthy", true)

	// Fill m's queue toward its parent (before the fix a send there
	// blocked, so the filler runs on its own goroutine).
	go func() {
		payload := make([]byte, 64<<10)
		for i := 0; i < 4096; i++ {
			if err := m.Router.Send(wire.Header{Dst: wire.RootID, Handle: 999}, payload); err != nil {
				return
			}
		}
	}()

	select {
	case <-silent.Done():
	case <-time.After(livenessPatience):
		t.Fatal("the silent child was never declared DOWN: the heartbeat is stuck")
	}
	ctx, cancel := context.WithTimeout(context.Background(), livenessPatience)
	defer cancel()
	if _, err := m.Router.Request(ctx, 3, wire.HandlePing, nil); err != nil {
		t.Fatalf("m cannot reach its healthy child while its parent link is congested: %v", err)
	}
}
