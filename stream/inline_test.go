package stream_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/arbor-project/arbor/internal/testtree"
	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
	"golang.org/x/sys/unix"
)

var osPipe = testtree.Transport{Name: "os.Pipe", Pair: testtree.OSPipe}

// TestDirectWrites: on an idle link over pipes, a direct send goes out on
// the sender's own write; a frame over PIPE_BUF, a plain Send, and any
// link without a pipe (io.Pipe, a socket) use the write loop. Every frame
// arrives either way.
func TestDirectWrites(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr testtree.Transport) {
		log, _ := newLogger(t)
		parent, child, _, _ := linkPair(t, tr, testHello, config(log), config(log))
		_, ce := start(parent), start(child)
		ctx := context.Background()
		small, big := []byte("ping"), make([]byte, 5000)
		h := wire.Header{Dst: 7, Handle: 1000}
		if err := parent.SendWaitDirect(ctx, h, small); err != nil {
			t.Fatal(err)
		}
		ce.expectFrame(t, h, small)
		if err := parent.SendControlDirect(h, small); err != nil {
			t.Fatal(err)
		}
		ce.expectFrame(t, h, small)
		if err := parent.SendDirect(h, small); err != nil {
			t.Fatal(err)
		}
		ce.expectFrame(t, h, small)
		want := uint64(0)
		if tr.Name == "os.Pipe" {
			want = 3
		}
		if got := parent.DirectFrames(); got != want {
			t.Fatalf("%d frames written directly, want %d", got, want)
		}
		if err := parent.SendWaitDirect(ctx, h, big); err != nil {
			t.Fatal(err)
		}
		ce.expectFrame(t, h, big)
		if err := parent.Send(h, small); err != nil {
			t.Fatal(err)
		}
		ce.expectFrame(t, h, small)
		if got := parent.DirectFrames(); got != want {
			t.Fatalf("after a big frame and a Send: %d frames written directly, want still %d", got, want)
		}
	})
}

// TestDirectWritesKeepOrder: senders mixing direct sends, queued sends
// and big frames, all at once, on a link over pipes, pausing now and then
// so the link goes idle and direct writes happen among queued ones: every
// frame arrives, and each sender's frames arrive in the order it sent
// them.
func TestDirectWritesKeepOrder(t *testing.T) {
	log, _ := newLogger(t)
	parent, child, _, _ := linkPair(t, osPipe, testHello, config(log), config(log))
	start(parent)
	const senders, each = 8, 2000
	got := make(chan gotFrame, senders*each)
	child.Start(func(h wire.Header, payload []byte) { got <- gotFrame{h, payload} }, nil)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				p := make([]byte, 8)
				if i%97 == 0 {
					p = make([]byte, 6000) // past PIPE_BUF: the write loop
				}
				if i%16 == 0 {
					time.Sleep(50 * time.Microsecond)
				}
				binary.BigEndian.PutUint32(p, uint32(s))
				binary.BigEndian.PutUint32(p[4:], uint32(i))
				h := wire.Header{Dst: 7, Handle: 1000}
				var err error
				for {
					switch i % 4 {
					case 0:
						err = parent.SendWaitDirect(ctx, h, p)
					case 1:
						err = parent.SendDirect(h, p)
					case 2:
						err = parent.SendWait(ctx, h, p)
					default:
						err = parent.SendControlDirect(h, p)
					}
					if !errors.Is(err, stream.ErrQueueFull) {
						break
					}
					time.Sleep(time.Millisecond) // refused, not sent: again
				}
				if err != nil {
					errs <- fmt.Errorf("sender %d frame %d: %w", s, i, err)
					return
				}
			}
		}()
	}
	next := make([]uint32, senders)
	for range senders * each {
		f := await(t, got, "frame")
		s, i := binary.BigEndian.Uint32(f.payload), binary.BigEndian.Uint32(f.payload[4:])
		if i != next[s] {
			t.Fatalf("sender %d: frame %d arrived when %d was due", s, i, next[s])
		}
		next[s]++
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d of %d frames written directly", parent.DirectFrames(), senders*each)
}

