package stream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/arbor-project/arbor/internal/errs"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/yamux"
)

// FrameHandler receives each frame read from a link, on the link's read
// loop. It must not block for long: the next frame waits for it. It owns
// payload.
type FrameHandler func(h wire.Header, payload []byte)

// Link is one parent–child connection: a yamux session whose first stream
// carries routed frames. It is safe for concurrent use.
type Link struct {
	cfg  *Config
	log  hclog.Logger
	sess *yamux.Session
	msgs *yamux.Stream
	conn io.ReadWriteCloser

	// peerID is the node at the other end; hello is what the parent sent.
	peerID uint32
	hello  wire.Hello

	// q is the outbound queue the write loop drains (queue.go).
	q *sendQueue
	// full counts data frames refused because the queue was full.
	full atomic.Uint64
	// inFrames and inBytes count the frames and bytes the read loop has
	// read: the heartbeat's evidence of life. Counters, not clock reads,
	// on the hot path.
	inFrames atomic.Uint64
	inBytes  atomic.Uint64
	// outBytes counts the bytes written; urgentAt is when heartbeat
	// frames were last written (unix nanoseconds).
	outBytes atomic.Uint64
	urgentAt atomic.Int64

	closeOnce   sync.Once
	done        chan struct{}
	errMu       sync.Mutex
	err         error
	loops       sync.WaitGroup
	startMu     sync.Mutex // guards started and closedEarly: Start's Add never races Close's Wait
	started     bool
	closedEarly bool // Close ran before Start
}

type outFrame struct {
	h       wire.Header
	payload []byte
	// flushed, when set, marks a Flush: the write loop closes it once
	// everything queued before it has been written.
	flushed chan struct{}
}

// Open opens a link as the parent: it starts a yamux session on conn, sends
// hello on the message stream and waits (at most HelloTimeout) for the
// child's acknowledgement. On failure conn is closed.
func Open(conn io.ReadWriteCloser, hello wire.Hello, cfg *Config) (*Link, wire.HelloAck, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		conn.Close()
		return nil, wire.HelloAck{}, err
	}
	hello.Version = wire.Version
	if hello.MaxMessage == 0 {
		hello.MaxMessage = c.MaxMessage
	}
	if hello.MaxMessage > 1<<31 {
		conn.Close()
		return nil, wire.HelloAck{}, fmt.Errorf("%w with node %d (%s): max message %d exceeds 2 GiB",
			ErrHello, hello.ID, hello.Name, hello.MaxMessage)
	}
	// The limit in the hello is the link's limit at both ends: the child
	// adopts it, so the parent must read and send by it too.
	c.MaxMessage = hello.MaxMessage
	log := c.Logger.With("link", hello.ID)
	sess, err := yamux.Client(joinFrames(conn), c.yamuxConfig(log))
	if err != nil {
		conn.Close()
		return nil, wire.HelloAck{}, fmt.Errorf("arbor: link to %d: %w", hello.ID, err)
	}
	fail := func(err error) (*Link, wire.HelloAck, error) {
		sess.Close()
		conn.Close()
		return nil, wire.HelloAck{}, &errs.Kind{Kind: ErrHello, Context: fmt.Sprintf(" with node %d (%s)", hello.ID, hello.Name), Cause: err}
	}
	// The deadline is taken before the stream is opened: yamux's own
	// stream-open timeout (also HelloTimeout) then cannot expire before it.
	deadline := time.Now().Add(c.HelloTimeout)
	msgs, err := sess.OpenStream()
	if err != nil {
		return fail(ioErr(err, deadline))
	}
	_ = msgs.SetDeadline(deadline)
	body, err := wire.Marshal(hello)
	if err != nil {
		return fail(err)
	}
	h := wire.Header{Dst: hello.ID, Src: hello.ParentID, Auth: hello.ParentID, Handle: wire.HandleHello}
	if _, err := msgs.Write(wire.AppendFrame(nil, h, body)); err != nil {
		return fail(ioErr(err, deadline))
	}
	var ack wire.HelloAck
	if err := readHelloFrame(msgs, c.MaxMessage, &ack, deadline); err != nil {
		return fail(err)
	}
	if ack.Version != wire.Version || ack.ID != hello.ID {
		return fail(fmt.Errorf("child answered version %d id %d, want version %d id %d",
			ack.Version, ack.ID, wire.Version, hello.ID))
	}
	_ = msgs.SetDeadline(time.Time{})
	l := newLink(c, log, conn, sess, msgs, hello.ID, hello)
	return l, ack, nil
}

