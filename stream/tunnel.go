package stream

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/yamux"
)

// Channels: a link's bulk channels are the streams of one yamux session,
// whose bytes travel in tunnel frames among the link's message frames
// (PROTOCOL.md section 1). The session exists only once a channel is
// wanted: the first OpenChannel, AcceptChannel on this side or the first
// tunnel frame from the peer creates it, so a link that never carries a
// channel runs only its read and write loops. The parent's session is the
// yamux client, the child's the server.
//
// The path of the session's bytes:
//
//	in:  conn → link read loop (tunnel frame) → tunnel → gate → yamux receive loop
//	out: yamux send loop → gate → tunnel → Link.wmu → conn
//
// Inbound, a tunnel frame of at most tunnelCopyMax bytes is copied into
// the tunnel's buffer and the read loop goes on; a larger one is handed
// over whole: yamux's receive loop reads it straight from the read loop's
// buffered reader (into the stream's receive buffer, for a big body),
// while the read loop waits for it to be consumed. yamux never waits on
// its readers (it buffers each stream up to its window), so the wait is
// short, and it returns when the link closes.
//
// Outbound, yamux's bytes go out in tunnel frames of at most
// wire.MaxTunnelPayload bytes (1 MiB), each written whole under Link.wmu,
// so message frames (heartbeats among them) go out between the frames of
// a big channel write. The tunnel header is joined with the start of the
// payload: one write for a small frame.

const (
	// tunnelCopyMax is the largest tunnel frame copied into the tunnel's
	// buffer; a larger one is read by yamux in place.
	tunnelCopyMax = 4 << 10
	// bulkFrame is the size from which a tunnel frame, in or out, is
	// bulk data: the link's pipes grow (pipes.go).
	bulkFrame = 64 << 10
	// tunnelBufMax bounds the copied bytes waiting for yamux. It is small
	// so the read loop stops reading soon after yamux does: the pipe, not
	// this buffer, holds what a peer sends ahead (a peer flooding channel
	// opens gets no further ahead of the gate than it could before).
	tunnelBufMax = 4 << 10
)

// chanSession is a link's yamux session and what serves it.
type chanSession struct {
	tun  *tunnel
	gate *gatedConn
	sess *yamux.Session
}

// tunnel is the connection of a link's yamux session: its reads come from
// the tunnel frames the link's read loop reads, its writes go out in
// tunnel frames. It is used by yamux's goroutines and the gate; it never
// touches the link's connection but through the link.
type tunnel struct {
	l *Link

	mu      sync.Mutex
	buf     []byte        // copied tunnel bytes not yet read by yamux, from off
	off     int           //
	src     *bufio.Reader // while rem > 0: the read loop's reader, handed over
	rem     int           // bytes of the current tunnel frame yamux may still read from src
	rerr    error         // reading src failed: the link's connection did
	closed  bool          // the link closed: reads return EOF once buf is drained
	scratch []byte        // the read loop's: a small frame on its way into buf

	readable chan struct{} // wakes yamux's read (cap 1)
	consumed chan struct{} // wakes the read loop: buf drained or the handed-over frame read (cap 1)
}

func newTunnel(l *Link) *tunnel {
	return &tunnel{l: l, readable: make(chan struct{}, 1), consumed: make(chan struct{}, 1)}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Read is yamux's receive loop (through the gate) reading the session's
// bytes. It blocks until some arrive or the link closes.
func (t *tunnel) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		t.mu.Lock()
		if t.off < len(t.buf) {
			n := copy(p, t.buf[t.off:])
			t.off += n
			if t.off == len(t.buf) {
				t.buf, t.off = t.buf[:0], 0
				signal(t.consumed)
			}
			t.mu.Unlock()
			return n, nil
		}
		if t.rem > 0 {
			src, rem := t.src, t.rem
			t.mu.Unlock()
			n, err := src.Read(p[:min(len(p), rem)])
			t.mu.Lock()
			t.rem -= n
			if err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF // the connection ended inside a tunnel frame
				}
				t.rerr, t.rem = err, 0
			}
			if t.rem == 0 {
				t.src = nil
				signal(t.consumed)
			}
			t.mu.Unlock()
			return n, err
		}
		if t.closed {
			t.mu.Unlock()
			return 0, io.EOF
		}
		t.mu.Unlock()
		<-t.readable
	}
}

