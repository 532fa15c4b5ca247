package stream_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"testing"

	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
	"golang.org/x/sys/unix"
)

// sizedPipes is the parent's end of two kernel pipes, as spawn's
// connection to a child is: it may change their capacity.
type sizedPipes struct {
	r, w *os.File
}

func (p *sizedPipes) Read(b []byte) (int, error)  { return p.r.Read(b) }
func (p *sizedPipes) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p *sizedPipes) Close() error {
	p.r.Close()
	return p.w.Close()
}

// SetPipeSize sizes the pipes as spawn's connection does: through the
// runtime's hold on the descriptor, so a Close racing it is safe.
func (p *sizedPipes) SetPipeSize(n int) error {
	for _, f := range []*os.File{p.r, p.w} {
		rc, err := f.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := rc.Control(func(fd uintptr) { _, serr = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, n) }); err != nil {
			return err
		}
		if serr != nil {
			return serr
		}
	}
	return nil
}

// size is the capacity of both pipes; -1 when they differ.
func (p *sizedPipes) size(t *testing.T) int {
	t.Helper()
	var got []int
	for _, f := range []*os.File{p.r, p.w} {
		n, err := unix.FcntlInt(f.Fd(), unix.F_GETPIPE_SZ, 0)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, n)
	}
	if got[0] != got[1] {
		return -1
	}
	return got[0]
}

type plainPipes struct{ r, w *os.File }

func (p *plainPipes) Read(b []byte) (int, error)  { return p.r.Read(b) }
func (p *plainPipes) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p *plainPipes) Close() error {
	p.r.Close()
	return p.w.Close()
}

// pipeEnds makes two kernel pipes: the parent reads pr and writes pw,
// the child reads cr and writes cw.
func pipeEnds(t *testing.T) (pr, pw, cr, cw *os.File) {
	t.Helper()
	cr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	pr, cw, err = os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	return pr, pw, cr, cw
}

// openLink opens a link over pconn (the parent's end) and cconn, neither
// end started; both close when the test ends.
func openLink(t *testing.T, pconn, cconn io.ReadWriteCloser) (parent, child *stream.Link) {
	t.Helper()
	log, _ := newLogger(t)
	ach := acceptAsync(cconn, config(log), 1)
	parent, _, err := stream.Open(pconn, testHello, config(log))
	a := await(t, ach, "Accept")
	if err != nil || a.err != nil {
		t.Fatalf("Open: %v; Accept: %v", err, a.err)
	}
	t.Cleanup(func() {
		parent.Close()
		a.l.Close()
	})
	return parent, a.l
}

// sizedLink opens and starts a link over two fresh kernel pipes whose
// parent end may size them.
func sizedLink(t *testing.T) (parent, child *stream.Link, pipes *sizedPipes) {
	t.Helper()
	pr, pw, cr, cw := pipeEnds(t)
	pipes = &sizedPipes{r: pr, w: pw}
	parent, child = openLink(t, pipes, &plainPipes{r: cr, w: cw})
	start(parent)
	start(child)
	return parent, child, pipes
}

// bulk opens a channel from the parent, moves n bytes down it and
// returns both ends, still open.
func bulk(t *testing.T, parent, child *stream.Link, n int) (out, in net.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	type acc struct {
		c   net.Conn
		err error
	}
	ach := make(chan acc, 1)
	go func() {
		c, err := child.AcceptChannel(ctx)
		ach <- acc{c, err}
	}()
	out, err := parent.OpenChannel()
	if err != nil {
		t.Fatal(err)
	}
	a := await(t, ach, "AcceptChannel")
	if a.err != nil {
		t.Fatal(a.err)
	}
	child.GrantWindow(a.c)
	data := bytes.Repeat([]byte("bulk"), n/4)
	werr := make(chan error, 1)
	go func() {
		_, err := out.Write(data)
		werr <- err
	}()
	got := make([]byte, len(data))
	if _, err := io.ReadFull(a.c, got); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("channel carried wrong bytes (%v)", err)
	}
	if err := await(t, werr, "channel write"); err != nil {
		t.Fatal(err)
	}
	return out, a.c
}

