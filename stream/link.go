package stream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/arbor-project/arbor/internal/errs"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
)

// FrameHandler receives each frame read from a link, on the link's read
// loop. It must not block for long: the next frame waits for it. It owns
// payload.
type FrameHandler func(h wire.Header, payload []byte)

// Link is one parent–child connection: routed message frames and, in
// tunnel frames among them, a yamux session for bulk channels, over one
// byte stream (PROTOCOL.md section 1). It is safe for concurrent use.
//
// Goroutines: a read loop and a write loop; while the link carries
// channels, yamux's two loops, the gate's injector and, while channels
// wait to be accepted, ServeChannels' acceptor.
//
// Lock order: gatedConn.wmu, then wmu; chMu, then acMu; gatedConn.mu,
// then acMu; pipes.mu last of all.
type Link struct {
	cfg    *Config
	log    hclog.Logger
	conn   io.ReadWriteCloser
	br     *bufio.Reader // the read loop's, from the hello on
	parent bool          // this side opened the link: its yamux session is the client
	epoch  time.Time     // origin of the write clock (wstart)

	// wmu serializes writes to conn: the write loop's frames and the
	// tunnel frames of yamux's send loop and the gate's injector. Held
	// for a whole message frame or a whole tunnel frame.
	wmu   sync.Mutex
	tjoin []byte // a small tunnel frame joined for one write (wmu held)
	// wraw is conn's pipe when a sender may write a small frame itself
	// (inline.go); ibuf is that frame (wmu held); more says frames wait
	// in the read loop's buffer behind the one it handles.
	wraw         syscall.RawConn
	ibuf         []byte
	more         atomic.Bool
	directFrames atomic.Uint64
	// wstart is when the write to conn under way began (nanoseconds
	// since epoch, 0: none); the watchdog closes the link when one makes
	// no progress for WriteTimeout. wdArmed: its timer is set.
	wstart  atomic.Int64
	wdArmed atomic.Bool
	wdMu    sync.Mutex
	wd      *time.Timer

	// The yamux session of the link's channels, created on first use
	// (tunnel.go); chClosed, under chMu, stops its creation once the
	// link has closed.
	chMu     sync.Mutex
	chClosed bool
	sess     atomic.Pointer[chanSession]
	// sessEnded is closed when the session ended on its own; the write
	// loop then waits for yamux to close its streams and ends the link.
	sessEnded   chan struct{}
	sessEndOnce sync.Once

	// The channel acceptor of ServeChannels runs only while channels the
	// peer opened wait to be accepted. acMu guards the fields below.
	acMu      sync.Mutex
	acServe   func(net.Conn)
	acRunning bool
	accepted  uint64 // channels taken from yamux by the acceptor

	// peerID is the node at the other end; hello is what the parent sent.
	peerID uint32
	hello  wire.Hello

	// pipes is the capacity of the connection's pipes (pipes.go).
	pipes pipeState

	// q is the outbound queue the write loop drains (queue.go).
	q *sendQueue
	// full counts data frames refused because the queue was full.
	full atomic.Uint64
	// inFrames and inBytes count the message frames and their bytes the
	// read loop has read: the heartbeat's evidence of life. Counters, not
	// clock reads, on the hot path. Tunnel frames are not counted.
	inFrames atomic.Uint64
	inBytes  atomic.Uint64
	// outBytes counts the bytes written to conn, tunnel frames included;
	// urgentAt is when heartbeat frames were last written (unix
	// nanoseconds).
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

// Open opens a link as the parent: it sends hello on conn and waits (at
// most HelloTimeout) for the child's acknowledgement. On failure conn is
// closed.
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
	ht := startHelloTimer(conn, c.HelloTimeout)
	fail := func(err error) (*Link, wire.HelloAck, error) {
		ht.stop()
		conn.Close()
		return nil, wire.HelloAck{}, &errs.Kind{Kind: ErrHello, Context: fmt.Sprintf(" with node %d (%s)", hello.ID, hello.Name), Cause: err}
	}
	body, err := wire.Marshal(hello)
	if err != nil {
		return fail(err)
	}
	h := wire.Header{Dst: hello.ID, Src: hello.ParentID, Auth: hello.ParentID, Handle: wire.HandleHello}
	if _, err := conn.Write(wire.AppendFrame(nil, h, body)); err != nil {
		return fail(ht.err(err))
	}
	br := bufio.NewReaderSize(conn, smallReadBuf)
	var ack wire.HelloAck
	if err := readHelloFrame(br, c.MaxMessage, &ack); err != nil {
		if errors.Is(err, io.EOF) && !ht.fired.Load() {
			// A child of protocol version 1 reads a yamux session: it
			// refuses this hello's first byte and closes, answering nothing.
			err = fmt.Errorf("child closed the connection before it answered (%w); a child speaking another protocol version than %d does", err, wire.Version)
		}
		return fail(ht.err(err))
	}
	if !ht.stop() {
		return fail(ht.err(errors.New("hello deadline passed")))
	}
	if ack.Version != wire.Version || ack.ID != hello.ID {
		return fail(fmt.Errorf("child answered version %d id %d, want version %d id %d",
			ack.Version, ack.ID, wire.Version, hello.ID))
	}
	l := newLink(c, log, conn, br, hello.ID, hello, true)
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
	ht := startHelloTimer(conn, c.HelloTimeout)
	fail := func(err error) (*Link, wire.Hello, error) {
		ht.stop()
		conn.Close()
		return nil, wire.Hello{}, &errs.Kind{Kind: ErrHello, Context: " with parent", Cause: err}
	}
	br := bufio.NewReaderSize(conn, smallReadBuf)
	var hello wire.Hello
	if err := readHelloFrame(br, c.MaxMessage, &hello); err != nil {
		return fail(ht.err(err))
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
	if _, err := conn.Write(wire.AppendFrame(nil, h, body)); err != nil {
		return fail(ht.err(err))
	}
	if !ht.stop() {
		return fail(ht.err(errors.New("hello deadline passed")))
	}
	l := newLink(c, c.Logger.With("link", "parent"), conn, br, hello.ParentID, hello, false)
	return l, hello, nil
}

// helloTimer bounds the hello exchange on a connection that may have no
// deadlines (an io.Pipe, a process's pipes): at HelloTimeout it closes the
// connection, which ends every read and write on it.
type helloTimer struct {
	t     *time.Timer
	fired atomic.Bool
}

func startHelloTimer(conn io.Closer, d time.Duration) *helloTimer {
	ht := &helloTimer{}
	ht.t = time.AfterFunc(d, func() {
		ht.fired.Store(true)
		conn.Close()
	})
	return ht
}

// stop stops the timer; it reports false when the timer has fired (the
// connection is closed or being closed).
func (ht *helloTimer) stop() bool { return ht.t.Stop() }

// err reports an I/O failure of the hello exchange as ErrConnectTimeout
// when the timer closed the connection under it.
func (ht *helloTimer) err(err error) error {
	if ht.fired.Load() || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrConnectTimeout, err)
	}
	return err
}

