package stream_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/arbor-project/arbor/internal/testtree"
	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/yamux"
)

// hostileConfig is the configuration of a peer that does not hold itself
// back: it opens as many channels as yamux lets it.
func hostileConfig(t *testing.T) *stream.Config {
	log, _ := newLogger(t)
	c := config(log)
	c.MaxChannels = 1 << 16
	return c
}

// holder accepts every channel the peer of l opens and keeps it, neither
// reading nor claiming it, as a router does with a channel nobody claims.
type holder struct {
	got chan net.Conn
	mu  sync.Mutex
	all []net.Conn
}

func hold(t *testing.T, l *stream.Link) *holder {
	h := &holder{got: make(chan net.Conn, 1<<16)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.AcceptChannel(t.Context())
			if err != nil {
				return
			}
			h.mu.Lock()
			h.all = append(h.all, c)
			h.mu.Unlock()
			h.got <- c
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
	})
	return h
}

func (h *holder) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.all)
}

// eventually waits for cond, checking it every few milliseconds, and
// fails the test if it does not hold within waitLimit (a hang guard).
func eventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// readErr reads c until it fails and returns the failure.
func readErr(c net.Conn) <-chan error {
	ch := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, c)
		if err == nil {
			err = io.EOF
		}
		ch <- err
	}()
	return ch
}

// TestChannelLimit: a link admits MaxChannels channels of its peer at
// once; the next one is reset as it arrives and counted, and the link
// stays up; a channel closed at both ends frees its place.
func TestChannelLimit(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr testtree.Transport) {
		log, _ := newLogger(t)
		pcfg := config(log)
		pcfg.MaxChannels = 8
		parent, child, _, _ := linkPair(t, tr, testHello, pcfg, hostileConfig(t))
		start(parent)
		start(child)
		h := hold(t, parent)

		var opened []net.Conn
		for i := 0; i < 8; i++ {
			c, err := child.OpenChannel()
			if err != nil {
				t.Fatalf("channel %d: %v", i, err)
			}
			opened = append(opened, c)
		}
		var held []net.Conn
		for i := 0; i < 8; i++ {
			held = append(held, await(t, h.got, "an admitted channel"))
		}
		over, err := child.OpenChannel()
		if err != nil {
			t.Fatalf("ninth channel: %v", err)
		}
		if err := await(t, readErr(over), "the ninth channel's reset"); !errors.Is(err, yamux.ErrConnectionReset) {
			t.Fatalf("ninth channel: read %v, want a reset", err)
		}
		if n := parent.ChannelsRefused(); n != 1 {
			t.Fatalf("ChannelsRefused = %d, want 1", n)
		}
		if in, _ := parent.Channels(); in != 8 {
			t.Fatalf("parent counts %d channels in, want 8", in)
		}
		if _, out := child.Channels(); out != 8 {
			t.Fatalf("child counts %d channels out, want 8", out)
		}

		// Closed at both ends, a channel frees its place.
		opened[0].Close()
		held[0].Close()
		eventually(t, func() bool { in, _ := parent.Channels(); return in == 7 }, "a closed channel to leave the count")
		c, err := child.OpenChannel()
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			_, _ = c.Write([]byte("hello"))
			c.Close()
		}()
		got, err := io.ReadAll(await(t, h.got, "the channel in the freed place"))
		if err != nil || string(got) != "hello" {
			t.Fatalf("channel in the freed place read %q, %v", got, err)
		}
		select {
		case <-parent.Done():
			t.Fatalf("link closed after one refusal: %v", parent.Err())
		default:
		}
		if h.count() != 9 {
			t.Fatalf("%d channels accepted at the parent, want 9", h.count())
		}
	})
}

// TestChannelFlood: a peer that keeps opening channels past the limit
// loses the link, with a cause that says so; no more than MaxChannels of
// its channels are ever accepted.
func TestChannelFlood(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr testtree.Transport) {
		log, _ := newLogger(t)
		pcfg := config(log)
		pcfg.MaxChannels = 16
		parent, child, _, _ := linkPair(t, tr, testHello, pcfg, hostileConfig(t))
		pe := start(parent)
		start(child)
		h := hold(t, parent)
		// The peer opens channels until the link is gone (the bound only
		// stops a loop that would never end).
		opened := 0
		for ; opened < 1<<20 && !isClosed(parent.Done()); opened++ {
			if _, err := child.OpenChannel(); err != nil {
				break
			}
		}
		cause := await(t, pe.closed, "the flooded link to close")
		var fe *stream.ChannelFloodError
		if !errors.Is(cause, stream.ErrChannelLimit) || !errors.As(cause, &fe) {
			t.Fatalf("link closed with %v, want a *ChannelFloodError", cause)
		}
		if fe.Peer != testHello.ID || fe.Max != 16 || fe.Refused != 17 {
			t.Fatalf("flood error %+v", fe)
		}
		if n := parent.ChannelsRefused(); n < 17 {
			t.Fatalf("ChannelsRefused = %d, want at least 17", n)
		}
		if n := h.count(); n > 16 {
			t.Fatalf("%d channels accepted, more than the limit of 16", n)
		}
		t.Logf("peer opened %d channels; %d accepted, %d refused; link closed: %v", opened, h.count(), parent.ChannelsRefused(), cause)
	})
}