// TestPipesGrowWhileBulk: a link's pipes grow to 1 MiB while a channel
// carries bulk data and go back to 64 KiB when the last channel ends;
// small messages never grow them.
func TestPipesGrowWhileBulk(t *testing.T) {
	parent, child, pipes := sizedLink(t)
	if got := pipes.size(t); got != 64<<10 {
		t.Fatalf("new link: pipes hold %d bytes, want the default 65536", got)
	}
	out, in := bulk(t, parent, child, 16<<10)
	if got := pipes.size(t); got != 64<<10 {
		t.Fatalf("after 16 KiB on a channel: pipes hold %d bytes, want 65536 (not bulk yet)", got)
	}
	out.Close()
	in.Close()
	out, in = bulk(t, parent, child, 4<<20)
	if got := pipes.size(t); got != 1<<20 {
		t.Fatalf("while 4 MiB move on a channel: pipes hold %d bytes, want 1048576", got)
	}
	out.Close()
	in.Close()
	eventually(t, func() bool { return pipes.size(t) == 64<<10 }, "pipes back to 64 KiB once the channel ended")
}

// TestPipesGrowWithinBudget: of ten links moving bulk data at once, eight
// grow their pipes; a link that closes frees its place.
func TestPipesGrowWithinBudget(t *testing.T) {
	type lk struct {
		parent, child *stream.Link
		pipes         *sizedPipes
	}
	var links []lk
	for range 10 {
		p, c, pp := sizedLink(t)
		links = append(links, lk{p, c, pp})
		bulk(t, p, c, 1<<20) // channels left open
	}
	grown := func() (n int) {
		for _, l := range links {
			if l.pipes.size(t) == 1<<20 {
				n++
			}
		}
		return n
	}
	if n := grown(); n != 8 {
		t.Fatalf("%d links grew their pipes, want 8", n)
	}
	// Closing a grown link frees its place: the next bulk link grows.
	for i, l := range links {
		if l.pipes.size(t) == 1<<20 {
			l.parent.Close()
			links = append(links[:i], links[i+1:]...)
			break
		}
	}
	p, c, pp := sizedLink(t)
	links = append(links, lk{p, c, pp})
	bulk(t, p, c, 1<<20)
	if got := pp.size(t); got != 1<<20 {
		t.Fatalf("a link after one closed: pipes hold %d bytes, want 1048576", got)
	}
	for _, l := range links {
		l.parent.Close()
		l.child.Close()
	}
	// All closed: all places free again.
	p, c, pp = sizedLink(t)
	bulk(t, p, c, 1<<20)
	if got := pp.size(t); got != 1<<20 {
		t.Fatalf("after every link closed: pipes hold %d bytes, want 1048576", got)
	}
}

// TestPipesShrinkAfterLastBytes: when the last channel ends while the
// pipe still holds its bytes (the peer's read loop is busy), the pipes
// cannot shrink at once; they do once the peer has read them, and the
// link's place among the grown links is free again.
func TestPipesShrinkAfterLastBytes(t *testing.T) {
	pr, pw, cr, cw := pipeEnds(t)
	pipes := &sizedPipes{r: pr, w: pw}
	parent, child := openLink(t, pipes, &plainPipes{r: cr, w: cw})
	start(parent)
	busy := make(chan struct{})
	child.Start(func(h wire.Header, _ []byte) {
		if h.Handle == 999 {
			<-busy // the read loop stops here
		}
	}, nil)
	out, in := bulk(t, parent, child, 1<<20) // grown
	in.Close()                               // the child's side ends first
	if err := parent.Send(wire.Header{Dst: 7, Handle: 999}, nil); err != nil {
		t.Fatal(err)
	}
	// 512 KiB the child cannot read yet, then the parent's end: the last
	// channel ends with the bytes still in the pipe.
	if _, err := out.Write(bytes.Repeat([]byte("x"), 512<<10)); err != nil {
		t.Fatal(err)
	}
	out.Close()
	eventually(t, func() bool {
		in, outN := parent.Channels()
		return in+outN == 0
	}, "the parent to see its last channel end")
	if got := pipes.size(t); got != -1 && got != 1<<20 {
		t.Fatalf("with 512 KiB unread: pipes hold %d bytes, want still grown", got)
	}
	close(busy)
	eventually(t, func() bool { return pipes.size(t) == 64<<10 }, "pipes back to 64 KiB once the child read the last bytes")
}
