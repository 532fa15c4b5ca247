package stream_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arbor-project/arbor/internal/testtree"
	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/yamux"
)

// waitLimit bounds every wait in these tests. It guards against a hang and
// is never a timing assertion: everything waited for is an event.
const waitLimit = 2 * time.Minute

// shortTimeout is the timeout of the tests that expect one to expire.
const shortTimeout = 200 * time.Millisecond

// testHello is what the parent sends: child 7, named as a path of hops,
// under parent 3 under the root.
var testHello = wire.Hello{ID: 7, Name: "ssh:bastion/ssh:db1", ParentID: 3, Ancestors: []uint32{3, 0}}

// forEachTransport runs test once over every transport a link is used on.
func forEachTransport(t *testing.T, test func(t *testing.T, tr testtree.Transport)) {
	t.Helper()
	for _, tr := range testtree.Transports {
		t.Run(tr.Name, func(t *testing.T) { test(t, tr) })
	}
}

// logBuf collects a logger's output; it is safe for concurrent use.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// line returns the first logged line containing every one of subs.
func (l *logBuf) line(subs ...string) (string, bool) {
next:
	for _, ln := range strings.Split(l.String(), "\n") {
		for _, s := range subs {
			if !strings.Contains(ln, s) {
				continue next
			}
		}
		return ln, true
	}
	return "", false
}

// newLogger returns an hclog logger writing into a buffer, shown if the
// test fails.
func newLogger(t *testing.T) (hclog.Logger, *logBuf) {
	lb := &logBuf{}
	log := hclog.New(&hclog.LoggerOptions{Name: "test", Output: lb, Level: hclog.Debug})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", lb.String())
		}
	})
	return log, lb
}

func config(log hclog.Logger) *stream.Config {
	c := stream.DefaultConfig()
	c.Logger = log
	return c
}

// await receives from ch, failing the test if nothing comes in time.
func await[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(waitLimit)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// awaitClosed waits for ch (a Done or CloseChan channel) to be closed.
func awaitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	timer := time.NewTimer(waitLimit)
	defer timer.Stop()
	select {
	case <-ch:
	case <-timer.C:
		t.Fatalf("timed out waiting for %s", what)
	}
}

// pipe returns a fresh connected pair of tr, closed when the test ends.
func pipe(t *testing.T, tr testtree.Transport) (parent, child io.ReadWriteCloser) {
	t.Helper()
	p, c, err := tr.Pair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Close()
		c.Close()
	})
	return p, c
}

type accepted struct {
	l     *stream.Link
	hello wire.Hello
	err   error
}

// acceptAsync runs stream.Accept on its own goroutine.
func acceptAsync(conn io.ReadWriteCloser, cfg *stream.Config, pid int) <-chan accepted {
	ch := make(chan accepted, 1)
	go func() {
		l, h, err := stream.Accept(conn, cfg, pid)
		ch <- accepted{l, h, err}
	}()
	return ch
}

type opened struct {
	l   *stream.Link
	ack wire.HelloAck
	err error
}

// openAsync runs stream.Open on its own goroutine.
func openAsync(conn io.ReadWriteCloser, hello wire.Hello, cfg *stream.Config) <-chan opened {
	ch := make(chan opened, 1)
	go func() {
		l, ack, err := stream.Open(conn, hello, cfg)
		ch <- opened{l, ack, err}
	}()
	return ch
}

// linkPair opens a link over a fresh pair of tr, the parent configured by
// pcfg and the child by ccfg. Both ends are closed when the test ends.
func linkPair(t *testing.T, tr testtree.Transport, hello wire.Hello, pcfg, ccfg *stream.Config) (parent, child *stream.Link, got wire.Hello, ack wire.HelloAck) {
	t.Helper()
	pc, cc := pipe(t, tr)
	ach := acceptAsync(cc, ccfg, 4242)
	parent, ack, err := stream.Open(pc, hello, pcfg)
	a := await(t, ach, "Accept")
	if a.l != nil {
		t.Cleanup(func() { a.l.Close() })
	}
	if parent != nil {
		t.Cleanup(func() { parent.Close() })
	}
	if err != nil || a.err != nil {
		t.Fatalf("Open: %v; Accept: %v", err, a.err)
	}
	return parent, a.l, a.hello, ack
}

type gotFrame struct {
	h       wire.Header
	payload []byte
}

// endpoint records what a started link delivers.
type endpoint struct {
	frames chan gotFrame
	closed chan error
	calls  atomic.Int32 // onClose calls
}

// start starts l, recording its frames and its close.
func start(l *stream.Link) *endpoint {
	e := &endpoint{frames: make(chan gotFrame, 4096), closed: make(chan error, 4)}
	l.Start(func(h wire.Header, payload []byte) {
		e.frames <- gotFrame{h, payload}
	}, func(err error) {
		e.calls.Add(1)
		e.closed <- err
	})
	return e
}

// expectFrame waits for the next frame and checks it is h with payload.
func (e *endpoint) expectFrame(t *testing.T, h wire.Header, payload []byte) {
	t.Helper()
	f := await(t, e.frames, fmt.Sprintf("frame on handle %d", h.Handle))
	h.Length = uint32(len(payload))
	if f.h != h {
		t.Fatalf("got header %v, want %v", f.h, h)
	}
	if !bytes.Equal(f.payload, payload) {
		t.Fatalf("handle %d: payload of %d bytes differs from the %d sent", h.Handle, len(f.payload), len(payload))
	}
}

// --- Hand-built ends, to put on the wire what a real Link never would. ---

func rawYamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.LogOutput = io.Discard
	c.EnableKeepAlive = false
	return c
}

func writeFrame(t *testing.T, w io.Writer, h wire.Header, v any) {
	t.Helper()
	body, err := wire.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(wire.AppendFrame(nil, h, body)); err != nil {
		t.Fatalf("writing frame: %v", err)
	}
}

// sendFrame writes a frame the peer is expected to refuse: the write may
// see the session end before it returns, so its error is not checked.
func sendFrame(t *testing.T, w io.Writer, h wire.Header, v any) {
	t.Helper()
	body, err := wire.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(wire.AppendFrame(nil, h, body))
}