// Accept opens a link as the child: it waits (at most HelloTimeout) for the
// parent's hello, adopts the limits it carries, and acknowledges it. pid is
// reported to the parent in the acknowledgement.
func Accept(conn io.ReadWriteCloser, cfg *Config, pid int) (*Link, wire.Hello, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		conn.Close()
		return nil, wire.Hello{}, err
	}
	sess, err := yamux.Server(joinFrames(conn), c.yamuxConfig(c.Logger.With("link", "parent")))
	if err != nil {
		conn.Close()
		return nil, wire.Hello{}, fmt.Errorf("arbor: link to parent: %w", err)
	}
	fail := func(err error) (*Link, wire.Hello, error) {
		sess.Close()
		conn.Close()
		return nil, wire.Hello{}, &errs.Kind{Kind: ErrHello, Context: " with parent", Cause: err}
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.HelloTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	msgs, err := sess.AcceptStreamWithContext(ctx)
	if err != nil {
		return fail(ioErr(err, deadline))
	}
	_ = msgs.SetDeadline(deadline)
	var hello wire.Hello
	if err := readHelloFrame(msgs, c.MaxMessage, &hello, deadline); err != nil {
		return fail(err)
	}
	if hello.Version != wire.Version {
		return fail(fmt.Errorf("%w: parent speaks %d, this node %d", wire.ErrBadVersion, hello.Version, wire.Version))
	}
	if hello.MaxMessage == 0 || hello.MaxMessage > 1<<31 {
		return fail(fmt.Errorf("parent sent max message %d", hello.MaxMessage))
	}
	c.MaxMessage = hello.MaxMessage // inherited from the parent
	body, err := wire.Marshal(wire.HelloAck{Version: wire.Version, ID: hello.ID, PID: pid})
	if err != nil {
		return fail(err)
	}
	h := wire.Header{Dst: hello.ParentID, Src: hello.ID, Auth: hello.ID, Handle: wire.HandleHello}
	if _, err := msgs.Write(wire.AppendFrame(nil, h, body)); err != nil {
		return fail(ioErr(err, deadline))
	}
	_ = msgs.SetDeadline(time.Time{})
	l := newLink(c, c.Logger.With("link", "parent"), conn, sess, msgs, hello.ParentID, hello)
	return l, hello, nil
}

func readHelloFrame(r io.Reader, max uint32, v any, deadline time.Time) error {
	var hb [wire.HeaderSize]byte
	h, payload, err := wire.ReadFrame(r, hb[:], max)
	if err != nil {
		return ioErr(err, deadline)
	}
	if h.Handle != wire.HandleHello {
		return fmt.Errorf("first frame has handle %d, want HELLO", h.Handle)
	}
	return wire.Unmarshal(payload, v)
}

// ioErr reports an I/O failure of the hello exchange as ErrConnectTimeout
// when it is a timeout, or when the hello deadline has passed: yamux
// reports its own stream-open timeout, which closes the session, as EOF.
func ioErr(err error, deadline time.Time) error {
	timedOut := errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, yamux.ErrTimeout) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, yamux.ErrConnectionWriteTimeout)
	if timedOut || (!isProtocolError(err) && !time.Now().Before(deadline)) {
		return fmt.Errorf("%w: %w", ErrConnectTimeout, err)
	}
	return err
}