// buffered is how many bytes Read can return without blocking.
func (t *tunnel) buffered() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(t.buf) - t.off
	if t.rem > 0 {
		n += min(t.rem, t.src.Buffered())
	}
	return n
}

// deliver hands the n bytes of a tunnel frame, waiting in r, to yamux. It
// runs on the link's read loop and returns once r is the read loop's
// again, or the link closes (ErrLinkClosed).
func (t *tunnel) deliver(r *bufio.Reader, n int) error {
	done := t.l.done
	if n <= tunnelCopyMax {
		if cap(t.scratch) < n {
			t.scratch = make([]byte, max(n, 512))
		}
		b := t.scratch[:n]
		if _, err := io.ReadFull(r, b); err != nil {
			return unexpected(err)
		}
		for {
			t.mu.Lock()
			if t.closed {
				t.mu.Unlock()
				return t.dropped(r, 0)
			}
			if len(t.buf)-t.off+n <= tunnelBufMax {
				if t.off > 0 && len(t.buf)+n > cap(t.buf) {
					t.buf = append(t.buf[:0], t.buf[t.off:]...)
					t.off = 0
				}
				t.buf = append(t.buf, b...)
				t.mu.Unlock()
				signal(t.readable)
				return nil
			}
			t.mu.Unlock()
			select {
			case <-t.consumed:
			case <-done:
				return ErrLinkClosed
			}
		}
	}
	// A big frame: yamux reads it from r, once what was copied before it
	// has been read.
	if n >= bulkFrame {
		t.l.bulkFlowing()
	}
	handed := false
	for {
		t.mu.Lock()
		switch {
		case t.closed && !handed:
			t.mu.Unlock()
			return t.dropped(r, n)
		case !handed && t.off == len(t.buf):
			t.src, t.rem, handed = r, n, true
			t.mu.Unlock()
			signal(t.readable)
		case handed && t.rem == 0:
			err := t.rerr
			t.mu.Unlock()
			return err
		default:
			t.mu.Unlock()
		}
		select {
		case <-t.consumed:
		case <-done:
			return ErrLinkClosed
		}
	}
}

// dropped skips the rest of a tunnel frame (n bytes in r) that arrived
// after the session ended: the link goes on until the write loop closes it
// (ErrLinkClosed once it has).
func (t *tunnel) dropped(r *bufio.Reader, n int) error {
	select {
	case <-t.l.done:
		return ErrLinkClosed
	default:
	}
	if _, err := io.CopyN(io.Discard, r, int64(n)); err != nil {
		return unexpected(err)
	}
	return nil
}

// shutdown ends the tunnel: yamux reads EOF once the bytes it was handed
// are read, which ends its session. It never blocks.
func (t *tunnel) shutdown() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	signal(t.readable)
}

// readErr is why reading a tunnel frame failed, if it did.
func (t *tunnel) readErr() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.rerr
}

// Close is yamux closing its session (through the gate). It never blocks.
// On its own, the session's end ends the link, but not from here: the
// write loop closes the link once yamux has closed every stream
// (Link.sessEnded), so the peer, which notices the link's end at once,
// never sees it before this side's channels are closed.
func (t *tunnel) Close() error {
	t.shutdown()
	t.l.sessEndOnce.Do(func() { close(t.l.sessEnded) })
	return nil
}

// send writes a and then b, one piece of the yamux stream, in tunnel
// frames. The gate's write lock is held: pieces never interleave.
func (t *tunnel) send(a, b []byte) error {
	for len(a)+len(b) > 0 {
		n := min(len(a)+len(b), wire.MaxTunnelPayload)
		na := min(len(a), n)
		if err := t.l.writeTunnel(a[:na], b[:n-na]); err != nil {
			return err
		}
		a, b = a[na:], b[n-na:]
	}
	return nil
}