func readFrame(t *testing.T, r io.Reader, v any) wire.Header {
	t.Helper()
	var hb [wire.HeaderSize]byte
	h, p, err := wire.ReadFrame(r, hb[:], wire.DefaultMaxMessage)
	if err != nil {
		t.Fatalf("reading frame: %v", err)
	}
	if err := wire.Unmarshal(p, v); err != nil {
		t.Fatalf("decoding %s payload: %v", wire.HandleName(h.Handle), err)
	}
	return h
}

func helloHeader(h wire.Hello) wire.Header {
	return wire.Header{Dst: h.ID, Src: h.ParentID, Auth: h.ParentID, Handle: wire.HandleHello}
}

// handChild plays the child by hand: it reads the parent's hello from
// conn. Nothing is answered.
func handChild(t *testing.T, conn io.ReadWriteCloser) wire.Hello {
	t.Helper()
	var hello wire.Hello
	h := readFrame(t, conn, &hello)
	if h.Length = 0; h != helloHeader(hello) {
		t.Fatalf("hello frame header %v, want %v", h, helloHeader(hello))
	}
	return hello
}

// awaitEOF reads conn until it fails: the other end closed it.
func awaitEOF(t *testing.T, conn io.Reader, what string) {
	t.Helper()
	ch := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, conn)
		ch <- err
	}()
	await(t, ch, what)
}

// v1Parent plays a parent of protocol version 1: a yamux client whose
// first stream carries the hello.
func v1Parent(t *testing.T, conn io.ReadWriteCloser) *yamux.Session {
	t.Helper()
	sess, err := yamux.Client(conn, rawYamuxConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	st, err := sess.OpenStream()
	if err != nil {
		return sess // the child refused the stream's first bytes already
	}
	h := testHello
	h.Version, h.MaxMessage = 1, wire.DefaultMaxMessage
	body, _ := wire.Marshal(h)
	f := wire.AppendFrame(nil, helloHeader(h), body)
	f[2] = 1
	_, _ = st.Write(f)
	return sess
}

// drain reads and discards conn until it closes: a peer that swallows
// everything and never answers.
func drain(t *testing.T, conn io.ReadWriteCloser) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(io.Discard, conn)
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
}

// --- Hello ---

func TestHello(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr testtree.Transport) {
		log, _ := newLogger(t)
		pcfg := config(log)
		pcfg.MaxMessage = 1 << 20 // the parent's limit...
		ccfg := config(log)       // ...wins over the child's own default of 64 MiB
		parent, child, got, ack := linkPair(t, tr, testHello, pcfg, ccfg)

		want := testHello
		want.Version = wire.Version
		want.MaxMessage = 1 << 20
		if !reflect.DeepEqual(got, want) {
			t.Errorf("child got hello %+v, want %+v", got, want)
		}
		if h := child.Hello(); !reflect.DeepEqual(h, want) {
			t.Errorf("child link Hello() = %+v, want %+v", h, want)
		}
		if h := parent.Hello(); !reflect.DeepEqual(h, want) {
			t.Errorf("parent link Hello() = %+v, want %+v", h, want)
		}
		if want := (wire.HelloAck{Version: wire.Version, ID: 7, PID: 4242}); ack != want {
			t.Errorf("ack = %+v, want %+v", ack, want)
		}
		if parent.PeerID() != 7 || child.PeerID() != 3 {
			t.Errorf("PeerID: parent sees %d, child sees %d; want 7 and 3", parent.PeerID(), child.PeerID())
		}
		if parent.MaxMessage() != 1<<20 || child.MaxMessage() != 1<<20 {
			t.Errorf("MaxMessage: parent %d, child %d; want both %d (inherited)", parent.MaxMessage(), child.MaxMessage(), 1<<20)
		}
	})
}

// TestHelloMaxMessageIsTheLinkLimit: a limit set in the hello is the limit
// of the link at both ends, so a payload the child would refuse is refused
// at the parent's Send instead of killing the link.
func TestHelloMaxMessageIsTheLinkLimit(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr testtree.Transport) {
		log, _ := newLogger(t)
		hello := testHello
		hello.MaxMessage = 4096
		parent, child, got, _ := linkPair(t, tr, hello, config(log), config(log))
		if got.MaxMessage != 4096 || child.MaxMessage() != 4096 || parent.MaxMessage() != 4096 {
			t.Fatalf("MaxMessage: hello %d, child %d, parent %d; want all 4096",
				got.MaxMessage, child.MaxMessage(), parent.MaxMessage())
		}
		start(parent)
		start(child)
		var tl *wire.TooLargeError
		if err := parent.Send(wire.Header{Dst: 7}, make([]byte, 4097)); !errors.As(err, &tl) || tl.Max != 4096 {
			t.Fatalf("parent Send of 4097 bytes: %v, want *wire.TooLargeError with max 4096", err)
		}
	})
}