func newLink(c *Config, log hclog.Logger, conn io.ReadWriteCloser, sess *yamux.Session, msgs *yamux.Stream, peer uint32, hello wire.Hello) *Link {
	l := &Link{
		cfg:    c,
		log:    log,
		conn:   conn,
		sess:   sess,
		msgs:   msgs,
		peerID: peer,
		hello:  hello,
		q:      newSendQueue(c.SendQueue, c.ControlReserve),
		done:   make(chan struct{}),
	}
	return l
}

// InboundFrames is how many frames have arrived from the peer.
func (l *Link) InboundFrames() uint64 { return l.inFrames.Load() }

// OutboundBytes is how many bytes of frames have been written to the peer.
// Past the peer's window, bytes that move mean the peer is reading.
func (l *Link) OutboundBytes() uint64 { return l.outBytes.Load() }

// UrgentWritten is when heartbeat frames were last written to the peer
// (zero: never). A probe queued after it has not left yet: it waits behind
// a big payload still going out.
func (l *Link) UrgentWritten() time.Time {
	if ns := l.urgentAt.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// InboundBytes is how many bytes of frames have arrived from the peer.
// Bytes that move while the frame count does not are a frame still
// arriving: a big payload on a slow hop, which holds up every frame
// behind it, a heartbeat's answer too.
func (l *Link) InboundBytes() uint64 { return l.inBytes.Load() }

// countingReader counts what it reads into n.
type countingReader struct {
	r io.Reader
	n *atomic.Uint64
}

func (c countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n.Add(uint64(k))
	return k, err
}

// PeerID is the node ID at the other end of the link.
func (l *Link) PeerID() uint32 { return l.peerID }

// Hello is the hello this link was opened with.
func (l *Link) Hello() wire.Hello { return l.hello }

// MaxMessage is the largest payload this link carries.
func (l *Link) MaxMessage() uint32 { return l.cfg.MaxMessage }

// Logger is the link's logger.
func (l *Link) Logger() hclog.Logger { return l.log }

// Start runs the read and write loops. onFrame is called for every frame
// read; onClose is called once, after both loops have ended, with the
// reason the link closed. Start must be called exactly once. On a link
// that Close has already closed it starts no loops and calls onClose
// before it returns.
func (l *Link) Start(onFrame FrameHandler, onClose func(error)) {
	l.startMu.Lock()
	if l.started {
		l.startMu.Unlock()
		panic("arbor: Link.Start called twice") // programming error, not input
	}
	l.started = true
	if l.closedEarly {
		// Close ran first and did not wait for loops: start none.
		l.startMu.Unlock()
		if onClose != nil {
			onClose(l.Err())
		}
		return
	}
	l.loops.Add(2)
	l.startMu.Unlock()
	go l.writeLoop()
	go func() {
		l.readLoop(onFrame)
		l.loops.Wait()
		if onClose != nil {
			onClose(l.Err())
		}
	}()
	go func() {
		// The yamux session ending (peer gone, write timeout) ends the link.
		select {
		case <-l.sess.CloseChan():
			l.Abort(fmt.Errorf("%w: session ended", io.EOF))
		case <-l.done:
		}
	}()
}

// Send queues a data frame for the write loop without blocking (see the
// send rule in queue.go). It returns an error matching ErrQueueFull when
// the queue is full, ErrLinkClosed once the link has closed, and a
// *wire.TooLargeError for a payload over MaxMessage. The link owns payload
// once Send returns nil.
func (l *Link) Send(h wire.Header, payload []byte) error {
	return l.put(h, payload, classData)
}

// SendWait queues a data frame like Send, but while the queue is full it
// blocks until there is room, ctx ends or the link closes. It must not be
// called from a FrameHandler.
func (l *Link) SendWait(ctx context.Context, h wire.Header, payload []byte) error {
	if err := l.check(&h, payload); err != nil {
		return err
	}
	if err := l.q.putWait(ctx, l.done, outFrame{h: h, payload: payload}); err != nil {
		if errors.Is(err, ErrLinkClosed) {
			return l.closedErr()
		}
		return err
	}
	return nil
}

// SendControl queues a control frame (reply, dead reply, route update,
// node state, cancel, shutdown) without blocking, in order with data but
// admitted beyond the data bound, into a reserve of Config.ControlReserve frames;
// past that it is refused like a data frame (ErrQueueFull).
func (l *Link) SendControl(h wire.Header, payload []byte) error {
	return l.put(h, payload, classControl)
}

// SendUrgent queues a heartbeat frame ahead of everything queued, without
// blocking; past Config.ControlReserve waiting it is refused (ErrQueueFull).
func (l *Link) SendUrgent(h wire.Header, payload []byte) error {
	return l.put(h, payload, classUrgent)
}

func (l *Link) put(h wire.Header, payload []byte, c frameClass) error {
	if err := l.check(&h, payload); err != nil {
		return err
	}
	if held, ok := l.q.put(outFrame{h: h, payload: payload}, c); !ok {
		l.full.Add(1)
		return &QueueFullError{Peer: l.peerID, Frames: held}
	}
	return nil
}

// QueueFull counts the frames refused because the queue was full.
func (l *Link) QueueFull() uint64 { return l.full.Load() }

// check refuses what can never be sent and fills in the length.
func (l *Link) check(h *wire.Header, payload []byte) error {
	if uint64(len(payload)) > uint64(l.cfg.MaxMessage) {
		return &wire.TooLargeError{Size: uint64(len(payload)), Max: l.cfg.MaxMessage}
	}
	h.Length = uint32(len(payload))
	select {
	case <-l.done:
		return l.closedErr()
	default:
		return nil
	}
}

func (l *Link) closedErr() error {
	if err := l.Err(); err != nil {
		return &errs.Kind{Kind: ErrLinkClosed, Cause: err}
	}
	return ErrLinkClosed
}

const (
	// batchBytes is the most the write loop joins into one write.
	batchBytes = 64 << 10
	// writeChunk is the most one write to the message stream carries.
	writeChunk = 64 << 10
	// readBufSize buffers the read loop: enough for many small frames per
	// read of the message stream; a larger payload bypasses it.
	readBufSize = 16 << 10
)

func (l *Link) writeLoop() {
	defer l.loops.Done()
	// The batch buffer starts small and grows (to about batchBytes) only
	// on a link that is busy: most links of a large tree are idle.
	var buf []byte
	var batch []outFrame
	for {
		select {
		case <-l.q.ready:
		case <-l.done:
			return
		}
		for {
			batch = l.q.take(batch[:0])
			if len(batch) == 0 && l.q.nurgent.Load() == 0 {
				break
			}
			buf = buf[:0]
			var err error
			for _, f := range batch {
				if buf, err = l.writeFrame(buf, f); err != nil {
					return
				}
				if len(buf) >= batchBytes {
					if buf, err = l.writeBatch(buf); err != nil {
						return
					}
				}
			}
			clear(batch)
			if _, err := l.writeBatch(buf); err != nil {
				return
			}
		}
	}
}

// writeBatch writes the frames in buf, with every heartbeat queued since
// the batch was taken in front of them: an answer to a probe waits for at
// most one batch (batchBytes) or one big payload, never a whole queue.
func (l *Link) writeBatch(buf []byte) ([]byte, error) {
	if l.q.nurgent.Load() > 0 {
		urgent := l.q.takeUrgent(nil)
		var front []byte
		for _, u := range urgent {
			front = wire.AppendFrame(front, u.h, u.payload)
		}
		buf = append(front, buf...)
		defer l.urgentAt.Store(time.Now().UnixNano())
	}
	return buf[:0], l.write(buf)
}

// writeFrame adds f to the batch in buf, or writes it (and the batch) at
// once when f is a flush marker or a big payload.
func (l *Link) writeFrame(buf []byte, f outFrame) ([]byte, error) {
	switch {
	case f.flushed != nil:
		buf, err := l.writeBatch(buf)
		if err == nil {
			close(f.flushed)
		}
		return buf, err
	case len(f.payload) > batchBytes/2:
		// A big payload goes out on its own write, uncopied.
		var err error
		if buf, err = l.writeBatch(buf); err != nil {
			return buf, err
		}
		var hb [wire.HeaderSize]byte
		f.h.Put(hb[:])
		if err := l.write(hb[:]); err != nil {
			return buf, err
		}
		return buf, l.write(f.payload)
	default:
		return wire.AppendFrame(buf, f.h, f.payload), nil
	}
}

// Flush blocks until every frame queued before it has been written to the
// link, the link closes, or timeout passes. A node calls it before closing
// its parent link so its last messages (log records) are not lost.
func (l *Link) Flush(timeout time.Duration) error {
	ch := make(chan struct{})
	t := time.NewTimer(timeout)
	defer t.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := l.q.putWait(ctx, l.done, outFrame{flushed: ch}); err != nil {
		if errors.Is(err, ErrLinkClosed) {
			return l.closedErr()
		}
		return fmt.Errorf("arbor: flush of link to %d: timed out after %s", l.peerID, timeout)
	}
	select {
	case <-ch:
		return nil
	case <-l.done:
		return l.closedErr()
	case <-t.C:
		return fmt.Errorf("arbor: flush of link to %d: timed out after %s", l.peerID, timeout)
	}
}

// write writes b to the message stream. Any failure, a write timeout
// included, is fatal for the link.
func (l *Link) write(b []byte) error {
	// A big payload goes in pieces, so the count of bytes written moves
	// while it goes out: the heartbeat reads that as the peer reading.
	for len(b) > writeChunk {
		if err := l.write(b[:writeChunk]); err != nil {
			return err
		}
		b = b[writeChunk:]
	}
	if len(b) == 0 {
		return nil
	}
	if _, err := l.msgs.Write(b); err != nil {
		if l.sess.IsClosed() || peerGone(err) {
			// The session ended under the write (the peer went away): the
			// cause is that, as the session watcher would report it, not
			// yamux's "session shutdown".
			l.Abort(fmt.Errorf("%w: session ended", io.EOF))
		} else {
			l.Abort(fmt.Errorf("write: %w", err))
		}
		return err
	}
	l.outBytes.Add(uint64(len(b)))
	return nil
}

func (l *Link) readLoop(onFrame FrameHandler) {
	defer l.loops.Done()
	r := bufio.NewReaderSize(countingReader{l.msgs, &l.inBytes}, readBufSize)
	var hb [wire.HeaderSize]byte
	for {
		h, payload, err := wire.ReadFrame(r, hb[:], l.cfg.MaxMessage)
		if err != nil {
			select {
			case <-l.done: // closed on purpose; keep the first reason
			default:
				if isProtocolError(err) {
					l.log.Error("closing link: bad frame from peer", "peer", l.peerID, "error", err)
				}
			}
			l.Abort(err)
			return
		}
		l.inFrames.Add(1)
		onFrame(h, payload)
	}
}

// peerGone reports a write that failed because the other end closed.
func peerGone(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.ErrClosedPipe)
}