// TestOpenChannelLimit: this side never opens more channels than the
// limit: OpenChannel refuses at once, OpenChannelContext waits for a
// place, and gets one when a channel ends.
func TestOpenChannelLimit(t *testing.T) {
	log, _ := newLogger(t)
	cfg := config(log)
	cfg.MaxChannels = 2
	parent, child, _, _ := linkPair(t, testtree.Transports[1], testHello, cfg, cfg)
	start(parent)
	start(child)
	h := hold(t, child)
	a, err := parent.OpenChannel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parent.OpenChannel(); err != nil {
		t.Fatal(err)
	}
	_, err = parent.OpenChannel()
	var le *stream.ChannelLimitError
	if !errors.Is(err, stream.ErrChannelLimit) || !errors.As(err, &le) || le.Peer != testHello.ID || le.Max != 2 {
		t.Fatalf("third OpenChannel: %v, want a *ChannelLimitError", err)
	}
	opened := make(chan error, 1)
	go func() {
		c, err := parent.OpenChannelContext(t.Context())
		if err == nil {
			c.Close()
		}
		opened <- err
	}()
	select {
	case err := <-opened:
		t.Fatalf("OpenChannelContext returned %v with no place free", err)
	default:
	}
	a.Close()
	(await(t, h.got, "first channel")).Close()
	if err := await(t, opened, "OpenChannelContext"); err != nil {
		t.Fatal(err)
	}
	if n := child.ChannelsRefused(); n != 0 {
		t.Fatalf("the peer refused %d channels of an honest opener", n)
	}
}

// TestUnclaimedChannelWindow: until its user claims it, a channel takes no
// more than yamux's initial window (256 KiB) from its peer, whatever
// StreamWindow is; claimed, it carries everything.
func TestUnclaimedChannelWindow(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr testtree.Transport) {
		log, _ := newLogger(t)
		parent, child, _, _ := linkPair(t, tr, testHello, config(log), hostileConfig(t))
		start(parent)
		start(child)
		h := hold(t, parent)
		const channels, each, initialWindow = 8, 4 << 20, 256 << 10
		data := bytes.Repeat([]byte("x"), each)
		type result struct {
			c       net.Conn
			written int
		}
		results := make(chan result, channels)
		for i := 0; i < channels; i++ {
			c, err := child.OpenChannel()
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				// The deadline ends the writing; the bound is what is checked.
				_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
				n, _ := c.Write(data)
				results <- result{c, n}
			}()
		}
		var held []net.Conn
		for i := 0; i < channels; i++ {
			held = append(held, await(t, h.got, "a channel"))
		}
		var first result
		for i := 0; i < channels; i++ {
			r := await(t, results, "a writer")
			if r.written > initialWindow {
				t.Fatalf("the peer wrote %d bytes into a channel nobody claimed; at most %d fit", r.written, initialWindow)
			}
			if i == 0 {
				first = r
			}
		}
		// Claimed, the channel takes the rest.
		var c net.Conn
		for _, hc := range held {
			if hc.(interface{ StreamID() uint32 }).StreamID() == first.c.(interface{ StreamID() uint32 }).StreamID() {
				c = hc
			}
		}
		parent.GrantWindow(c)
		go func() {
			_ = first.c.SetWriteDeadline(time.Time{})
			_, _ = first.c.Write(data[first.written:])
			first.c.Close()
		}()
		got, err := io.ReadAll(c)
		if err != nil || len(got) != each {
			t.Fatalf("claimed channel carried %d bytes (%v), want %d", len(got), err, each)
		}
	})
}

// stallingConn passes bytes until stall is called; then its reads block
// until it is closed, like a peer process that stopped reading.
type stallingConn struct {
	io.ReadWriteCloser
	once    sync.Once
	stalled chan struct{}
	closed  chan struct{}
}

func newStallingConn(c io.ReadWriteCloser) *stallingConn {
	return &stallingConn{ReadWriteCloser: c, stalled: make(chan struct{}), closed: make(chan struct{})}
}