func TestHelloRefused(t *testing.T) {
	// The child refuses a bad hello, and closes the connection.
	childCases := []struct {
		name string
		send func(t *testing.T, st io.ReadWriteCloser)
		want error
		text string
	}{
		{"hello version 3", func(t *testing.T, st io.ReadWriteCloser) {
			h := testHello
			h.Version, h.MaxMessage = 3, wire.DefaultMaxMessage
			sendFrame(t, st, helloHeader(h), h)
		}, wire.ErrBadVersion, "parent speaks 3"},
		{"frame version 1", func(t *testing.T, st io.ReadWriteCloser) {
			h := testHello
			h.Version, h.MaxMessage = wire.Version, wire.DefaultMaxMessage
			body, _ := wire.Marshal(h)
			f := wire.AppendFrame(nil, helloHeader(h), body)
			f[2] = 1
			_, _ = st.Write(f)
		}, wire.ErrBadVersion, "got 1, want 2"},
		{"a version 1 parent (yamux first)", func(t *testing.T, st io.ReadWriteCloser) {
			v1Parent(t, st)
		}, wire.ErrBadVersion, "speaks protocol version 1"},
		{"tunnel frame first", func(t *testing.T, st io.ReadWriteCloser) {
			_, _ = st.Write(wire.AppendTunnelFrame(nil, []byte{0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0}))
		}, stream.ErrHello, "tunnel frame, want HELLO"},
		{"first frame not HELLO", func(t *testing.T, st io.ReadWriteCloser) {
			h := testHello
			h.Version, h.MaxMessage = wire.Version, wire.DefaultMaxMessage
			hdr := helloHeader(h)
			hdr.Handle = wire.HandleCall
			sendFrame(t, st, hdr, h)
		}, stream.ErrHello, "want HELLO"},
		{"max message 0", func(t *testing.T, st io.ReadWriteCloser) {
			h := testHello
			h.Version = wire.Version
			sendFrame(t, st, helloHeader(h), h)
		}, stream.ErrHello, "max message 0"},
		{"undecodable hello", func(t *testing.T, st io.ReadWriteCloser) {
			sendFrame(t, st, helloHeader(testHello), map[int]int{1: 1, 99: 0})
		}, wire.ErrBadPayload, "unknown field"},
	}
	for _, tc := range childCases {
		t.Run("child/"+tc.name, func(t *testing.T) {
			forEachTransport(t, func(t *testing.T, tr testtree.Transport) {
				log, _ := newLogger(t)
				pc, cc := pipe(t, tr)
				ach := acceptAsync(cc, config(log), 1)
				tc.send(t, pc)
				a := await(t, ach, "Accept")
				if a.err == nil {
					a.l.Close()
					t.Fatal("Accept accepted the hello")
				}
				if !errors.Is(a.err, stream.ErrHello) || !errors.Is(a.err, tc.want) || !strings.Contains(a.err.Error(), tc.text) {
					t.Fatalf("Accept: %v; want ErrHello, %v and %q", a.err, tc.want, tc.text)
				}
				awaitEOF(t, pc, "the refused parent's connection to close")
			})
		})
	}

	// The parent refuses a bad acknowledgement, and closes the connection.
	parentCases := []struct {
		name string
		ack  wire.HelloAck
		text string
	}{
		{"ack version 3", wire.HelloAck{Version: 3, ID: 7}, "child answered version 3 id 7, want version 2 id 7"},
		{"ack for another ID", wire.HelloAck{Version: 2, ID: 8}, "child answered version 2 id 8, want version 2 id 7"},
	}
	for _, tc := range parentCases {
		t.Run("parent/"+tc.name, func(t *testing.T) {
			forEachTransport(t, func(t *testing.T, tr testtree.Transport) {
				log, _ := newLogger(t)
				pc, cc := pipe(t, tr)
				och := openAsync(pc, testHello, config(log))
				hello := handChild(t, cc)
				sendFrame(t, cc, wire.Header{Dst: hello.ParentID, Src: hello.ID, Auth: hello.ID, Handle: wire.HandleHello}, tc.ack)
				o := await(t, och, "Open")
				if o.err == nil {
					o.l.Close()
					t.Fatal("Open accepted the ack")
				}
				if !errors.Is(o.err, stream.ErrHello) || !strings.Contains(o.err.Error(), tc.text) {
					t.Fatalf("Open: %v; want ErrHello and %q", o.err, tc.text)
				}
				awaitEOF(t, cc, "the refused child's connection to close")
			})
		})
	}

	// A child of protocol version 1 runs a yamux server on the connection:
	// it refuses the hello's first byte and closes. The parent says so.
	t.Run("parent/a version 1 child (yamux)", func(t *testing.T) {
		forEachTransport(t, func(t *testing.T, tr testtree.Transport) {
			log, _ := newLogger(t)
			pc, cc := pipe(t, tr)
			sess, err := yamux.Server(cc, rawYamuxConfig())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { sess.Close() })
			_, _, err = stream.Open(pc, testHello, config(log))
			if !errors.Is(err, stream.ErrHello) || !strings.Contains(err.Error(), "another protocol version") {
				t.Fatalf("Open: %v; want ErrHello naming another protocol version", err)
			}
		})
	})
}

// TestHelloTimeout: a peer that never answers fails the hello with
// "connection timed out" once HelloTimeout has passed.
func TestHelloTimeout(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, tr testtree.Transport, cfg *stream.Config) error
	}{
		{"Open, child swallows everything", func(t *testing.T, tr testtree.Transport, cfg *stream.Config) error {
			pc, cc := pipe(t, tr)
			drain(t, cc)
			_, _, err := stream.Open(pc, testHello, cfg)
			return err
		}},
		{"Open, child reads the hello but never acks", func(t *testing.T, tr testtree.Transport, cfg *stream.Config) error {
			pc, cc := pipe(t, tr)
			och := openAsync(pc, testHello, cfg)
			handChild(t, cc)
			return await(t, och, "Open").err
		}},
		{"Accept, parent never speaks", func(t *testing.T, tr testtree.Transport, cfg *stream.Config) error {
			pc, cc := pipe(t, tr)
			drain(t, pc)
			_, _, err := stream.Accept(cc, cfg, 1)
			return err
		}},
		{"Accept, parent sends half a hello", func(t *testing.T, tr testtree.Transport, cfg *stream.Config) error {
			pc, cc := pipe(t, tr)
			ach := acceptAsync(cc, cfg, 1)
			h := testHello
			h.Version, h.MaxMessage = wire.Version, wire.DefaultMaxMessage
			body, _ := wire.Marshal(h)
			go func() { _, _ = pc.Write(wire.AppendFrame(nil, helloHeader(h), body)[:20]) }()
			return await(t, ach, "Accept").err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			forEachTransport(t, func(t *testing.T, tr testtree.Transport) {
				log, _ := newLogger(t)
				cfg := config(log)
				cfg.HelloTimeout = shortTimeout
				err := tc.run(t, tr, cfg)
				if err == nil {
					t.Fatal("hello succeeded with a silent peer")
				}
				if !errors.Is(err, stream.ErrHello) || !strings.Contains(err.Error(), "connection timed out") {
					t.Fatalf("err = %v; want ErrHello and \"connection timed out\"", err)
				}
			})
		})
	}
}

// --- Frames ---