func isProtocolError(err error) bool {
	return errors.Is(err, wire.ErrBadMagic) || errors.Is(err, wire.ErrBadVersion) ||
		errors.Is(err, wire.ErrBadFlags) || errors.Is(err, wire.ErrTooLarge)
}

// Abort closes the link with cause and returns at once, without waiting for
// the loops. It is safe to call from a FrameHandler. The first cause wins.
func (l *Link) Abort(cause error) {
	l.closeOnce.Do(func() {
		if cause == nil {
			cause = ErrLinkClosed
		}
		l.errMu.Lock()
		l.err = cause
		l.errMu.Unlock()
		close(l.done)
		// A deadline in the past sends the read loop (and a writer waiting
		// for window) out of the message stream at once. Without it yamux
		// v0.1.2 spins them on the closed shutdown channel until the session
		// has force-closed its streams, which waits for its receive loop
		// (hashicorp/yamux#127); with many links closing at once the
		// spinners starve the goroutines they wait for.
		_ = l.msgs.SetDeadline(time.Now())
		// Closing the session unblocks the read loop and any yamux write;
		// closing conn unblocks a transport that yamux is stuck writing to.
		l.sess.Close()
		l.conn.Close()
	})
}

// Close closes the link and waits for its loops to end. It is idempotent.
// It must not be called from a FrameHandler or onClose (use Abort there).
func (l *Link) Close() error {
	l.Abort(ErrLinkClosed)
	l.startMu.Lock()
	started := l.started
	l.closedEarly = !started
	l.startMu.Unlock()
	if started {
		l.loops.Wait()
	}
	return nil
}