func (s *stallingConn) stall() {
	select {
	case <-s.stalled:
	default:
		close(s.stalled)
	}
}

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
	s.once.Do(func() { close(s.closed) })
	return s.ReadWriteCloser.Close()
}

// TestWriteTimeout: a write to a link that makes no progress for
// WriteTimeout closes that link, with a cause that says so, whether the
// peer stopped reading its message stream (its yamux still reads: the
// window stays shut) or stopped reading the connection at all.
func TestWriteTimeout(t *testing.T) {
	for _, c := range []struct {
		name string
		// stall stops the child reading, given its link and connection.
		stall func(child *stream.Link, conn *stallingConn)
	}{
		{"peer's read loop does not run", func(*stream.Link, *stallingConn) {}},
		{"peer does not read its connection", func(_ *stream.Link, conn *stallingConn) { conn.stall() }},
	} {
		t.Run(c.name, func(t *testing.T) {
			forEachTransport(t, func(t *testing.T, tr testtree.Transport) {
				log, _ := newLogger(t)
				pcfg := config(log)
				pcfg.WriteTimeout = 300 * time.Millisecond
				ccfg := config(log)
				ccfg.StreamWindow = 256 << 10
				pc, cc := pipe(t, tr)
				sc := newStallingConn(cc)
				ach := acceptAsync(sc, ccfg, 1)
				parent, _, err := stream.Open(pc, testHello, pcfg)
				a := await(t, ach, "Accept")
				if err != nil || a.err != nil {
					t.Fatalf("Open: %v; Accept: %v", err, a.err)
				}
				t.Cleanup(func() { parent.Close(); a.l.Close() })
				pe := start(parent)
				// The child is never started: nothing reads its message stream.
				c.stall(a.l, sc)
				payload := make([]byte, 1<<20)
				for i := 0; i < 4; i++ {
					if err := parent.Send(wire.Header{Dst: 7, Handle: 1000}, payload); err != nil {
						break
					}
				}
				cause := await(t, pe.closed, "the stalled link to close")
				if !errors.Is(cause, stream.ErrWriteTimeout) {
					t.Fatalf("link closed with %v, want a write timeout", cause)
				}
			})
		})
	}
}

// TestOpenChannelContextUnblock: an OpenChannelContext waiting for a place
// returns when its context ends and when the link closes.
func TestOpenChannelContextUnblock(t *testing.T) {
	for _, c := range []struct {
		name string
		stop func(l *stream.Link, cancel func())
		want error
	}{
		{"context ends", func(_ *stream.Link, cancel func()) { cancel() }, stream.ErrChannelLimit},
		{"link closes", func(l *stream.Link, _ func()) { l.Close() }, stream.ErrLinkClosed},
	} {
		t.Run(c.name, func(t *testing.T) {
			log, _ := newLogger(t)
			cfg := config(log)
			cfg.MaxChannels = 1
			parent, child, _, _ := linkPair(t, testtree.Transports[1], testHello, cfg, cfg)
			start(parent)
			start(child)
			hold(t, child)
			if _, err := parent.OpenChannel(); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			res := make(chan error, 1)
			go func() {
				_, err := parent.OpenChannelContext(ctx)
				res <- err
			}()
			c.stop(parent, cancel)
			if err := await(t, res, "OpenChannelContext"); !errors.Is(err, c.want) {
				t.Fatalf("OpenChannelContext returned %v, want %v", err, c.want)
			}
		})
	}
}

// TestYamuxPingCloses: links run no yamux keepalive, so a yamux ping can
// only come from a hostile peer (one that floods them and stops reading
// would pin one of yamux's answering goroutines per ping). The first one
// closes the link with ErrProtocol.
func TestYamuxPingCloses(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr testtree.Transport) {
		log, _ := newLogger(t)
		pc, cc := pipe(t, tr)
		ach := acceptAsync(cc, config(log), 4242)
		parent, _, err := stream.Open(pc, testHello, config(log))
		a := await(t, ach, "Accept")
		if err != nil || a.err != nil {
			t.Fatalf("Open: %v; Accept: %v", err, a.err)
		}
		t.Cleanup(func() { parent.Close(); a.l.Close() })
		pe := start(parent)
		// A ping request (SYN) in a tunnel frame, written straight on the
		// child's transport while its link is idle: one frame, in one
		// write. It creates the parent's session, whose gate refuses it.
		ping := wire.AppendTunnelFrame(nil, []byte{0, yamuxPing, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7})
		if _, err := cc.Write(ping); err != nil {
			t.Fatal(err)
		}
		cause := await(t, pe.closed, "the link to close on a yamux ping")
		if !errors.Is(cause, stream.ErrProtocol) {
			t.Fatalf("link closed with %v, want ErrProtocol", cause)
		}
	})
}

const yamuxPing = 2