func TestFramesRoundTrip(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr testtree.Transport) {
		log, _ := newLogger(t)
		parent, child, _, _ := linkPair(t, tr, testHello, config(log), config(log))
		pe, ce := start(parent), start(child)

		// Sizes around the write loop's batching (64 KiB batches; payloads
		// over 32 KiB go out on their own) and over a yamux window.
		sizes := []int{0, 1, 100, 20 << 10, 32 << 10, 32<<10 + 1, 100 << 10, 1 << 20, 3 << 20}
		flags := []uint8{0, wire.FlagDead, wire.FlagReply}
		type msg struct {
			h       wire.Header
			payload []byte
		}
		build := func(dst, src uint32) []msg {
			var ms []msg
			for i, n := range sizes {
				p := make([]byte, n)
				for j := range p {
					p[j] = byte(i*31 + j)
				}
				ms = append(ms, msg{wire.Header{Flags: flags[i%3], Dst: dst, Src: src, Auth: src, Handle: 1000 + uint32(i), ReplyTo: uint32(i)}, p})
			}
			// Many small frames, which the write loop batches.
			for i := 0; i < 500; i++ {
				ms = append(ms, msg{wire.Header{Dst: dst, Src: src, Auth: 0, Handle: 5000 + uint32(i)}, []byte(fmt.Sprint(i))})
			}
			return ms
		}
		down, up := build(7, 3), build(3, 7)

		// Both directions at once.
		errs := make(chan error, 2)
		send := func(l *stream.Link, ms []msg) {
			for _, m := range ms {
				if err := l.Send(m.h, m.payload); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}
		go send(parent, down)
		go send(child, up)
		for _, m := range down {
			ce.expectFrame(t, m.h, m.payload)
		}
		for _, m := range up {
			pe.expectFrame(t, m.h, m.payload)
		}
		for i := 0; i < 2; i++ {
			if err := await(t, errs, "senders"); err != nil {
				t.Fatal(err)
			}
		}
		if parent.Err() != nil || child.Err() != nil {
			t.Fatalf("link closed: parent %v, child %v", parent.Err(), child.Err())
		}
	})
}

func TestSendTooLarge(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr testtree.Transport) {
		log, _ := newLogger(t)
		pcfg := config(log)
		pcfg.MaxMessage = 4096
		parent, child, _, _ := linkPair(t, tr, testHello, pcfg, config(log))
		pe, ce := start(parent), start(child)
		for _, l := range []*stream.Link{parent, child} {
			err := l.Send(wire.Header{Dst: 1}, make([]byte, 4097))
			var tl *wire.TooLargeError
			if !errors.As(err, &tl) || tl.Size != 4097 || tl.Max != 4096 {
				t.Fatalf("Send of 4097 bytes: %v, want *wire.TooLargeError{Size: 4097, Max: 4096}", err)
			}
			if !errors.Is(err, wire.ErrTooLarge) {
				t.Fatalf("%v does not match wire.ErrTooLarge", err)
			}
		}
		// The link is still fine, and exactly the maximum goes through.
		max := bytes.Repeat([]byte{9}, 4096)
		if err := parent.Send(wire.Header{Dst: 7, Handle: 1000}, max); err != nil {
			t.Fatal(err)
		}
		if err := child.Send(wire.Header{Dst: 3, Handle: 1001}, max); err != nil {
			t.Fatal(err)
		}
		ce.expectFrame(t, wire.Header{Dst: 7, Handle: 1000}, max)
		pe.expectFrame(t, wire.Header{Dst: 3, Handle: 1001}, max)
	})
}