// readHelloFrame reads the first frame of a link, which must be a HELLO
// message frame, and decodes its payload into v.
func readHelloFrame(r *bufio.Reader, max uint32, v any) error {
	// A peer of protocol version 1 begins with a yamux header, whose
	// first byte is yamux's version (0) and second its type (0–3).
	if b, err := r.Peek(2); err == nil && b[0] == 0 && b[1] <= yamuxTypeGoAway {
		return fmt.Errorf("%w: the peer speaks protocol version 1 (its link begins with a yamux session), this node %d",
			wire.ErrBadVersion, wire.Version)
	}
	var hb [wire.HeaderSize]byte
	kind, h, err := wire.ReadLinkHeader(r, hb[:], max)
	if err != nil {
		return err
	}
	if kind != wire.KindMessage {
		return errors.New("first frame is a tunnel frame, want HELLO")
	}
	if h.Handle != wire.HandleHello {
		return fmt.Errorf("first frame has handle %d, want HELLO", h.Handle)
	}
	payload := make([]byte, h.Length)
	if _, err := io.ReadFull(r, payload); err != nil {
		return unexpected(err)
	}
	return wire.Unmarshal(payload, v)
}

// unexpected is err from a read inside a frame: EOF there is
// io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func newLink(c *Config, log hclog.Logger, conn io.ReadWriteCloser, br *bufio.Reader, peer uint32, hello wire.Hello, parent bool) *Link {
	l := &Link{
		cfg:    c,
		log:    log,
		conn:   conn,
		br:     br,
		parent: parent,
		epoch:  time.Now(),
		peerID: peer,
		hello:  hello,
		q:      newSendQueue(c.SendQueue, c.ControlReserve),
		done:   make(chan struct{}),

		sessEnded: make(chan struct{}),
	}
	l.wraw = pipeWriteConn(conn)
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
	return l.putWait(ctx, h, payload)
}

