package router_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arbor-project/arbor/internal/testtree"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
)

// Hostile children: each completes the real hello with the root (stream.Open
// on the root's side, stream.Accept on its own) and is then a bare
// stream.Link the test drives by hand, doing what no honest node does.

// hostile is a child of the root that the test drives by hand.
type hostile struct {
	id   uint32
	link *stream.Link  // the hostile end
	port *router.Port  // the root's end
	conn *stallingConn // the hostile's connection
}

// attachHostile attaches a hostile child to root over os.Pipe. rootCfg
// configures the root's end of the link (nil: the defaults).
func attachHostile(t *testing.T, root *testtree.Node, rootCfg *stream.Config) *hostile {
	t.Helper()
	id, err := root.R.AllocateID(ctxPatience(t))
	if err != nil {
		t.Fatal(err)
	}
	pc, cc, err := testtree.OSPipe()
	if err != nil {
		t.Fatal(err)
	}
	sc := newStallingConn(cc)
	hcfg := stream.DefaultConfig()
	hcfg.MaxChannels = 1 << 16 // it does not hold itself back
	hcfg.Logger = hclog.NewNullLogger()
	type accepted struct {
		l   *stream.Link
		err error
	}
	ach := make(chan accepted, 1)
	go func() {
		l, _, err := stream.Accept(sc, hcfg, os.Getpid())
		ach <- accepted{l, err}
	}()
	if rootCfg == nil {
		rootCfg = stream.DefaultConfig()
	}
	rootCfg.Logger = hclog.NewNullLogger()
	hello := wire.Hello{ID: id, Name: "hostile", ParentID: root.ID(), Ancestors: []uint32{root.ID()}, MaxMessage: root.R.MaxMessage()}
	pl, _, err := stream.Open(pc, hello, rootCfg)
	a := <-ach
	if err != nil || a.err != nil {
		t.Fatalf("hostile hello: open %v, accept %v", err, a.err)
	}
	t.Cleanup(func() { a.l.Close() })
	a.l.Start(func(wire.Header, []byte) {}, nil)
	port, err := root.R.AttachChild(pl)
	if err != nil {
		t.Fatal(err)
	}
	root.WaitRoute(t, id)
	return &hostile{id: id, link: a.l, port: port, conn: sc}
}

// honestChild spawns a child of root that answers pings, as every node does.
func honestChild(t *testing.T, root *testtree.Node, o testtree.Options) *testtree.Node {
	t.Helper()
	n := root.Spawn(t, o, "honest")
	n.R.Handle(wire.HandlePing, func(m *router.Message) { _ = n.R.ReplyUrgent(m, nil) }, router.Anyone)
	root.WaitRoute(t, n.ID())
	return n
}

// pinger pings a node from the root over and over until stopped, and
// keeps every answer and failure.
type pinger struct {
	stop     chan struct{}
	done     chan struct{}
	answered atomic.Int64
	mu       sync.Mutex
	failures []error
}

func startPinger(t *testing.T, root *testtree.Node, dst uint32) *pinger {
	p := &pinger{stop: make(chan struct{}), done: make(chan struct{})}
	ctx := ctxPatience(t)
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			if _, err := root.R.Request(ctx, dst, wire.HandlePing, nil); err != nil {
				p.mu.Lock()
				p.failures = append(p.failures, err)
				p.mu.Unlock()
			} else {
				p.answered.Add(1)
			}
		}
	}()
	t.Cleanup(p.end)
	return p
}

func (p *pinger) end() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

// check ends the pinger and fails the test unless every ping was answered.
func (p *pinger) check(t *testing.T) {
	t.Helper()
	p.end()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.failures) > 0 {
		t.Fatalf("the honest sibling missed %d pings (%d answered); first: %v", len(p.failures), p.answered.Load(), p.failures[0])
	}
	if p.answered.Load() == 0 {
		t.Fatal("no ping was answered")
	}
}

// awaitPing waits for n more pings to be answered, so the sibling is shown
// to answer at this point of the test.
func (p *pinger) awaitPing(t *testing.T, n int64) {
	t.Helper()
	want := p.answered.Load() + n
	deadline := time.Now().Add(patience)
	for p.answered.Load() < want {
		if time.Now().After(deadline) {
			t.Fatal("the honest sibling stopped answering pings")
		}
		time.Sleep(time.Millisecond)
	}
}

// liveBytes is the process's live heap and goroutine stacks after a
// collection.
func liveBytes() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc + ms.StackInuse)
}

