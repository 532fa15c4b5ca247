package stream

import (
	"bufio"
	"context"
	"encoding/binary"
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
	gate *gatedConn // between sess and conn: the channel limit

	// The channel acceptor of ServeChannels runs only while channels the
	// peer opened wait to be accepted. acMu guards the fields below.
	acMu      sync.Mutex
	acServe   func(net.Conn)
	acRunning bool
	accepted  uint64 // channels taken from yamux by the acceptor

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
	gate := newGatedConn(conn, c, log)
	gate.peer.Store(hello.ID)
	sess, err := yamux.Client(gate, c.yamuxConfig(log))
	if err != nil {
		conn.Close()
		return nil, wire.HelloAck{}, fmt.Errorf("arbor: link to %d: %w", hello.ID, err)
	}
	gate.start(sess.CloseChan())
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
	l := newLink(c, log, conn, gate, sess, msgs, hello.ID, hello)
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
	gate := newGatedConn(conn, c, c.Logger.With("link", "parent"))
	sess, err := yamux.Server(gate, c.yamuxConfig(c.Logger.With("link", "parent")))
	if err != nil {
		conn.Close()
		return nil, wire.Hello{}, fmt.Errorf("arbor: link to parent: %w", err)
	}
	gate.start(sess.CloseChan())
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
	gate.peer.Store(hello.ParentID)
	body, err := wire.Marshal(wire.HelloAck{Version: wire.Version, ID: hello.ID, PID: pid})
	if err != nil {
		return fail(err)
	}
	h := wire.Header{Dst: hello.ParentID, Src: hello.ID, Auth: hello.ID, Handle: wire.HandleHello}
	if _, err := msgs.Write(wire.AppendFrame(nil, h, body)); err != nil {
		return fail(ioErr(err, deadline))
	}
	_ = msgs.SetDeadline(time.Time{})
	l := newLink(c, c.Logger.With("link", "parent"), conn, gate, sess, msgs, hello.ParentID, hello)
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

func newLink(c *Config, log hclog.Logger, conn io.ReadWriteCloser, gate *gatedConn, sess *yamux.Session, msgs *yamux.Stream, peer uint32, hello wire.Hello) *Link {
	l := &Link{
		cfg:    c,
		log:    log,
		conn:   conn,
		gate:   gate,
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
	// smallReadBuf is the read buffer of the read loop and of the gate
	// until the link has carried growAfter frames (see readLoop).
	smallReadBuf = 1 << 10
	growAfter    = 64
)

func (l *Link) writeLoop() {
	defer l.loops.Done()
	// The batch buffer starts small and grows (to about batchBytes) only
	// on a link that is busy: most links of a large tree are idle.
	var buf []byte
	var batch []outFrame
	for {
		// The write loop also watches the yamux session: its ending (peer
		// gone, write timeout, the channel gate) ends the link. A write
		// under way when it ends fails and reports the same cause (write).
		select {
		case <-l.q.ready:
		case <-l.sess.CloseChan():
			l.Abort(l.sessionEnded())
			return
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
	// Each piece must make progress within WriteTimeout: yamux bounds
	// its own write to the transport by it, but not a wait for the
	// peer's window, which a peer that stops reading its message stream
	// (while its yamux still reads) leaves closed for ever.
	_ = l.msgs.SetWriteDeadline(time.Now().Add(l.cfg.WriteTimeout))
	select {
	case <-l.done:
		// Abort's deadline may just have been replaced by ours.
		return l.closedErr()
	default:
	}
	if _, err := l.msgs.Write(b); err != nil {
		if l.sess.IsClosed() || peerGone(err) {
			// The session ended under the write (the peer went away): the
			// cause is that, as the write loop's session watch would report it, not
			// yamux's "session shutdown".
			l.Abort(l.sessionEnded())
		} else if errors.Is(err, yamux.ErrTimeout) || errors.Is(err, yamux.ErrConnectionWriteTimeout) {
			l.Abort(&WriteTimeoutError{Peer: l.peerID, After: l.cfg.WriteTimeout})
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
	// The buffer starts small and is replaced by one of readBufSize once
	// the link has carried growAfter frames, at a moment it holds nothing:
	// most links of a large tree are idle after the hello.
	src := countingReader{l.msgs, &l.inBytes}
	r := bufio.NewReaderSize(src, smallReadBuf)
	grown := false
	var hb [wire.HeaderSize]byte
	for {
		if !grown && l.inFrames.Load() >= growAfter {
			r, grown = growReader(r, src, readBufSize), true
		}
		h, payload, err := wire.ReadFrame(r, hb[:], l.cfg.MaxMessage)
		if err != nil {
			select {
			case <-l.done: // closed on purpose; keep the first reason
			default:
				if isProtocolError(err) {
					l.log.Error("closing link: bad frame from peer", "peer", l.peerID, "error", err)
				} else if l.sess.IsClosed() {
					// The session ended under the read: report why, as
					// the write loop's watch of the session would.
					err = l.sessionEnded()
				}
			}
			l.Abort(err)
			return
		}
		l.inFrames.Add(1)
		onFrame(h, payload)
	}
}

// growReader replaces small, a buffered reader of src, by one of size
// bytes. When small holds nothing the new one reads src directly; else it
// reads through small, which hands over what it holds and then, its
// buffer empty and every read larger than it, reads src directly too.
func growReader(small *bufio.Reader, src io.Reader, size int) *bufio.Reader {
	if small.Buffered() == 0 {
		return bufio.NewReaderSize(src, size)
	}
	return bufio.NewReaderSize(small, size)
}

// sessionEnded is why the link ends when its yamux session has ended:
// the channel gate's cause when the gate ended it, else the peer's going.
func (l *Link) sessionEnded() error {
	if err := l.gate.rerrSafe(); err != nil {
		return err
	}
	return fmt.Errorf("%w: session ended", io.EOF)
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
		if gc := l.gate.rerrSafe(); gc != nil {
			// The gate ended the session: whoever noticed first (the read
			// loop reads EOF from the message stream) reports its cause.
			cause = gc
		}
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
	<-l.gate.injDone
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

// OpenChannel opens a new yamux stream for bulk data. When
// Config.MaxChannels channels this side opened are open on the link, it
// fails at once with a *ChannelLimitError (matching ErrChannelLimit).
func (l *Link) OpenChannel() (net.Conn, error) {
	return l.openChannel(nil)
}

// OpenChannelContext is OpenChannel, but while Config.MaxChannels
// channels this side opened are open it waits for one to end, until ctx
// ends or the link closes.
func (l *Link) OpenChannelContext(ctx context.Context) (net.Conn, error) {
	return l.openChannel(ctx)
}

func (l *Link) openChannel(ctx context.Context) (net.Conn, error) {
	release, err := l.gate.reserve(ctx, l.done)
	if err != nil {
		if errors.Is(err, ErrLinkClosed) {
			return nil, l.closedErr()
		}
		return nil, err
	}
	// Once OpenStream returns, its SYN has been written: the stream
	// holds its own slot.
	defer release()
	s, err := l.sess.OpenStream()
	if err != nil {
		return nil, l.closedOr(err)
	}
	return s, nil
}

// AcceptChannel waits for the peer to open a bulk stream. It returns when
// ctx ends or the link closes. The peer may send at most yamux's initial
// window (256 KiB) on the stream until GrantWindow is called for it.
func (l *Link) AcceptChannel(ctx context.Context) (net.Conn, error) {
	s, err := l.sess.AcceptStreamWithContext(ctx)
	if err != nil {
		return nil, l.closedOr(err)
	}
	return s, nil
}

// ServeChannels calls serve with every channel the peer opens, until the
// link closes. It replaces a loop over AcceptChannel without a goroutine
// that waits for channels all the link's life: the goroutine that calls
// serve runs only while channels the peer opened wait to be accepted, so
// serve must not block for long (hand the channel to a goroutine of its
// own). It must be called at most once, and AcceptChannel must not be used
// on the same link. Channels the peer opened before the call are served
// too.
func (l *Link) ServeChannels(serve func(net.Conn)) {
	l.acMu.Lock()
	l.acServe = serve
	l.acMu.Unlock()
	f := l.channelArrived
	l.gate.onSYN.Store(&f)
	l.channelArrived()
}

// channelArrived starts the acceptor unless it runs or nothing waits.
// It is called by the gate, on yamux's receive loop, with the gate's lock
// held (lock order: gate.mu, then acMu); it never blocks.
func (l *Link) channelArrived() {
	l.acMu.Lock()
	start := l.acServe != nil && !l.acRunning && l.accepted < l.gate.synSeen.Load()
	if start {
		l.acRunning = true
	}
	l.acMu.Unlock()
	if start {
		go l.acceptLoop()
	}
}

// acceptLoop takes the channels the gate saw the peer open from yamux and
// hands them to serve, until none waits or the session ends. A channel
// that yamux itself refuses (its accept backlog full) is never taken; the
// acceptor then waits for the next one, as a permanent acceptor would.
func (l *Link) acceptLoop() {
	for {
		l.acMu.Lock()
		if l.accepted >= l.gate.synSeen.Load() {
			l.acRunning = false
			l.acMu.Unlock()
			return
		}
		serve := l.acServe
		l.acMu.Unlock()
		s, err := l.sess.AcceptStream()
		if err != nil {
			// The session ended; the write loop ends the link. No channel
			// arrives any more, so no acceptor starts again.
			return
		}
		l.acMu.Lock()
		l.accepted++
		l.acMu.Unlock()
		serve(s)
	}
}

// GrantWindow gives a channel from AcceptChannel its full receive window
// (Config.StreamWindow): its user has claimed it and reads it. Until then
// the peer may send only yamux's initial 256 KiB on it, so channels
// nobody claims hold little. It never blocks; a second call, or one for
// a channel that has ended, does nothing.
func (l *Link) GrantWindow(c net.Conn) {
	s, ok := c.(interface{ StreamID() uint32 })
	if !ok {
		return
	}
	if err := l.gate.grant(s.StreamID()); err != nil {
		l.log.Error("closing link: peer does not read", "peer", l.peerID, "error", err)
		l.Abort(err)
	}
}

// Channels is how many channels are open on the link: opened by the peer
// (in) and by this side (out). A channel counts until both sides have
// closed it or either has reset it.
func (l *Link) Channels() (in, out int) { return l.gate.channels() }

// ChannelsRefused counts the channels the peer opened past
// Config.MaxChannels, which were reset as they arrived.
func (l *Link) ChannelsRefused() uint64 { return l.gate.refused.Load() }

func (l *Link) closedOr(err error) error {
	if l.sess.IsClosed() {
		// The session ended (the peer went away) a moment before the
		// link's write loop noticed: it is closed all the same.
		l.Abort(l.sessionEnded())
	}
	select {
	case <-l.done:
		return l.closedErr()
	default:
		return err
	}
}

// Channel limit. A link's transport passes through a gate (gatedConn) on
// its way to and from yamux. The gate reads the 12-byte yamux header of
// every frame in both directions, and so knows which streams exist on
// the link without asking yamux, which has no API for it (v0.1.2):
//
//   - A stream exists from its SYN until both sides have sent FIN, or
//     either has sent RST (yamux's stream close timeout ends in one).
//     Stream 1, the message stream, is not a channel and is never counted.
//   - A SYN from the peer while MaxChannels of its streams exist here is
//     refused: the SYN flag is cleared before yamux reads the header (so
//     yamux allocates nothing and drops whatever the frame and its
//     followers carry, as it does for a stream it reset) and the gate
//     answers RST. A peer with more than MaxChannels refused within
//     ChannelFloodWindow is not honest: the link closes with a
//     *ChannelFloodError.
//   - yamux grants an accepted stream its full window (StreamWindow) at
//     once. The gate holds back every window update yamux sends for a
//     stream of the peer until the stream's user claims it (GrantWindow),
//     and then sends what it held back in one update. Until then the
//     peer may send yamux's initial window, 256 KiB, and no more.
//
// The gate's own frames (RST, window updates) are written by one
// goroutine per link, between yamux's frames: a receive loop never
// waits to write.
//
// Lock order: gatedConn.wmu before gatedConn.mu.

// ChannelFloodWindow is the period over which refused channels are
// counted: a peer with more than Config.MaxChannels of its channels
// refused within it loses the link.
const ChannelFloodWindow = 10 * time.Second

// ErrChannelLimit matches a channel refused because a link has
// Config.MaxChannels channels open, and the *ChannelFloodError of a link
// closed because its peer kept opening channels past that limit.
var ErrChannelLimit = errors.New("arbor: channel limit reached")

// ChannelLimitError is a channel this side refused to open: the link to
// Peer already had Max channels open. It matches ErrChannelLimit.
type ChannelLimitError struct {
	Peer uint32
	Max  int
}

func (e *ChannelLimitError) Error() string {
	return fmt.Sprintf("arbor: link to node %d has %d channels open, the most it allows", e.Peer, e.Max)
}

// Is makes errors.Is(err, ErrChannelLimit) true.
func (e *ChannelLimitError) Is(target error) bool { return target == ErrChannelLimit }

// ChannelFloodError is why a link closed when its peer kept opening
// channels past the limit: Refused of them within Within, while Max were
// open. It matches ErrChannelLimit.
type ChannelFloodError struct {
	Peer    uint32
	Max     int
	Refused int
	Within  time.Duration
}

func (e *ChannelFloodError) Error() string {
	return fmt.Sprintf("arbor: node %d opened channels past the limit of %d open: %d refused within %s",
		e.Peer, e.Max, e.Refused, e.Within)
}

// Is makes errors.Is(err, ErrChannelLimit) true.
func (e *ChannelFloodError) Is(target error) bool { return target == ErrChannelLimit }

// ErrWriteTimeout matches the *WriteTimeoutError of a link closed because
// a write to it made no progress for Config.WriteTimeout.
var ErrWriteTimeout = errors.New("arbor: write timed out")

// WriteTimeoutError is why a link closed when a write to Peer made no
// progress for After. It matches ErrWriteTimeout.
type WriteTimeoutError struct {
	Peer  uint32
	After time.Duration
}

func (e *WriteTimeoutError) Error() string {
	return fmt.Sprintf("arbor: write to node %d made no progress for %s", e.Peer, e.After)
}

// Is makes errors.Is(err, ErrWriteTimeout) true.
func (e *WriteTimeoutError) Is(target error) bool { return target == ErrWriteTimeout }

// errGateBacklog closes a link whose peer does not read the gate's frames.
var errGateBacklog = errors.New("arbor: peer does not read: refusals and window updates owed to it exceed 64 KiB")

const (
	yamuxHeaderSize       = 12
	yamuxTypeData         = 0
	yamuxTypeWindowUpdate = 1
	yamuxTypePing         = 2
	yamuxTypeGoAway       = 3
	yamuxFlagSYN          = 1
	yamuxFlagFIN          = 4
	yamuxFlagRST          = 8
	// messageStreamID is the first stream the parent (the yamux client)
	// opens: the message stream, never a channel.
	messageStreamID = 1
	// joinMax is the largest body copied to join its header; a larger one
	// goes out in a second write, where the extra call costs little.
	joinMax = 16 << 10
	// gateReadBuf buffers the gate's reads of the transport; a larger read
	// (a big body for yamux) bypasses it.
	gateReadBuf = 8 << 10
	// maxGatePending bounds the gate's own frames waiting for the
	// transport.
	maxGatePending = 64 << 10
)

// gateStream is what the gate knows of one channel.
type gateStream struct {
	inbound   bool   // the peer opened it
	granted   bool   // its user claimed it: its window is no longer held back
	withheld  uint64 // window held back until the claim
	localFIN  bool
	remoteFIN bool
}

// gatedConn sits between a yamux session and its transport. Besides the
// channel gate described above, it joins frames on the way out: yamux's
// send loop writes every data frame as two writes, the 12-byte header and
// then the body; gatedConn holds such a header back and sends it with the
// body in one write, so a small message costs one write to the pipe (one
// system call, one wake-up of the reader) instead of two; joining changes
// no byte on the wire.
type gatedConn struct {
	conn io.ReadWriteCloser
	max  int
	log  hclog.Logger
	peer atomic.Uint32 // the node at the other end, once known

	// The read side is used by yamux's receive loop alone.
	br    *bufio.Reader // smallReadBuf until rseen reaches growAfter, then gateReadBuf
	rseen int           // frame headers read, up to growAfter
	rhdr  [yamuxHeaderSize]byte
	rout  []byte                // header bytes not yet handed to yamux
	rbody uint64                // body bytes of the current frame not yet handed to yamux
	raw   bool                  // a header yamux refuses: pass the rest on unparsed
	rerr  error                 // the gate closed the link: every further read fails
	cause atomic.Pointer[error] // rerr, for other goroutines

	// wmu serializes writes to conn: yamux's send loop and the injector.
	wmu     sync.Mutex
	hdr     [yamuxHeaderSize]byte
	held    bool                  // hdr waits for its body
	whdr    [yamuxHeaderSize]byte // a window update held back
	joinBuf []byte

	mu       sync.Mutex
	streams  map[uint32]*gateStream
	in, out  int           // channels open, by who opened them
	opening  int           // OpenChannel calls between their check and their SYN
	freed    chan struct{} // closed and replaced when an outbound channel ends
	pending  []byte        // the gate's frames waiting for the injector
	winStart time.Time     // start of the current refusal count
	winCount int           // channels refused since winStart

	refused atomic.Uint64
	// synSeen counts the channels the peer opened that the gate let
	// through; onSYN, when set, is called after each (g.mu held).
	synSeen atomic.Uint64
	onSYN   atomic.Pointer[func()]
	kick    chan struct{}
	injDone chan struct{}
}

func newGatedConn(conn io.ReadWriteCloser, c *Config, log hclog.Logger) *gatedConn {
	return &gatedConn{
		conn:    conn,
		max:     c.MaxChannels,
		log:     log,
		br:      bufio.NewReaderSize(conn, smallReadBuf),
		streams: make(map[uint32]*gateStream),
		freed:   make(chan struct{}),
		kick:    make(chan struct{}, 1),
		injDone: make(chan struct{}),
	}
}

// start runs the injector until stop (the session's close) is closed.
func (g *gatedConn) start(stop <-chan struct{}) { go g.inject(stop) }

// Close closes the transport.
func (g *gatedConn) Close() error { return g.conn.Close() }

// Read hands yamux what the peer sent, after the gate has looked at each
// frame's header. Only yamux's receive loop calls it.
func (g *gatedConn) Read(p []byte) (int, error) {
	if g.rerr != nil {
		return 0, g.rerr
	}
	n := 0
	for n < len(p) {
		switch {
		case len(g.rout) > 0:
			k := copy(p[n:], g.rout)
			g.rout = g.rout[k:]
			n += k
		case g.raw || g.rbody > 0:
			// Block for more only when there is nothing to return yet.
			if n > 0 && g.br.Buffered() == 0 {
				return n, nil
			}
			q := p[n:]
			if !g.raw && uint64(len(q)) > g.rbody {
				q = q[:g.rbody]
			}
			k, err := g.br.Read(q)
			n += k
			if !g.raw {
				g.rbody -= uint64(k)
			}
			if err != nil {
				return n, err
			}
		default:
			if n > 0 && g.br.Buffered() < yamuxHeaderSize {
				return n, nil
			}
			if g.rseen < growAfter {
				if g.rseen++; g.rseen == growAfter {
					// A busy link: the full buffer.
					g.br = growReader(g.br, g.conn, gateReadBuf)
				}
			}
			if _, err := io.ReadFull(g.br, g.rhdr[:]); err != nil {
				// n is 0 here: a partial header is yamux's to report.
				return 0, err
			}
			if err := g.received(); err != nil {
				g.rerr = err
				g.cause.Store(&err)
				if n > 0 {
					return n, nil
				}
				return 0, err
			}
			g.rout = g.rhdr[:]
		}
	}
	return n, nil
}

// received looks at the header in g.rhdr, just read from the peer, and
// clears its SYN flag when the stream it opens is refused.
func (g *gatedConn) received() error {
	h := g.rhdr[:]
	if h[0] != 0 || h[1] > yamuxTypeGoAway {
		// yamux ends the session on this header; nothing after it can be
		// parsed.
		g.raw = true
		return nil
	}
	typ, flags := h[1], binary.BigEndian.Uint16(h[2:4])
	id, length := binary.BigEndian.Uint32(h[4:8]), binary.BigEndian.Uint32(h[8:12])
	if typ == yamuxTypeData {
		g.rbody = uint64(length)
	}
	if typ == yamuxTypePing {
		// Links run no yamux keepalive (the heartbeat is made of frames),
		// so neither end ever sends a yamux ping. yamux answers each one
		// from a goroutine of its own that waits for the write, so a peer
		// that floods pings and stops reading would pin one per ping.
		return fmt.Errorf("%w: the peer sent a yamux ping (flags %#x), which this protocol never sends", ErrProtocol, flags)
	}
	if typ > yamuxTypeWindowUpdate || id == 0 || id == messageStreamID {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.streams[id]
	if flags&yamuxFlagSYN != 0 && st == nil {
		if g.in >= g.max {
			binary.BigEndian.PutUint16(h[2:4], flags&^yamuxFlagSYN)
			return g.refuseLocked(id)
		}
		st = &gateStream{inbound: true}
		g.streams[id] = st
		g.in++
		g.synSeen.Add(1)
		if f := g.onSYN.Load(); f != nil {
			(*f)()
		}
	}
	if st == nil {
		return nil
	}
	switch {
	case flags&yamuxFlagRST != 0:
		g.dropLocked(id, st)
	case flags&yamuxFlagFIN != 0:
		st.remoteFIN = true
		if st.localFIN {
			g.dropLocked(id, st)
		}
	}
	return nil
}

// refuseLocked answers the peer's stream id with RST and counts it; past
// the flood limit it returns the error that closes the link. g.mu is held
// on entry.
func (g *gatedConn) refuseLocked(id uint32) error {
	g.refused.Add(1)
	now := time.Now()
	if g.winCount == 0 || now.Sub(g.winStart) > ChannelFloodWindow {
		g.winStart, g.winCount = now, 0
		g.log.Warn("channel refused: the peer has the most channels open a link allows",
			"peer", g.peer.Load(), "max", g.max)
	}
	g.winCount++
	if g.winCount > g.max {
		err := &ChannelFloodError{Peer: g.peer.Load(), Max: g.max, Refused: g.winCount, Within: ChannelFloodWindow}
		g.log.Error("closing link: peer kept opening channels past the limit", "peer", g.peer.Load(), "error", err)
		return err
	}
	var rst [yamuxHeaderSize]byte
	rst[1] = yamuxTypeWindowUpdate
	binary.BigEndian.PutUint16(rst[2:4], yamuxFlagRST)
	binary.BigEndian.PutUint32(rst[4:8], id)
	return g.queueLocked(rst[:])
}

// queueLocked hands frames to the injector. g.mu is held on entry.
func (g *gatedConn) queueLocked(b []byte) error {
	if len(g.pending)+len(b) > maxGatePending {
		return errGateBacklog
	}
	g.pending = append(g.pending, b...)
	select {
	case g.kick <- struct{}{}:
	default:
	}
	return nil
}

// dropLocked forgets a channel that has ended. g.mu is held on entry.
func (g *gatedConn) dropLocked(id uint32, st *gateStream) {
	delete(g.streams, id)
	if st.inbound {
		g.in--
		return
	}
	g.out--
	close(g.freed)
	g.freed = make(chan struct{})
}

// sent looks at a header yamux writes to the peer and returns it, with
// the window update held back for an unclaimed stream of the peer.
func (g *gatedConn) sent(p []byte) []byte {
	typ, flags := p[1], binary.BigEndian.Uint16(p[2:4])
	id, length := binary.BigEndian.Uint32(p[4:8]), binary.BigEndian.Uint32(p[8:12])
	if p[0] != 0 || typ > yamuxTypeWindowUpdate || id == 0 || id == messageStreamID {
		return p
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.streams[id]
	if flags&yamuxFlagSYN != 0 && st == nil {
		st = &gateStream{}
		g.streams[id] = st
		g.out++
	}
	if st == nil {
		return p
	}
	if typ == yamuxTypeWindowUpdate && st.inbound && !st.granted && length > 0 {
		st.withheld += uint64(length)
		copy(g.whdr[:], p)
		binary.BigEndian.PutUint32(g.whdr[8:12], 0)
		p = g.whdr[:]
	}
	switch {
	case flags&yamuxFlagRST != 0:
		g.dropLocked(id, st)
	case flags&yamuxFlagFIN != 0:
		st.localFIN = true
		if st.remoteFIN {
			g.dropLocked(id, st)
		}
	}
	return p
}

// Write passes what yamux's send loop writes on to the transport, joining
// a data frame's header with its body. Only the send loop calls it.
func (g *gatedConn) Write(p []byte) (int, error) {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	if g.held {
		g.held = false
		if len(p) > joinMax {
			if _, err := g.conn.Write(g.hdr[:]); err != nil {
				return 0, err
			}
			return g.conn.Write(p)
		}
		g.joinBuf = append(append(g.joinBuf[:0], g.hdr[:]...), p...)
		n, err := g.conn.Write(g.joinBuf)
		return max(0, n-yamuxHeaderSize), err
	}
	// Every write but a body is one frame header (yamux writes a body
	// only after its header, and the header of a body is held).
	if len(p) != yamuxHeaderSize {
		return g.conn.Write(p)
	}
	if p[0] == 0 && p[1] == yamuxTypeData && p[8]|p[9]|p[10]|p[11] != 0 {
		// A data frame header announcing a body: the body is yamux's
		// next write.
		g.sent(p)
		copy(g.hdr[:], p)
		g.held = true
		return len(p), nil
	}
	if _, err := g.conn.Write(g.sent(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// inject writes the gate's own frames (refusals, window updates) between
// yamux's, until stop is closed or the transport fails.
func (g *gatedConn) inject(stop <-chan struct{}) {
	defer close(g.injDone)
	var b []byte
	for {
		select {
		case <-g.kick:
		case <-stop:
			return
		}
		g.mu.Lock()
		b, g.pending = g.pending, b[:0]
		g.mu.Unlock()
		if len(b) == 0 {
			continue
		}
		g.wmu.Lock()
		_, err := g.conn.Write(b)
		g.wmu.Unlock()
		if err != nil {
			return // the session fails on the same transport
		}
	}
}

// grant lifts the hold on the window of the peer's stream id: what yamux
// granted it and the gate held back goes out in one window update.
func (g *gatedConn) grant(id uint32) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := g.streams[id]
	if st == nil || !st.inbound || st.granted {
		return nil
	}
	st.granted = true
	if st.withheld == 0 {
		return nil
	}
	var wu [yamuxHeaderSize]byte
	wu[1] = yamuxTypeWindowUpdate
	binary.BigEndian.PutUint32(wu[4:8], id)
	binary.BigEndian.PutUint32(wu[8:12], uint32(min(st.withheld, 1<<31)))
	st.withheld = 0
	return g.queueLocked(wu[:])
}

// reserve takes a slot for a channel this side is about to open, waiting
// for one while ctx allows (a nil ctx does not wait). release gives the
// slot back once the stream's SYN has been sent (from then on the stream
// itself holds it) or the open failed.
func (g *gatedConn) reserve(ctx context.Context, done <-chan struct{}) (release func(), err error) {
	g.mu.Lock()
	for g.out+g.opening >= g.max {
		if ctx == nil {
			g.mu.Unlock()
			return nil, &ChannelLimitError{Peer: g.peer.Load(), Max: g.max}
		}
		freed := g.freed
		g.mu.Unlock()
		select {
		case <-freed:
		case <-done:
			return nil, ErrLinkClosed
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (waited for one to close: %w)", &ChannelLimitError{Peer: g.peer.Load(), Max: g.max}, ctx.Err())
		}
		g.mu.Lock()
	}
	g.opening++
	g.mu.Unlock()
	return func() {
		g.mu.Lock()
		g.opening--
		g.mu.Unlock()
	}, nil
}

// rerrSafe is the error with which the gate ended the session, if it did.
func (g *gatedConn) rerrSafe() error {
	if p := g.cause.Load(); p != nil {
		return *p
	}
	return nil
}

// channels is how many channels are open, by who opened them.
func (g *gatedConn) channels() (in, out int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.in, g.out
}