// Done is closed when the link has closed.
func (l *Link) Done() <-chan struct{} { return l.done }

// Err is why the link closed, or nil while it is open.
func (l *Link) Err() error {
	l.errMu.Lock()
	defer l.errMu.Unlock()
	return l.err
}

// OpenChannel opens a new yamux stream for bulk data.
func (l *Link) OpenChannel() (net.Conn, error) {
	s, err := l.sess.OpenStream()
	if err != nil {
		return nil, l.closedOr(err)
	}
	return s, nil
}

// AcceptChannel waits for the peer to open a bulk stream. It returns when
// ctx ends or the link closes.
func (l *Link) AcceptChannel(ctx context.Context) (net.Conn, error) {
	s, err := l.sess.AcceptStreamWithContext(ctx)
	if err != nil {
		return nil, l.closedOr(err)
	}
	return s, nil
}

func (l *Link) closedOr(err error) error {
	if l.sess.IsClosed() {
		// The session ended (the peer went away) a moment before the
		// link's own watcher noticed: it is closed all the same.
		l.Abort(fmt.Errorf("%w: session ended", io.EOF))
	}
	select {
	case <-l.done:
		return l.closedErr()
	default:
		return err
	}
}

// frameJoiner sits between a yamux session and its transport. yamux's send
// loop writes every data frame as two writes, the 12-byte header and then
// the body; frameJoiner holds such a header back and sends it with the body
// in one write, so a small message costs one write to the pipe (one system
// call, one wake-up of the reader) instead of two. The bytes on the wire
// are unchanged. Only the session's send loop writes, so no lock is needed.
type frameJoiner struct {
	io.ReadWriteCloser
	hdr     [yamuxHeaderSize]byte
	held    bool // hdr waits for its body
	joinBuf []byte
}

const (
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
	// joinMax is the largest body copied to join its header; a larger one
	// goes out in a second write, where the extra call costs little.
	joinMax = 16 << 10
)

func joinFrames(conn io.ReadWriteCloser) io.ReadWriteCloser {
	return &frameJoiner{ReadWriteCloser: conn}
}

func (j *frameJoiner) Write(p []byte) (int, error) {
	if j.held {
		j.held = false
		if len(p) > joinMax {
			if _, err := j.ReadWriteCloser.Write(j.hdr[:]); err != nil {
				return 0, err
			}
			return j.ReadWriteCloser.Write(p)
		}
		j.joinBuf = append(append(j.joinBuf[:0], j.hdr[:]...), p...)
		n, err := j.ReadWriteCloser.Write(j.joinBuf)
		return max(0, n-yamuxHeaderSize), err
	}
	// A data frame header (version 0, type data) announcing a body: the
	// body is yamux's next write.
	if len(p) == yamuxHeaderSize && p[0] == 0 && p[1] == yamuxTypeData &&
		p[8]|p[9]|p[10]|p[11] != 0 {
		copy(j.hdr[:], p)
		j.held = true
		return len(p), nil
	}
	return j.ReadWriteCloser.Write(p)
}