// TestDirectWriteFullPipe: when the peer stops reading and the pipe is
// full, a direct send neither blocks nor writes part of a frame: it
// queues, and everything arrives in order once the peer reads again.
func TestDirectWriteFullPipe(t *testing.T) {
	log, _ := newLogger(t)
	pcfg := config(log)
	pcfg.SendQueue = 100000 // the frames past the pipe wait here
	parent, child, _, _ := linkPair(t, osPipe, testHello, pcfg, config(log))
	start(parent)
	gate := make(chan struct{})
	got := make(chan gotFrame, 100000)
	child.Start(func(h wire.Header, payload []byte) {
		<-gate
		got <- gotFrame{h, payload}
	}, nil)
	ctx := context.Background()
	h := wire.Header{Dst: 7, Handle: 1000}
	const n = 20000 // 20000 x 32 bytes: far past a 64 KiB pipe
	for i := range n {
		p := make([]byte, 8)
		binary.BigEndian.PutUint64(p, uint64(i))
		if err := parent.SendWaitDirect(ctx, h, p); err != nil {
			t.Fatal(err)
		}
	}
	close(gate)
	for i := range n {
		f := await(t, got, "frame")
		if v := binary.BigEndian.Uint64(f.payload); v != uint64(i) {
			t.Fatalf("frame %d arrived as %d", i, v)
		}
	}
	if parent.DirectFrames() == 0 || parent.DirectFrames() == n {
		t.Fatalf("%d of %d frames written directly: want some (the pipe had room), not all (it filled)", parent.DirectFrames(), n)
	}
}

// blockingPipes is the parent's end of two pipes whose write end is in
// blocking mode, which a direct write must not use: write(2) to it could
// wait on a full pipe.
type blockingPipes struct{ sizedPipes }

func (p *blockingPipes) PipeWriteConn() (syscall.RawConn, error) { return p.w.SyscallConn() }

// TestNoDirectWritesOnBlockingPipe: a connection whose pipe is in
// blocking mode gets no direct writes; its frames still arrive.
func TestNoDirectWritesOnBlockingPipe(t *testing.T) {
	pr, pw, cr, cw := pipeEnds(t)
	rc, err := pw.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	rc.Control(func(fd uintptr) { unix.SetNonblock(int(fd), false) })
	parent, child := openLink(t, &blockingPipes{sizedPipes{r: pr, w: pw}}, &plainPipes{r: cr, w: cw})
	start(parent)
	ce := start(child)
	h := wire.Header{Dst: 7, Handle: 1000}
	if err := parent.SendWaitDirect(context.Background(), h, []byte("x")); err != nil {
		t.Fatal(err)
	}
	ce.expectFrame(t, h, []byte("x"))
	if n := parent.DirectFrames(); n != 0 {
		t.Fatalf("%d frames written directly to a blocking pipe", n)
	}
}

// TestDirectWriteHappensBefore: what a sender wrote before a direct send
// is seen by the peer's handler as happening before it, for the race
// detector too (which knows of os.File's reads and writes, and must know
// of a direct write): run with -race, this fails if the direct write is
// invisible to it.
func TestDirectWriteHappensBefore(t *testing.T) {
	log, _ := newLogger(t)
	parent, child, _, _ := linkPair(t, osPipe, testHello, config(log), config(log))
	start(parent)
	shared := 0
	seen := make(chan int, 1)
	child.Start(func(wire.Header, []byte) { seen <- shared }, nil)
	shared = 42
	if err := parent.SendWaitDirect(context.Background(), wire.Header{Dst: 7, Handle: 1000}, nil); err != nil {
		t.Fatal(err)
	}
	if got := await(t, seen, "frame"); got != 42 {
		t.Fatalf("handler saw %d", got)
	}
	if parent.DirectFrames() != 1 {
		t.Fatalf("%d frames written directly, want 1", parent.DirectFrames())
	}
}