func (l *Link) putWait(ctx context.Context, h wire.Header, payload []byte) error {
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
	return l.enqueue(h, payload, c)
}

// enqueue admits a checked frame to the queue by class.
func (l *Link) enqueue(h wire.Header, payload []byte, c frameClass) error {
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
	// writeChunk is the most one write to conn carries.
	writeChunk = 64 << 10
	// readBufSize buffers the read loop: enough for many small frames per
	// read of conn; a larger payload bypasses it.
	readBufSize = 16 << 10
	// smallReadBuf is the read buffer of the read loop until the link has
	// carried growAfter frames (see readLoop).
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
		select {
		case <-l.q.ready:
		case <-l.sessEnded:
			// The channel session ended on its own (the gate refused a
			// flood, yamux refused what the peer sent). Its Close, under
			// way, closes every stream; once it has, the link ends.
			if s := l.sess.Load(); s != nil {
				s.sess.Close()
			}
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
			if _, err := l.writeBatch(buf); err != nil {
				return
			}
			l.q.unwritten.Add(-int64(len(batch)))
			clear(batch)
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
		defer func() {
			l.urgentAt.Store(time.Now().UnixNano())
			l.q.unwritten.Add(-int64(len(urgent)))
		}()
	}
	if len(buf) == 0 {
		return buf, nil
	}
	return buf[:0], l.write(buf, nil)
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
		return buf, l.write(hb[:], f.payload)
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

// write writes a and then b to conn as one unit, no tunnel frame between
// them, in pieces of at most writeChunk bytes. Any failure, a write
// timeout included, is fatal for the link.
func (l *Link) write(a, b []byte) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	select {
	case <-l.done:
		return l.closedErr()
	default:
	}
	for _, p := range [2][]byte{a, b} {
		// A big payload goes in pieces, so the count of bytes written
		// moves while it goes out: the heartbeat reads that as the peer
		// reading.
		for len(p) > 0 {
			n := min(len(p), writeChunk)
			if err := l.connWrite(p[:n]); err != nil {
				return err
			}
			p = p[n:]
		}
	}
	return nil
}

// connWrite writes b to conn under the watchdog. wmu is held on entry.
func (l *Link) connWrite(b []byte) error {
	l.wstart.Store(int64(time.Since(l.epoch)) | 1)
	if !l.wdArmed.Load() {
		l.armWatchdog()
	}
	n, err := l.conn.Write(b)
	l.wstart.Store(0)
	l.outBytes.Add(uint64(n))
	if err != nil {
		return l.writeFailed(err)
	}
	return nil
}

// writeFailed closes the link after a write to conn failed with err, and
// returns the error for the writer.
func (l *Link) writeFailed(err error) error {
	select {
	case <-l.done:
		// Closed under the write: by Abort, or by the watchdog, whose
		// cause is already set.
		return l.closedErr()
	default:
	}
	if peerGone(err) {
		l.Abort(fmt.Errorf("%w: the peer closed the connection (%w)", io.EOF, err))
	} else {
		l.Abort(fmt.Errorf("write: %w", err))
	}
	return err
}

// armWatchdog sets the write watchdog's timer unless it is set: a write
// has begun. One timer per link, set at most once per WriteTimeout while
// writes go on, instead of a deadline per write.
func (l *Link) armWatchdog() {
	if !l.wdArmed.CompareAndSwap(false, true) {
		return
	}
	l.wdMu.Lock()
	if l.wd == nil {
		l.wd = time.AfterFunc(l.cfg.WriteTimeout, l.watchdog)
	} else {
		l.wd.Reset(l.cfg.WriteTimeout)
	}
	l.wdMu.Unlock()
}