// eventually waits for cond, bounded by patience (a hang guard).
func eventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestHostileEmptyChannels: a child that opens thousands of empty channels
// gets MaxChannels of them, the rest reset, and then loses its link for
// flooding; the root's memory stays bounded and an honest sibling keeps
// answering pings throughout.
func TestHostileEmptyChannels(t *testing.T) {
	root := testtree.Root(t, testtree.Options{})
	honest := honestChild(t, root, testtree.Options{})
	before := liveBytes()
	h := attachHostile(t, root, nil)
	p := startPinger(t, root, honest.ID())

	const limit = stream.DefaultMaxChannels
	for i := 0; i < limit; i++ {
		if _, err := h.link.OpenChannel(); err != nil {
			t.Fatalf("channel %d of %d: %v", i, limit, err)
		}
	}
	eventually(t, func() bool { in, _ := h.port.Link.Channels(); return in == limit }, "the root to count every channel")
	p.awaitPing(t, 1)
	atLimit := liveBytes() - before
	// The flood: thousands more (the bound only ends a loop that would
	// otherwise go on).
	opened := limit
	for ; opened < 20000; opened++ {
		if _, err := h.link.OpenChannel(); err != nil {
			break
		}
	}
	afterFlood := liveBytes() - before
	awaitClosed(t, h.port.Link.Done(), "the root's link to the flooding child")
	cause := h.port.Link.Err()
	var fe *stream.ChannelFloodError
	if !errors.Is(cause, stream.ErrChannelLimit) || !errors.As(cause, &fe) || fe.Peer != h.id {
		t.Fatalf("flooding child's link closed with %v, want a *ChannelFloodError naming node %d", cause, h.id)
	}
	root.WaitNoRoute(t, h.id)
	p.awaitPing(t, 1)
	p.check(t)
	t.Logf("hostile opened %d channels; %d refused; live bytes +%d KiB at the limit, +%d KiB after the flood; %d pings answered",
		opened, h.port.Link.ChannelsRefused(), atLimit>>10, afterFlood>>10, p.answered.Load())
	const bound = 16 << 20 // 256 empty channels take about 3 MiB; 20,000 unbounded ones about 50
	if atLimit > bound || afterFlood > bound {
		t.Fatalf("live bytes grew by %d at the limit and %d after the flood; bound %d", atLimit, afterFlood, bound)
	}
}

// TestHostileUnclaimedData: a child that writes as much as it can into
// many channels nobody claims (with no open frame, with an open frame the
// root refuses, with one the root forwards to a sibling that refuses it)
// pushes at most yamux's initial window into each, so the root's memory
// stays bounded; an honest sibling keeps answering pings throughout.
func TestHostileUnclaimedData(t *testing.T) {
	openTo := func(dst uint32) func(*hostile) []byte {
		return func(h *hostile) []byte {
			body, err := wire.Marshal(router.ChannelOpen{ID: 1, Service: "x"})
			if err != nil {
				t.Fatal(err)
			}
			return wire.AppendFrame(nil, wire.Header{Dst: dst, Src: h.id, Auth: h.id, Handle: wire.HandleChannel}, body)
		}
	}
	cases := []struct {
		name string
		// first is what the hostile writes before its data; dst is
		// filled in with the honest sibling's ID.
		first func(h *hostile, sibling uint32) []byte
	}{
		{"no open frame", func(*hostile, uint32) []byte { return nil }},
		{"open to the root, refused", func(h *hostile, _ uint32) []byte { return openTo(0)(h) }},
		{"open to a sibling, forwarded and refused there", func(h *hostile, sib uint32) []byte { return openTo(sib)(h) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := testtree.Options{AllowSiblingRoutes: true}
			root := testtree.Root(t, o)
			honest := honestChild(t, root, o)
			before := liveBytes()
			const channels, each, initialWindow = 32, 4 << 20, 256 << 10
			rcfg := stream.DefaultConfig()
			rcfg.MaxChannels = channels
			h := attachHostile(t, root, rcfg)
			p := startPinger(t, root, honest.ID())
			data := bytes.Repeat([]byte("x"), each)
			written := make(chan int, channels)
			for i := 0; i < channels; i++ {
				s, err := h.link.OpenChannel()
				if err != nil {
					t.Fatal(err)
				}
				go func(s net.Conn) {
					// The deadline ends the writing; the bound is what is checked.
					_ = s.SetWriteDeadline(time.Now().Add(2 * time.Second))
					if first := c.first(h, honest.ID()); first != nil {
						if k, err := s.Write(first); err != nil {
							written <- k
							return
						}
					}
					n, _ := s.Write(data)
					written <- n
				}(s)
			}
			total := 0
			for i := 0; i < channels; i++ {
				n := <-written
				if n > initialWindow {
					t.Fatalf("the hostile child wrote %d bytes into a channel nobody claimed; at most %d fit", n, initialWindow)
				}
				total += n
			}
			grown := liveBytes() - before
			p.awaitPing(t, 1)
			p.check(t)
			t.Logf("hostile wrote %d KiB into %d unclaimed channels; live bytes +%d KiB", total>>10, channels, grown>>10)
			if bound := int64(32 << 20); grown > bound {
				t.Fatalf("live bytes grew by %d; bound %d", grown, bound)
			}
			select {
			case <-h.port.Link.Done():
				t.Fatalf("the root closed the link of a child within the limit: %v", h.port.Link.Err())
			default:
			}
		})
	}
}