// session returns the link's yamux session, creating it (and the gate
// and the tunnel) on first use. It fails once the link has closed.
func (l *Link) session() (*chanSession, error) {
	if s := l.sess.Load(); s != nil {
		return s, nil
	}
	l.chMu.Lock()
	defer l.chMu.Unlock()
	if s := l.sess.Load(); s != nil {
		return s, nil
	}
	if l.chClosed {
		return nil, l.closedErr()
	}
	t := newTunnel(l)
	gate := newGatedConn(t, l.cfg, l.log)
	gate.peer.Store(l.peerID)
	yc := l.cfg.yamuxConfig(l.log)
	var sess *yamux.Session
	var err error
	if l.parent {
		sess, err = yamux.Client(gate, yc)
	} else {
		sess, err = yamux.Server(gate, yc)
	}
	if err != nil {
		return nil, fmt.Errorf("arbor: link to %d: channels: %w", l.peerID, err)
	}
	s := &chanSession{tun: t, gate: gate, sess: sess}
	l.acMu.Lock()
	serving := l.acServe != nil
	l.acMu.Unlock()
	if serving {
		f := l.channelArrived
		gate.onSYN.Store(&f)
	}
	gate.start(sess.CloseChan())
	l.sess.Store(s)
	return s, nil
}

// endSession stops the creation of a session (the link has closed) and
// ends the one that runs. It never blocks.
func (l *Link) endSession() {
	l.chMu.Lock()
	l.chClosed = true
	s := l.sess.Load()
	l.chMu.Unlock()
	if s != nil {
		s.tun.shutdown()
	}
}

// waitSession waits for the session's goroutines (yamux's loops, the
// injector) to end, once the link has closed.
func (l *Link) waitSession() {
	l.chMu.Lock()
	s := l.sess.Load()
	l.chMu.Unlock()
	if s != nil {
		s.sess.Close()
		<-s.gate.injDone
	}
}

// tunnelIn hands a tunnel frame from the read loop to the session,
// creating it for the peer's first.
func (l *Link) tunnelIn(r *bufio.Reader, n int) error {
	s, err := l.session()
	if err != nil {
		return err
	}
	return s.tun.deliver(r, n)
}