// TestHostileFrame: a corrupt or oversized frame closes that link, with a
// logged reason naming the link, while another link of the same process
// keeps working. The 4 GiB header is refused from the header alone (the
// frame codec's own tests show nothing is allocated for it).
func TestHostileFrame(t *testing.T) {
	hostile := []struct {
		name   string
		edit   func(b []byte)
		tunnel bool // edit a tunnel frame's header, not a message frame's
		want   error
		max    uint32 // for ErrTooLarge: the limit named (0: the link's MaxMessage)
	}{
		{"4 GiB length", func(b []byte) { b[24], b[25], b[26], b[27] = 0xff, 0xff, 0xff, 0xff }, false, wire.ErrTooLarge, 0},
		{"bad magic", func(b []byte) { b[0], b[1] = 'X', 'X' }, false, wire.ErrBadMagic, 0},
		{"bad version", func(b []byte) { b[2] = 9 }, false, wire.ErrBadVersion, 0},
		{"unknown flags", func(b []byte) { b[3] = 0x40 }, false, wire.ErrBadFlags, 0},
		{"tunnel frame of 4 GiB", func(b []byte) { b[4], b[5], b[6], b[7] = 0xff, 0xff, 0xff, 0xff }, true, wire.ErrTooLarge, wire.MaxTunnelPayload},
		{"tunnel frame flags", func(b []byte) { b[3] = 1 }, true, wire.ErrBadFlags, 0},
		{"tunnel frame version 1", func(b []byte) { b[2] = 1 }, true, wire.ErrBadVersion, 0},
		{"raw yamux bytes", func(b []byte) { copy(b, []byte{0, 1, 0, 1, 0, 0, 0, 1}) }, true, wire.ErrBadMagic, 0},
	}
	hostileHeader := func(edit func([]byte), tunnel bool) []byte {
		if tunnel {
			b := make([]byte, wire.TunnelHeaderSize)
			wire.PutTunnelHeader(b, 12)
			edit(b)
			return b
		}
		b := make([]byte, wire.HeaderSize)
		wire.Header{Dst: 7, Src: 3, Auth: 3, Handle: wire.HandleCall}.Put(b)
		edit(b)
		return b
	}
	checkClosed := func(t *testing.T, victim *stream.Link, e *endpoint, want error, max uint32, lb *logBuf, linkKV string, peer uint32) {
		t.Helper()
		cause := await(t, e.closed, "the victim link to close")
		if !errors.Is(cause, want) {
			t.Fatalf("link closed with %v, want %v", cause, want)
		}
		if errors.Is(want, wire.ErrTooLarge) {
			if max == 0 {
				max = victim.MaxMessage()
			}
			var tl *wire.TooLargeError
			if !errors.As(cause, &tl) || tl.Size != 0xFFFFFFFF || tl.Max != max {
				t.Fatalf("cause %v, want *wire.TooLargeError{Size: 4294967295, Max: %d}", cause, max)
			}
		}
		if victim.Err() != cause {
			t.Errorf("Err() = %v, want the cause given to onClose (%v)", victim.Err(), cause)
		}
		ln, ok := lb.line("closing link: bad frame from peer", linkKV)
		if !ok {
			t.Fatalf("no log line naming %s:\n%s", linkKV, lb.String())
		}
		if !strings.Contains(ln, fmt.Sprintf("peer=%d", peer)) || !strings.Contains(ln, "[ERROR]") {
			t.Fatalf("log line does not name peer %d at ERROR: %s", peer, ln)
		}
		if n := len(e.frames); n != 0 {
			t.Fatalf("%d frames delivered after the valid one", n)
		}
	}
	// bystander opens another link in the same process before the attack.
	bystander := func(t *testing.T, tr testtree.Transport, log hclog.Logger) func() {
		hello := testHello
		hello.ID = 8
		parent, child, _, _ := linkPair(t, tr, hello, config(log), config(log))
		pe, ce := start(parent), start(child)
		return func() {
			t.Helper()
			h := wire.Header{Dst: 8, Src: 3, Auth: 3, Handle: 1000}
			if err := parent.Send(h, []byte("still here?")); err != nil {
				t.Fatalf("bystander link: %v", err)
			}
			ce.expectFrame(t, h, []byte("still here?"))
			h = wire.Header{Dst: 3, Src: 8, Auth: 8, Handle: 1000}
			if err := child.Send(h, []byte("yes")); err != nil {
				t.Fatalf("bystander link: %v", err)
			}
			pe.expectFrame(t, h, []byte("yes"))
			if parent.Err() != nil || child.Err() != nil {
				t.Fatalf("bystander link closed: %v / %v", parent.Err(), child.Err())
			}
		}
	}
	for _, hc := range hostile {
		t.Run(hc.name, func(t *testing.T) {
			t.Run("from the parent", func(t *testing.T) {
				forEachTransport(t, func(t *testing.T, tr testtree.Transport) {
					log, lb := newLogger(t)
					check := bystander(t, tr, log)
					pc, cc := pipe(t, tr)
					ach := acceptAsync(cc, config(log), 1)
					st := pc
					hello := testHello
					hello.Version, hello.MaxMessage = wire.Version, wire.DefaultMaxMessage
					writeFrame(t, st, helloHeader(hello), hello)
					var ack wire.HelloAck
					readFrame(t, st, &ack)
					a := await(t, ach, "Accept")
					if a.err != nil {
						t.Fatal(a.err)
					}
					t.Cleanup(func() { a.l.Close() })
					ce := start(a.l)

					good := wire.Header{Dst: 7, Src: 3, Auth: 3, Handle: 1000}
					writeFrame(t, st, good, "valid")
					want, _ := wire.Marshal("valid")
					ce.expectFrame(t, good, want)
					// The write may see the session end before it returns: the
					// victim reacts to the header as soon as it has it.
					_, _ = st.Write(hostileHeader(hc.edit, hc.tunnel))
					checkClosed(t, a.l, ce, hc.want, hc.max, lb, "link=parent", 3)
					awaitEOF(t, st, "the hostile parent's connection to close")
					check()
				})
			})
			t.Run("from the child", func(t *testing.T) {
				forEachTransport(t, func(t *testing.T, tr testtree.Transport) {
					log, lb := newLogger(t)
					check := bystander(t, tr, log)
					pc, cc := pipe(t, tr)
					och := openAsync(pc, testHello, config(log))
					st := cc
					hello := handChild(t, cc)
					writeFrame(t, st, wire.Header{Dst: 3, Src: 7, Auth: 7, Handle: wire.HandleHello},
						wire.HelloAck{Version: wire.Version, ID: hello.ID})
					o := await(t, och, "Open")
					if o.err != nil {
						t.Fatal(o.err)
					}
					t.Cleanup(func() { o.l.Close() })
					pe := start(o.l)

					good := wire.Header{Dst: 3, Src: 7, Auth: 7, Handle: 1000}
					writeFrame(t, st, good, "valid")
					want, _ := wire.Marshal("valid")
					pe.expectFrame(t, good, want)
					// The write may see the session end before it returns: the
					// victim reacts to the header as soon as it has it.
					_, _ = st.Write(hostileHeader(hc.edit, hc.tunnel))
					checkClosed(t, o.l, pe, hc.want, hc.max, lb, "link=7", 7)
					awaitEOF(t, st, "the hostile child's connection to close")
					check()
				})
			})
		})
	}
}

// --- Channels ---

func TestChannels(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr testtree.Transport) {
		log, _ := newLogger(t)
		parent, child, _, _ := linkPair(t, tr, testHello, config(log), config(log))
		pe, ce := start(parent), start(child)
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		for _, dir := range []struct {
			name     string
			from, to *stream.Link
		}{{"down", parent, child}, {"up", child, parent}} {
			type acc struct {
				c   io.ReadWriteCloser
				err error
			}
			ach := make(chan acc, 1)
			go func() {
				c, err := dir.to.AcceptChannel(ctx)
				ach <- acc{c, err}
			}()
			c1, err := dir.from.OpenChannel()
			if err != nil {
				t.Fatalf("%s: OpenChannel: %v", dir.name, err)
			}
			a := await(t, ach, "AcceptChannel")
			if a.err != nil {
				t.Fatalf("%s: AcceptChannel: %v", dir.name, a.err)
			}
			// Claimed: past yamux's initial 256 KiB the peer needs the
			// full window.
			dir.to.GrantWindow(a.c.(net.Conn))
			// Bulk bytes one way, an echo back, messages beside them.
			data := bytes.Repeat([]byte(dir.name), 100<<10)
			go func() {
				_, _ = c1.Write(data)
				_ = c1.Close()
			}()
			got, err := io.ReadAll(a.c)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%s: channel carried %d bytes (%v), want %d", dir.name, len(got), err, len(data))
			}
			a.c.Close()
		}
		if err := parent.Send(wire.Header{Dst: 7, Handle: 1000}, []byte("m")); err != nil {
			t.Fatal(err)
		}
		ce.expectFrame(t, wire.Header{Dst: 7, Handle: 1000}, []byte("m"))
		if err := child.Send(wire.Header{Dst: 3, Handle: 1000}, []byte("m")); err != nil {
			t.Fatal(err)
		}
		pe.expectFrame(t, wire.Header{Dst: 3, Handle: 1000}, []byte("m"))
	})
}

// --- Unblock: every blocking call returns when its link or peer goes. ---

// stalled is a link whose child never reads its message stream: the
// parent's write loop is stuck behind the child's window, its send queue is
// full, and a sender is blocked in Send.
type stalled struct {
	parent, child *stream.Link
	childConn     io.Closer
	pe            *endpoint
	sendErr       <-chan error // what the blocked Send returns
}