// TestStalledChildWriteTimeout: a child that stops reading its connection
// loses its link once a write to it has made no progress for the link's
// WriteTimeout; the root and an honest sibling go on.
func TestStalledChildWriteTimeout(t *testing.T) {
	root := testtree.Root(t, testtree.Options{})
	honest := honestChild(t, root, testtree.Options{})
	rcfg := stream.DefaultConfig()
	rcfg.WriteTimeout = 500 * time.Millisecond
	h := attachHostile(t, root, rcfg)
	p := startPinger(t, root, honest.ID())
	h.conn.stall()
	payload := make([]byte, 1<<20)
	for i := 0; i < 64; i++ {
		if err := root.R.Send(wire.Header{Dst: h.id, Handle: 1000}, payload); err != nil {
			break
		}
	}
	awaitClosed(t, h.port.Link.Done(), "the stalled child's link")
	if cause := h.port.Link.Err(); !errors.Is(cause, stream.ErrWriteTimeout) {
		t.Fatalf("stalled child's link closed with %v, want a write timeout", cause)
	}
	root.WaitNoRoute(t, h.id)
	p.awaitPing(t, 1)
	p.check(t)
	select {
	case <-root.R.Done():
		t.Fatal("the root closed")
	default:
	}
}

// awaitClosed waits for ch to be closed, bounded by patience.
func awaitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(patience):
		t.Fatalf("timed out waiting for %s to close", what)
	}
}

// stallingConn passes bytes until stall is called; then its reads block
// until it is closed, like a process that stopped reading.
type stallingConn struct {
	io.ReadWriteCloser
	stallOnce, closeOnce sync.Once
	stalled, closed      chan struct{}
}

func newStallingConn(c io.ReadWriteCloser) *stallingConn {
	return &stallingConn{ReadWriteCloser: c, stalled: make(chan struct{}), closed: make(chan struct{})}
}

func (s *stallingConn) stall() { s.stallOnce.Do(func() { close(s.stalled) }) }

func (s *stallingConn) Read(p []byte) (int, error) {
	select {
	case <-s.stalled:
		<-s.closed
		return 0, io.ErrClosedPipe
	default:
		return s.ReadWriteCloser.Read(p)
	}
}

func (s *stallingConn) Close() error {
	s.closeOnce.Do(func() { close(s.closed) })
	return s.ReadWriteCloser.Close()
}

// TestEgressSetBounded: a child that addresses 20,000 distinct IDs
// leaves its link's egress set at its bound, and withdrawals still reach
// it (it counts as having talked to every node).
func TestEgressSetBounded(t *testing.T) {
	o := testtree.Options{}
	root := testtree.Root(t, o)
	m := root.Spawn(t, o, "m")
	evil := m.Spawn(t, o, "evil")
	for i := range 20_000 {
		h := wire.Header{Dst: uint32(1_000_000 + i), Src: evil.ID(), Auth: evil.ID(), Handle: wire.HandlePing}
		if err := evil.Down.Link.SendWait(ctxPatience(t), h, nil); err != nil {
			t.Fatal(err)
		}
	}
	// A round trip to m on the same link: m's read loop handled every frame
	// before it (those m could not queue toward the root were dropped: they
	// want no reply).
	if _, err := evil.R.Request(ctxPatience(t), m.ID(), newEcho(m).handle, nil); err != nil {
		t.Fatal(err)
	}
	if !evil.Up.TalkedTo(123) {
		t.Fatal("an overflowed egress set does not count as having talked to every node")
	}
}