// writeTunnel writes a tunnel frame carrying a and then b (at most
// wire.MaxTunnelPayload bytes together) to the connection, between
// message frames. a is at most a yamux header. The header goes out joined
// with the first writeChunk bytes of payload, the rest in pieces of
// writeChunk bytes, each under the watchdog.
func (l *Link) writeTunnel(a, b []byte) error {
	if len(a)+len(b) >= bulkFrame {
		l.bulkFlowing()
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	select {
	case <-l.done:
		return l.closedErr()
	default:
	}
	var hb [wire.TunnelHeaderSize]byte
	wire.PutTunnelHeader(hb[:], len(a)+len(b))
	first := min(len(b), writeChunk-len(hb)-len(a))
	l.tjoin = append(append(append(l.tjoin[:0], hb[:]...), a...), b[:first]...)
	if err := l.connWrite(l.tjoin); err != nil {
		return err
	}
	for b = b[first:]; len(b) > 0; {
		n := min(len(b), writeChunk)
		if err := l.connWrite(b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// sessionEnded is why the link ends when its yamux session ended on its
// own: the channel gate's cause when the gate ended it, the connection's
// failure under a tunnel frame, else yamux's refusal of what the peer
// sent.
func (l *Link) sessionEnded() error {
	if s := l.sess.Load(); s != nil {
		if err := s.gate.rerrSafe(); err != nil {
			return err
		}
		if err := s.tun.readErr(); err != nil {
			return err
		}
	}
	return fmt.Errorf("%w: the channel session (yamux) ended: the peer broke its protocol or left a channel unacknowledged", ErrProtocol)
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
	s, err := l.session()
	if err != nil {
		return nil, err
	}
	release, err := s.gate.reserve(ctx, l.done)
	if err != nil {
		return nil, l.closedOr(err)
	}
	// Once OpenStream returns, its SYN has been written: the stream
	// holds its own slot.
	defer release()
	st, err := s.sess.OpenStream()
	if err != nil {
		return nil, l.closedOr(err)
	}
	return st, nil
}

// AcceptChannel waits for the peer to open a bulk stream. It returns when
// ctx ends or the link closes. The peer may send at most yamux's initial
// window (256 KiB) on the stream until GrantWindow is called for it.
func (l *Link) AcceptChannel(ctx context.Context) (net.Conn, error) {
	s, err := l.session()
	if err != nil {
		return nil, err
	}
	st, err := s.sess.AcceptStreamWithContext(ctx)
	if err != nil {
		return nil, l.closedOr(err)
	}
	return st, nil
}

// ServeChannels calls serve with every channel the peer opens, until the
// link closes. It replaces a loop over AcceptChannel without a goroutine
// that waits for channels all the link's life: the goroutine that calls
// serve runs only while channels the peer opened wait to be accepted, so
// serve must not block for long (hand the channel to a goroutine of its
// own). It must be called at most once, and AcceptChannel must not be used
// on the same link. Channels the peer opened before the call are served
// too. It does not create the link's yamux session.
func (l *Link) ServeChannels(serve func(net.Conn)) {
	l.chMu.Lock()
	l.acMu.Lock()
	l.acServe = serve
	l.acMu.Unlock()
	s := l.sess.Load()
	l.chMu.Unlock()
	if s != nil {
		f := l.channelArrived
		s.gate.onSYN.Store(&f)
		l.channelArrived()
	}
}

// channelArrived starts the acceptor unless it runs or nothing waits.
// It is called by the gate, on yamux's receive loop, with the gate's lock
// held (lock order: gate.mu, then acMu); it never blocks.
func (l *Link) channelArrived() {
	s := l.sess.Load()
	if s == nil {
		return
	}
	l.acMu.Lock()
	start := l.acServe != nil && !l.acRunning && l.accepted < s.gate.synSeen.Load()
	if start {
		l.acRunning = true
	}
	l.acMu.Unlock()
	if start {
		go l.acceptLoop(s)
	}
}

// acceptLoop takes the channels the gate saw the peer open from yamux and
// hands them to serve, until none waits or the session ends. A channel
// that yamux itself refuses (its accept backlog full) is never taken; the
// acceptor then waits for the next one, as a permanent acceptor would.
func (l *Link) acceptLoop(s *chanSession) {
	for {
		l.acMu.Lock()
		if l.accepted >= s.gate.synSeen.Load() {
			l.acRunning = false
			l.acMu.Unlock()
			return
		}
		serve := l.acServe
		l.acMu.Unlock()
		st, err := s.sess.AcceptStream()
		if err != nil {
			// The session ended, and the link with it. No channel
			// arrives any more, so no acceptor starts again.
			return
		}
		l.acMu.Lock()
		l.accepted++
		l.acMu.Unlock()
		serve(st)
	}
}

// GrantWindow gives a channel from AcceptChannel its full receive window
// (Config.StreamWindow): its user has claimed it and reads it. Until then
// the peer may send only yamux's initial 256 KiB on it, so channels
// nobody claims hold little. It never blocks; a second call, or one for
// a channel that has ended, does nothing.
func (l *Link) GrantWindow(c net.Conn) {
	st, ok := c.(interface{ StreamID() uint32 })
	s := l.sess.Load()
	if !ok || s == nil {
		return
	}
	if err := s.gate.grant(st.StreamID()); err != nil {
		l.log.Error("closing link: peer does not read", "peer", l.peerID, "error", err)
		l.Abort(err)
	}
}

// Channels is how many channels are open on the link: opened by the peer
// (in) and by this side (out). A channel counts until both sides have
// closed it or either has reset it.
func (l *Link) Channels() (in, out int) {
	if s := l.sess.Load(); s != nil {
		return s.gate.channels()
	}
	return 0, 0
}

// ChannelsRefused counts the channels the peer opened past
// Config.MaxChannels, which were reset as they arrived.
func (l *Link) ChannelsRefused() uint64 {
	if s := l.sess.Load(); s != nil {
		return s.gate.refused.Load()
	}
	return 0
}

// closedOr is err, or the link's closed error once the link has closed
// (a channel call fails when the session ends under it).
func (l *Link) closedOr(err error) error {
	if s := l.sess.Load(); s != nil && s.sess.IsClosed() {
		l.Abort(l.sessionEnded())
	}
	select {
	case <-l.done:
		return l.closedErr()
	default:
		return err
	}
}