func stall(t *testing.T, tr testtree.Transport) *stalled {
	t.Helper()
	log, _ := newLogger(t)
	pcfg := config(log)
	pcfg.SendQueue = 1
	ccfg := config(log)
	ccfg.StreamWindow = 256 << 10 // the smallest window: the child grants no more

	pc, cc := pipe(t, tr)
	ach := acceptAsync(cc, ccfg, 1)
	parent, _, err := stream.Open(pc, testHello, pcfg)
	a := await(t, ach, "Accept")
	if err != nil || a.err != nil {
		t.Fatalf("Open: %v; Accept: %v", err, a.err)
	}
	t.Cleanup(func() { parent.Close(); a.l.Close() })
	pe := start(parent)
	// The child is never started: nothing reads its message stream.

	sent := make(chan struct{}, 64)
	result := make(chan error, 1)
	go func() {
		payload := make([]byte, 1<<20)
		for {
			if err := parent.SendWait(context.Background(), wire.Header{Dst: 7, Handle: 1000}, payload); err != nil {
				result <- err
				return
			}
			sent <- struct{}{}
		}
	}()
	// The first 1 MiB frame is stuck in the write loop behind the 256 KiB
	// window and the second fills the queue, so the third SendWait blocks.
	await(t, sent, "first Send")
	await(t, sent, "second Send")
	return &stalled{parent: parent, child: a.l, childConn: cc, pe: pe, sendErr: result}
}

// unblockers end a stalled link: from this side or from the peer's.
var unblockers = []struct {
	name  string
	local bool // the cause is ours (ErrLinkClosed) rather than the peer's
	stop  func(s *stalled)
}{
	{"local Close", true, func(s *stalled) { s.parent.Close() }},
	{"local Abort", true, func(s *stalled) { s.parent.Abort(stream.ErrLinkClosed) }},
	{"peer closes its link", false, func(s *stalled) { s.child.Close() }},
	{"peer's connection vanishes", false, func(s *stalled) { s.childConn.Close() }},
}

// checkCause checks the stalled parent closed for the unblocker's reason.
func (s *stalled) checkCause(t *testing.T, local bool) {
	t.Helper()
	cause := await(t, s.pe.closed, "onClose")
	if local != errors.Is(cause, stream.ErrLinkClosed) {
		t.Fatalf("onClose cause %v; closed locally: %v", cause, local)
	}
	if !local && !errors.Is(cause, io.EOF) {
		t.Fatalf("onClose cause %v when the peer went away, want EOF", cause)
	}
}

// TestSendUnblock: a SendWait blocked on a full queue, behind a peer that
// does not read, returns once the link is closed here or the peer goes away.
func TestSendUnblock(t *testing.T) {
	for _, tc := range unblockers {
		t.Run(tc.name, func(t *testing.T) {
			forEachTransport(t, func(t *testing.T, tr testtree.Transport) {
				s := stall(t, tr)
				tc.stop(s)
				if err := await(t, s.sendErr, "the blocked Send to return"); !errors.Is(err, stream.ErrLinkClosed) {
					t.Fatalf("blocked Send returned %v, want ErrLinkClosed", err)
				}
				s.checkCause(t, tc.local)
			})
		})
	}
}

// TestFlush: Flush returns once everything queued before it is written.
func TestFlush(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr testtree.Transport) {
		log, _ := newLogger(t)
		parent, child, _, _ := linkPair(t, tr, testHello, config(log), config(log))
		start(parent)
		ce := start(child)
		for i := 0; i < 100; i++ {
			if err := parent.Send(wire.Header{Dst: 7, Handle: 1000 + uint32(i)}, []byte("last words")); err != nil {
				t.Fatal(err)
			}
		}
		if err := parent.Flush(waitLimit); err != nil {
			t.Fatalf("Flush: %v", err)
		}
		for i := 0; i < 100; i++ {
			ce.expectFrame(t, wire.Header{Dst: 7, Handle: 1000 + uint32(i)}, []byte("last words"))
		}
	})
}

// TestFlushUnblock: a Flush stuck behind a peer that does not read returns
// at its timeout, when the link is closed here, or when the peer goes away.
func TestFlushUnblock(t *testing.T) {
	t.Run("timeout", func(t *testing.T) {
		forEachTransport(t, func(t *testing.T, tr testtree.Transport) {
			s := stall(t, tr)
			if err := s.parent.Flush(shortTimeout); err == nil || !strings.Contains(err.Error(), "timed out") {
				t.Fatalf("Flush behind a stalled peer: %v, want a timeout", err)
			}
		})
	})
	for _, tc := range unblockers {
		t.Run(tc.name, func(t *testing.T) {
			forEachTransport(t, func(t *testing.T, tr testtree.Transport) {
				s := stall(t, tr)
				flushed := make(chan error, 1)
				go func() { flushed <- s.parent.Flush(time.Hour) }()
				tc.stop(s)
				if err := await(t, flushed, "the blocked Flush to return"); !errors.Is(err, stream.ErrLinkClosed) {
					t.Fatalf("blocked Flush returned %v, want ErrLinkClosed", err)
				}
				await(t, s.sendErr, "the blocked Send to return")
				s.checkCause(t, tc.local)
			})
		})
	}
}

// TestAcceptUnblock: Accept waiting for a hello returns when the connection
// closes under it, long before its timeout.
func TestAcceptUnblock(t *testing.T) {
	for _, side := range []string{"own connection closed", "peer's connection closed"} {
		t.Run(side, func(t *testing.T) {
			forEachTransport(t, func(t *testing.T, tr testtree.Transport) {
				log, _ := newLogger(t)
				cfg := config(log)
				cfg.HelloTimeout = time.Hour
				pc, cc := pipe(t, tr)
				ach := acceptAsync(cc, cfg, 1)
				if side == "own connection closed" {
					cc.Close()
				} else {
					pc.Close()
				}
				a := await(t, ach, "Accept to return")
				if a.err == nil {
					a.l.Close()
					t.Fatal("Accept succeeded")
				}
				if !errors.Is(a.err, stream.ErrHello) || strings.Contains(a.err.Error(), "timed out") {
					t.Fatalf("Accept: %v; want ErrHello, not a timeout", a.err)
				}
			})
		})
	}
}

