package stream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Channel limit. The bytes of a link's yamux session pass through a gate
// (gatedConn) between yamux and the link's tunnel (tunnel.go). The gate
// reads the 12-byte yamux header of every frame in both directions, and so
// knows which streams exist on the link without asking yamux, which has no
// API for it (v0.1.2):
//
//   - A stream exists from its SYN until both sides have sent FIN, or
//     either has sent RST (yamux's stream close timeout ends in one).
//     Every stream is a channel.
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
// goroutine per session (the injector), between yamux's frames: a receive
// loop never waits to write.
//
// Lock order: gatedConn.wmu before gatedConn.mu; gatedConn.wmu before
// Link.wmu (the tunnel's writes); gatedConn.mu before Link.acMu
// (channelArrived).

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

// gatedConn sits between a yamux session and the link's tunnel. Besides
// the channel gate described above, it joins frames on the way out:
// yamux's send loop writes every data frame as two writes, the 12-byte
// header and then the body; gatedConn holds such a header back and hands
// it to the tunnel with the body, so a small channel write costs one write
// to the pipe (one system call, one wake-up of the reader) instead of two;
// joining changes no byte of the yamux stream.
type gatedConn struct {
	t    *tunnel
	max  int
	log  hclog.Logger
	peer atomic.Uint32 // the node at the other end

	// The read side is used by yamux's receive loop alone. The tunnel
	// is in memory: the gate reads it unbuffered.
	rhdr  [yamuxHeaderSize]byte
	rout  []byte                // header bytes not yet handed to yamux
	rbody uint64                // body bytes of the current frame not yet handed to yamux
	raw   bool                  // a header yamux refuses: pass the rest on unparsed
	rerr  error                 // the gate closed the link: every further read fails
	cause atomic.Pointer[error] // rerr, for other goroutines

	// wmu serializes writes to the tunnel: yamux's send loop and the injector.
	wmu  sync.Mutex
	hdr  [yamuxHeaderSize]byte
	held bool                  // hdr waits for its body
	whdr [yamuxHeaderSize]byte // a window update held back

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

func newGatedConn(t *tunnel, c *Config, log hclog.Logger) *gatedConn {
	return &gatedConn{
		t:       t,
		max:     c.MaxChannels,
		log:     log,
		streams: make(map[uint32]*gateStream),
		freed:   make(chan struct{}),
		kick:    make(chan struct{}, 1),
		injDone: make(chan struct{}),
	}
}

// start runs the injector until stop (the session's close) is closed.
func (g *gatedConn) start(stop <-chan struct{}) { go g.inject(stop) }

// Close is yamux closing its session: the tunnel ends, and the link with it.
func (g *gatedConn) Close() error { return g.t.Close() }

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
			if n > 0 && g.t.buffered() == 0 {
				return n, nil
			}
			q := p[n:]
			if !g.raw && uint64(len(q)) > g.rbody {
				q = q[:g.rbody]
			}
			k, err := g.t.Read(q)
			n += k
			if !g.raw {
				g.rbody -= uint64(k)
			}
			if err != nil {
				return n, err
			}
		default:
			if n > 0 && g.t.buffered() < yamuxHeaderSize {
				return n, nil
			}
			if _, err := io.ReadFull(g.t, g.rhdr[:]); err != nil {
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
	if typ > yamuxTypeWindowUpdate || id == 0 {
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
	} else {
		g.out--
		close(g.freed)
		g.freed = make(chan struct{})
	}
	if g.in+g.out == 0 {
		g.t.l.bulkEnded(false)
	}
}

// sent looks at a header yamux writes to the peer and returns it, with
// the window update held back for an unclaimed stream of the peer.
func (g *gatedConn) sent(p []byte) []byte {
	typ, flags := p[1], binary.BigEndian.Uint16(p[2:4])
	id, length := binary.BigEndian.Uint32(p[4:8]), binary.BigEndian.Uint32(p[8:12])
	if p[0] != 0 || typ > yamuxTypeWindowUpdate || id == 0 {
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

// Write passes what yamux's send loop writes on to the tunnel, joining
// a data frame's header with its body. Only the send loop calls it.
func (g *gatedConn) Write(p []byte) (int, error) {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	if g.held {
		g.held = false
		if err := g.t.send(g.hdr[:], p); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	// Every write but a body is one frame header (yamux writes a body
	// only after its header, and the header of a body is held).
	if len(p) != yamuxHeaderSize {
		if err := g.t.send(nil, p); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	if p[0] == 0 && p[1] == yamuxTypeData && p[8]|p[9]|p[10]|p[11] != 0 {
		// A data frame header announcing a body: the body is yamux's
		// next write.
		g.sent(p)
		copy(g.hdr[:], p)
		g.held = true
		return len(p), nil
	}
	if err := g.t.send(nil, g.sent(p)); err != nil {
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
		err := g.t.send(nil, b)
		g.wmu.Unlock()
		if err != nil {
			return // the link has failed; the session ends with it
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