// watchdog runs when WriteTimeout has passed since it was set: a write
// under way for that long made no progress, and the link closes
// (*WriteTimeoutError; closing conn ends the write). A write under way
// for less sets it again for the rest; no write, and it rests until the
// next begins.
func (l *Link) watchdog() {
	select {
	case <-l.done:
		return
	default:
	}
	start := l.wstart.Load()
	if start == 0 {
		l.wdArmed.Store(false)
		if l.wstart.Load() != 0 {
			// A write began after the first look and saw the timer set.
			l.armWatchdog()
		}
		return
	}
	stuck := time.Duration(int64(time.Since(l.epoch)) - start)
	if stuck >= l.cfg.WriteTimeout {
		err := &WriteTimeoutError{Peer: l.peerID, After: l.cfg.WriteTimeout}
		l.log.Error("closing link: a write made no progress", "peer", l.peerID, "error", err)
		l.Abort(err)
		return
	}
	l.wdMu.Lock()
	l.wd.Reset(l.cfg.WriteTimeout - stuck)
	l.wdMu.Unlock()
}

func (l *Link) readLoop(onFrame FrameHandler) {
	defer l.loops.Done()
	// The buffer starts small and is replaced by one of readBufSize once
	// the link has carried growAfter frames: most links of a large tree
	// are idle after the hello.
	r := l.br
	l.br = nil
	seen := 0
	var hb [wire.HeaderSize]byte
	for {
		if seen < growAfter {
			if seen++; seen == growAfter {
				r = growReader(r, l.conn, readBufSize)
			}
		}
		kind, h, err := wire.ReadLinkHeader(r, hb[:], l.cfg.MaxMessage)
		if err == nil && kind == wire.KindTunnel {
			if err = l.tunnelIn(r, int(h.Length)); err == nil {
				continue
			}
		}
		var payload []byte
		if err == nil {
			l.inBytes.Add(wire.HeaderSize)
			payload, err = l.readPayload(r, h.Length)
		}
		if err != nil {
			select {
			case <-l.done: // closed on purpose; keep the first reason
			default:
				if isProtocolError(err) {
					l.log.Error("closing link: bad frame from peer", "peer", l.peerID, "error", err)
				} else if peerGone(err) {
					// A socket whose peer closed with our bytes unread
					// reports a reset: the peer went away all the same.
					err = fmt.Errorf("%w: the peer closed the connection (%w)", io.EOF, err)
				}
			}
			l.Abort(err)
			return
		}
		l.inFrames.Add(1)
		l.more.Store(r.Buffered() > 0)
		onFrame(h, payload)
	}
}

// readPayload reads a message frame's payload of n bytes, counting the
// bytes as they arrive: a big payload on a slow hop shows the heartbeat
// that bytes move.
func (l *Link) readPayload(r io.Reader, n uint32) ([]byte, error) {
	payload := make([]byte, n)
	for off := 0; off < len(payload); {
		end := min(len(payload), off+writeChunk)
		k, err := io.ReadFull(r, payload[off:end])
		l.inBytes.Add(uint64(k))
		if err != nil {
			return nil, unexpected(err)
		}
		off = end
	}
	return payload, nil
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
		if s := l.sess.Load(); s != nil {
			if gc := s.gate.rerrSafe(); gc != nil {
				// The gate ended the session: whoever noticed first
				// reports its cause.
				cause = gc
			}
		}
		if cause == nil {
			cause = ErrLinkClosed
		}
		l.errMu.Lock()
		l.err = cause
		l.errMu.Unlock()
		close(l.done)
		// Closing conn ends the read loop's read and any write under way;
		// ending the tunnel ends the yamux session, which unblocks every
		// channel's reader and writer.
		l.conn.Close()
		l.endSession()
		l.bulkEnded(true)
		l.wdMu.Lock()
		if l.wd != nil {
			l.wd.Stop()
		}
		l.wdMu.Unlock()
	})
}

// Close closes the link and waits for its loops (and its yamux session's)
// to end. It is idempotent. It must not be called from a FrameHandler or
// onClose (use Abort there).
func (l *Link) Close() error {
	l.Abort(ErrLinkClosed)
	l.startMu.Lock()
	started := l.started
	l.closedEarly = !started
	l.startMu.Unlock()
	if started {
		l.loops.Wait()
	}
	l.waitSession()
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