// TestOpenUnblock: Open waiting for the acknowledgement returns when the
// child goes away, long before its timeout.
func TestOpenUnblock(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr testtree.Transport) {
		log, _ := newLogger(t)
		cfg := config(log)
		cfg.HelloTimeout = time.Hour
		pc, cc := pipe(t, tr)
		och := openAsync(pc, testHello, cfg)
		handChild(t, cc) // Open now waits for the ack
		cc.Close()
		o := await(t, och, "Open to return")
		if o.err == nil {
			o.l.Close()
			t.Fatal("Open succeeded")
		}
		if !errors.Is(o.err, stream.ErrHello) || strings.Contains(o.err.Error(), "timed out") {
			t.Fatalf("Open: %v; want ErrHello, not a timeout", o.err)
		}
	})
}

// TestAcceptChannelUnblock: AcceptChannel returns when its context ends,
// the link is closed here, or the peer goes away.
func TestAcceptChannelUnblock(t *testing.T) {
	cases := []struct {
		name string
		stop func(cancel func(), parent, child *stream.Link)
		want error
	}{
		{"context cancelled", func(cancel func(), _, _ *stream.Link) { cancel() }, context.Canceled},
		{"local Close", func(_ func(), p, _ *stream.Link) { p.Close() }, stream.ErrLinkClosed},
		{"peer closes", func(_ func(), _, c *stream.Link) { c.Close() }, stream.ErrLinkClosed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			forEachTransport(t, func(t *testing.T, tr testtree.Transport) {
				log, _ := newLogger(t)
				parent, child, _, _ := linkPair(t, tr, testHello, config(log), config(log))
				start(parent)
				start(child)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				errc := make(chan error, 1)
				go func() {
					c, err := parent.AcceptChannel(ctx)
					if c != nil {
						c.Close()
					}
					errc <- err
				}()
				tc.stop(cancel, parent, child)
				if err := await(t, errc, "AcceptChannel to return"); !errors.Is(err, tc.want) {
					t.Fatalf("AcceptChannel: %v, want %v", err, tc.want)
				}
			})
		})
	}
}

// TestOpenChannelClosed: OpenChannel on a closed link fails with ErrLinkClosed.
func TestOpenChannelClosed(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr testtree.Transport) {
		log, _ := newLogger(t)
		parent, child, _, _ := linkPair(t, tr, testHello, config(log), config(log))
		start(parent)
		ce := start(child)
		parent.Close()
		await(t, ce.closed, "the child to see the link close")
		for name, l := range map[string]*stream.Link{"parent": parent, "child": child} {
			if c, err := l.OpenChannel(); !errors.Is(err, stream.ErrLinkClosed) {
				if c != nil {
					c.Close()
				}
				t.Errorf("%s: OpenChannel on a closed link: %v, want ErrLinkClosed", name, err)
			}
		}
	})
}

// TestOnClose: onClose runs exactly once, after the loops, with the cause;
// Done, Err and Send agree with it.
func TestOnClose(t *testing.T) {
	custom := errors.New("heartbeat timeout")
	cases := []struct {
		name string
		stop func(parent, child *stream.Link)
		want func(error) bool
	}{
		{"Close", func(p, _ *stream.Link) { p.Close() }, func(err error) bool { return errors.Is(err, stream.ErrLinkClosed) }},
		{"Abort with a cause", func(p, _ *stream.Link) { p.Abort(custom) }, func(err error) bool { return err == custom }},
		{"Abort(nil)", func(p, _ *stream.Link) { p.Abort(nil) }, func(err error) bool { return err == stream.ErrLinkClosed }},
		{"peer goes away", func(_, c *stream.Link) { c.Close() }, func(err error) bool { return errors.Is(err, io.EOF) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			forEachTransport(t, func(t *testing.T, tr testtree.Transport) {
				log, _ := newLogger(t)
				parent, child, _, _ := linkPair(t, tr, testHello, config(log), config(log))
				pe := start(parent)
				ce := start(child)
				tc.stop(parent, child)
				cause := await(t, pe.closed, "onClose")
				if !tc.want(cause) {
					t.Fatalf("onClose cause: %v", cause)
				}
				awaitClosed(t, parent.Done(), "Done")
				if parent.Err() != cause {
					t.Fatalf("Err() = %v, want %v", parent.Err(), cause)
				}
				// Closing again, either way, changes nothing.
				parent.Abort(errors.New("second cause"))
				parent.Close()
				parent.Close()
				if parent.Err() != cause {
					t.Fatalf("Err() changed to %v", parent.Err())
				}
				if err := parent.Send(wire.Header{Dst: 7}, nil); !errors.Is(err, stream.ErrLinkClosed) || (cause != stream.ErrLinkClosed && !errors.Is(err, cause)) {
					t.Fatalf("Send after close: %v, want ErrLinkClosed wrapping %v", err, cause)
				}
				// The other end closes too, once.
				await(t, ce.closed, "the other end's onClose")
				child.Close()
				if n := pe.calls.Load(); n != 1 {
					t.Fatalf("onClose called %d times", n)
				}
				if n := ce.calls.Load(); n != 1 {
					t.Fatalf("other end's onClose called %d times", n)
				}
			})
		})
	}
}

// TestAbortFromFrameHandler: a FrameHandler may close its own link.
func TestAbortFromFrameHandler(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr testtree.Transport) {
		log, _ := newLogger(t)
		parent, child, _, _ := linkPair(t, tr, testHello, config(log), config(log))
		start(parent)
		bad := errors.New("bad ADD_ROUTE payload")
		closed := make(chan error, 1)
		child.Start(func(h wire.Header, _ []byte) {
			child.Abort(bad)
		}, func(err error) { closed <- err })
		if err := parent.Send(wire.Header{Dst: 7, Handle: wire.HandleAddRoute}, []byte{0xff}); err != nil {
			t.Fatal(err)
		}
		if err := await(t, closed, "onClose"); err != bad {
			t.Fatalf("onClose cause %v, want %v", err, bad)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	if err := stream.DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig: %v", err)
	}
	d := stream.DefaultConfig()
	if d.MaxMessage != 64<<20 {
		t.Errorf("default MaxMessage %d, want 64 MiB", d.MaxMessage)
	}
	cases := []struct {
		name string
		edit func(c *stream.Config)
		text string
	}{
		{"MaxMessage 0", func(c *stream.Config) { c.MaxMessage = 0 }, "MaxMessage"},
		{"MaxMessage over 2 GiB", func(c *stream.Config) { c.MaxMessage = 1<<31 + 1 }, "MaxMessage"},
		{"HelloTimeout 0", func(c *stream.Config) { c.HelloTimeout = 0 }, "HelloTimeout"},
		{"WriteTimeout 0", func(c *stream.Config) { c.WriteTimeout = 0 }, "WriteTimeout"},
		{"StreamWindow small", func(c *stream.Config) { c.StreamWindow = 1024 }, "StreamWindow"},
		{"SendQueue 0", func(c *stream.Config) { c.SendQueue = 0 }, "SendQueue"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := stream.DefaultConfig()
			tc.edit(c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.text) || !strings.HasPrefix(err.Error(), "arbor: ") {
				t.Fatalf("Validate: %v, want an arbor error about %s", err, tc.text)
			}
			// Open and Accept refuse it too, and close the connection.
			for _, side := range []string{"Open", "Accept"} {
				pc, cc, err := testtree.IOPipe()
				if err != nil {
					t.Fatal(err)
				}
				if side == "Open" {
					_, _, err = stream.Open(pc, testHello, c)
				} else {
					_, _, err = stream.Accept(pc, c, 1)
				}
				if err == nil || !strings.Contains(err.Error(), tc.text) {
					t.Fatalf("%s: %v", side, err)
				}
				// pc was closed: the other end reads EOF at once.
				if _, err := cc.Read(make([]byte, 1)); err != io.EOF {
					t.Fatalf("%s left the connection open: read %v", side, err)
				}
				cc.Close()
			}
		})
	}
}

// TestSendNeverBlocks: behind a peer that does not read, Send refuses at
// once with ErrQueueFull (a read loop that forwards must never wait), while
// SendWait gives up when its context ends.
func TestSendNeverBlocks(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr testtree.Transport) {
		s := stall(t, tr)
		err := s.parent.Send(wire.Header{Dst: 7, Handle: 1000}, []byte("x"))
		if !errors.Is(err, stream.ErrQueueFull) {
			t.Fatalf("Send on a full queue: %v, want ErrQueueFull", err)
		}
		var qf *stream.QueueFullError
		if !errors.As(err, &qf) || qf.Peer != testHello.ID || !strings.Contains(err.Error(), "congested") {
			t.Fatalf("Send on a full queue: %v, want a *QueueFullError naming node %d", err, testHello.ID)
		}
		if s.parent.QueueFull() == 0 {
			t.Fatal("QueueFull did not count the refused frame")
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.parent.SendWait(ctx, wire.Header{Dst: 7, Handle: 1000}, []byte("x")) }()
		cancel()
		if err := await(t, done, "SendWait to give up"); !errors.Is(err, context.Canceled) {
			t.Fatalf("SendWait after cancel: %v, want context.Canceled", err)
		}
	})
}

// TestUrgentOvertakesData: a heartbeat queued after data frames is written
// before the data frames still waiting, while control frames keep their
// place among the data (a DEL_ROUTE must not overtake the last messages of
// the node it withdraws).
func TestUrgentOvertakesData(t *testing.T) {
	log, _ := newLogger(t)
	pcfg := config(log)
	pcfg.SendQueue = 64
	ccfg := config(log)
	ccfg.StreamWindow = 256 << 10
	pc, cc := pipe(t, testtree.Transports[0])
	ach := acceptAsync(cc, ccfg, 1)
	parent, _, err := stream.Open(pc, testHello, pcfg)
	a := await(t, ach, "Accept")
	if err != nil || a.err != nil {
		t.Fatalf("Open: %v; Accept: %v", err, a.err)
	}
	t.Cleanup(func() { parent.Close(); a.l.Close() })
	start(parent)
	// 1 MiB frames: the first waits behind the child's 256 KiB window, the
	// rest wait in the queue until the child starts reading.
	big := make([]byte, 1<<20)
	send := func(h uint32) {
		if err := parent.Send(wire.Header{Dst: 7, Handle: h}, big); err != nil {
			t.Fatal(err)
		}
	}
	send(2000)
	send(2001)
	if err := parent.SendControl(wire.Header{Dst: 7, Handle: wire.HandleDelRoute}, nil); err != nil {
		t.Fatal(err)
	}
	send(2002)
	send(2003)
	if err := parent.SendUrgent(wire.Header{Dst: 7, Handle: wire.HandlePing}, nil); err != nil {
		t.Fatal(err)
	}
	ce := start(a.l)
	var order []uint32
	for len(order) < 6 {
		f := await(t, ce.frames, "a frame")
		order = append(order, f.h.Handle)
	}
	ping := slices.Index(order, wire.HandlePing)
	if ping < 0 || ping > 2 {
		t.Fatalf("frames arrived in order %v: the heartbeat waited behind queued data", order)
	}
	rest := slices.DeleteFunc(slices.Clone(order), func(h uint32) bool { return h == wire.HandlePing })
	if want := []uint32{2000, 2001, wire.HandleDelRoute, 2002, 2003}; !slices.Equal(rest, want) {
		t.Fatalf("data and control arrived in order %v, want %v", rest, want)
	}
}

// TestControlQueueOverflow: control frames are taken beyond the data bound
// (a congested link still carries route updates and answers), up to the
// reserve; past it they are refused too, and the link stays up: whoever
// fills the reserve must not be able to cut the link for everyone.
func TestControlQueueOverflow(t *testing.T) {
	s := stall(t, testtree.Transports[0])
	if err := s.parent.Send(wire.Header{Dst: 7, Handle: 1000}, nil); !errors.Is(err, stream.ErrQueueFull) {
		t.Fatalf("data Send on the stalled link: %v, want ErrQueueFull", err)
	}
	// The write loop may hold a first batch of control frames before it
	// blocks behind the window: allow for a queue's worth more.
	var err error
	sent := 0
	for ; sent <= 2*stream.DefaultControlReserve && err == nil; sent++ {
		err = s.parent.SendControl(wire.Header{Dst: 7, Handle: wire.HandleDelRoute}, nil)
	}
	if !errors.Is(err, stream.ErrQueueFull) || sent < stream.DefaultControlReserve {
		t.Fatalf("SendControl refused after %d frames with %v, want ErrQueueFull past the %d-frame reserve", sent, err, stream.DefaultControlReserve)
	}
	select {
	case <-s.parent.Done():
		t.Fatalf("the link closed: %v", s.parent.Err())
	default:
	}
}
