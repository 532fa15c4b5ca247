package router

import (
	"context"
	"errors"
	"fmt"
	"github.com/arbor-project/arbor/internal/errs"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arbor-project/arbor/stream/wire"
)

// Channels: bulk byte streams between two nodes, one yamux stream per hop,
// spliced at every intermediate node (stream/PROTOCOL.md, section 11).
//
// The opener writes one CHANNEL frame (the usual 28-byte header with dst,
// src, auth, then a ChannelOpen payload) as the first bytes of a new stream
// on the link toward dst. Each intermediate reads that frame, applies the
// routing rules of messages (reverse-path check, child route first, never
// back up to the parent, unidirectional unless lifted), opens a stream on
// the next link, forwards the frame unchanged and splices the two streams.
// The destination checks its channel policy (the opener must be allowed to
// call it: by default this node or an ancestor), parks the stream under
// (src, ID) and answers with a REPLY frame; any node that refuses answers
// with a DEAD frame carrying the reason, as for messages. A function the
// opener then calls claims the parked stream (ClaimChannel), so the
// function registry's policies, admission, deadlines and cancellation
// apply to channel work unchanged.

// ChannelOpen is the payload of the frame that opens a channel.
type ChannelOpen struct {
	// ID names the channel on its opener: (src, ID) is unique while the
	// opener's process lives.
	ID uint32 `cbor:"1,keyasint"`
	// Service is what the channel is for (the function that will claim
	// it); informational, for logs.
	Service string `cbor:"2,keyasint,omitempty"`
}

const (
	// channelOpenTimeout bounds reading the open frame, opening the next
	// hop and waiting for the destination's answer.
	channelOpenTimeout = 10 * time.Second
	// channelParkTimeout is how long an accepted channel waits for the
	// function that claims it before it is closed.
	channelParkTimeout = 30 * time.Second
	// maxChannelOpen bounds the open frame's payload.
	maxChannelOpen = 64 << 10
	// SpliceBuffer is the copy buffer per direction of a splice. With the
	// yamux windows it bounds a channel's memory at an intermediate node:
	// 2 x (StreamWindow + SpliceBuffer) per channel (the receive buffers of
	// its two streams, each at most one window, plus the two copy buffers).
	SpliceBuffer = 256 << 10
)

// ErrChannelRefused matches a channel the destination or a node on the
// way refused (it is a *DeadError too).
var ErrChannelRefused = errors.New("arbor: channel refused")

// Channel is one end of a byte channel. Read and Write move bytes to and
// from the other end; CloseWrite is a half close (the peer reads EOF once
// it has read everything before it); Close ends both directions; Abort ends
// both at once, unblocking readers and writers. Bytes alone do not tell an
// abort from a clean end: protocols on channels end with an explicit
// trailer. A Channel is safe for one reader and one writer at a time.
type Channel struct {
	net.Conn
	// ID names the channel on Src; Src opened it, Dst accepted it.
	ID       uint32
	Src, Dst uint32
	Service  string

	// grant gives a channel that arrived on a link its full window once
	// it is claimed (stream.Link.GrantWindow); nil for one to this node.
	grant     func()
	abortOnce sync.Once
}

// CloseWrite sends EOF to the peer; reading goes on.
func (c *Channel) CloseWrite() error {
	// A yamux stream's Close is a half close (FIN).
	if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return c.Conn.Close()
}

// Close ends both directions: EOF to the peer, and pending reads return.
func (c *Channel) Close() error {
	err := c.Conn.Close()
	_ = c.Conn.SetReadDeadline(time.Now())
	return err
}

// Abort ends the channel at once: blocked reads and writes return an
// error and the peer reads EOF.
func (c *Channel) Abort() {
	c.abortOnce.Do(func() {
		_ = c.Conn.SetDeadline(time.Now())
		_ = c.Conn.Close()
	})
}

// ReadFrom copies r to the channel until EOF, in writes of up to
// SpliceBuffer bytes: each is one yamux frame when the window allows. It
// is what io.Copy(c, r) calls, and io.Copy(c, file) too (os.File's WriteTo
// falls back to a copy into c), which would otherwise send the file in
// frames of io.Copy's 32 KiB, each a frame header, a wake-up of yamux's
// send loop and a pipe write at every hop.
func (c *Channel) ReadFrom(r io.Reader) (int64, error) {
	bp := spliceBufs.Get().(*[]byte)
	defer spliceBufs.Put(bp)
	return io.CopyBuffer(writerOnly{c.Conn}, readerOnly{r}, *bp)
}

// WriteTo copies the channel to w until EOF (returning nil then), in
// reads of up to SpliceBuffer bytes. It is what io.Copy(w, c) calls, and
// io.Copy(file, c) and io.Copy(io.Discard, c) too, which would otherwise
// read the channel 32 KiB or 8 KiB at a time.
func (c *Channel) WriteTo(w io.Writer) (int64, error) {
	bp := spliceBufs.Get().(*[]byte)
	defer spliceBufs.Put(bp)
	return io.CopyBuffer(writerOnly{w}, readerOnly{c.Conn}, *bp)
}

// readerOnly and writerOnly hide the ReadFrom and WriteTo of what they
// wrap, so io.CopyBuffer uses the buffer it is given.
type (
	readerOnly struct{ io.Reader }
	writerOnly struct{ io.Writer }
)

type chanKey struct{ src, id uint32 }

type parkedChannel struct {
	ch    *Channel
	timer *time.Timer
}

// channelTable is the router's channel state; its zero value is ready.
type channelTable struct {
	mu      sync.Mutex
	parked  map[chanKey]*parkedChannel
	splices atomic.Int64
	policy  Policy
}

// SetChannelPolicy sets who may open channels to this node. The default
// admits the authority of this node and its ancestors, as for calls.
func (r *Router) SetChannelPolicy(p Policy) {
	r.chans.mu.Lock()
	r.chans.policy = p
	r.chans.mu.Unlock()
}

// Splices is the number of channels this node is splicing right now.
func (r *Router) Splices() int64 { return r.chans.splices.Load() }

// ParkedChannels is the number of accepted channels not claimed yet.
func (r *Router) ParkedChannels() int {
	r.chans.mu.Lock()
	defer r.chans.mu.Unlock()
	return len(r.chans.parked)
}

// OpenChannel opens a byte channel to node dst for service and returns
// once dst has accepted it, a node on the way has refused it (*DeadError,
// matching ErrChannelRefused), or ctx ends. The caller then usually calls
// a function on dst that claims the channel by its ID.
func (r *Router) OpenChannel(ctx context.Context, dst uint32, service string) (*Channel, error) {
	select {
	case <-r.closed:
		return nil, ErrClosed
	default:
	}
	id := r.NewHandle()
	if dst == r.id {
		a, b := net.Pipe()
		r.park(&Channel{Conn: b, ID: id, Src: r.id, Dst: r.id, Service: service})
		return &Channel{Conn: a, ID: id, Src: r.id, Dst: r.id, Service: service}, nil
	}
	r.mu.RLock()
	out := r.routes[dst].port
	if out == nil {
		out = r.parent
	}
	r.mu.RUnlock()
	if out == nil {
		return nil, &channelRefusal{DeadError{Node: r.id, Reason: fmt.Sprintf("no route to %d, my ID is %d", dst, r.id)}}
	}
	deadline := time.Now().Add(channelOpenTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	// A link with as many channels open as it allows makes the opener
	// wait for one to end, as long as the open may take.
	octx, ocancel := context.WithDeadline(ctx, deadline)
	s, err := out.Link.OpenChannelContext(octx)
	ocancel()
	if err != nil {
		return nil, errs.Wrap(err, fmt.Sprintf("channel to node %d: %s", dst, out))
	}
	fail := func(err error) (*Channel, error) {
		_ = s.SetDeadline(time.Now())
		s.Close()
		return nil, err
	}
	body, err := wire.Marshal(ChannelOpen{ID: id, Service: service})
	if err != nil {
		return fail(err)
	}
	_ = s.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = s.SetDeadline(time.Now()) })
	defer stop()
	h := wire.Header{Dst: dst, Src: r.id, Auth: r.id, Handle: wire.HandleChannel}
	if _, err := s.Write(wire.AppendFrame(nil, h, body)); err != nil {
		return fail(r.openErr(ctx, dst, out, err))
	}
	var hb [wire.HeaderSize]byte
	rh, payload, err := wire.ReadFrame(s, hb[:], maxChannelOpen)
	if err != nil {
		return fail(r.openErr(ctx, dst, out, err))
	}
	if rh.IsDead() {
		reason, derr := wire.DecodeDeadReason(payload)
		if derr != nil {
			reason = "undecodable refusal: " + derr.Error()
		}
		return fail(&channelRefusal{DeadError{Node: rh.Src, Reason: reason}})
	}
	if rh.Handle != wire.HandleChannel || rh.Src != dst {
		return fail(fmt.Errorf("arbor: channel to node %d: unexpected answer %s", dst, rh))
	}
	_ = s.SetDeadline(time.Time{})
	return &Channel{Conn: s, ID: id, Src: r.id, Dst: dst, Service: service}, nil
}

func (r *Router) openErr(ctx context.Context, dst uint32, out *Port, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("arbor: channel to node %d: %w", dst, ctx.Err())
	}
	select {
	case <-out.Link.Done():
		return errs.Wrap(out.Link.Err(), fmt.Sprintf("channel to node %d: %s", dst, out))
	default:
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("arbor: channel to node %d: closed before it was accepted", dst)
	}
	return errs.Wrap(err, fmt.Sprintf("channel to node %d", dst))
}

// channelRefusal is a DeadError for a channel; it matches ErrDead and
// ErrChannelRefused.
type channelRefusal struct{ DeadError }

func (e *channelRefusal) Error() string {
	return fmt.Sprintf("arbor: channel refused (node %d): %s", e.Node, reason(e.Reason))
}

func (e *channelRefusal) Is(target error) bool {
	return target == ErrChannelRefused || target == ErrDead
}

func (e *channelRefusal) Unwrap() error { return &e.DeadError }

// ClaimChannel takes the channel src opened with id off the parked list.
// A function serving a channel calls it with its caller's ID (funcs.Call
// Src) and the channel ID it was given.
func (r *Router) ClaimChannel(src, id uint32) (*Channel, error) {
	r.chans.mu.Lock()
	p, ok := r.chans.parked[chanKey{src, id}]
	if ok {
		delete(r.chans.parked, chanKey{src, id})
	}
	r.chans.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("arbor: node %d: no channel %d from node %d (never opened, or not claimed within %s)",
			r.id, id, src, channelParkTimeout)
	}
	p.timer.Stop()
	if p.ch.grant != nil {
		p.ch.grant()
	}
	return p.ch, nil
}

// park keeps an accepted channel until a function claims it.
func (r *Router) park(ch *Channel) bool {
	key := chanKey{ch.Src, ch.ID}
	r.chans.mu.Lock()
	defer r.chans.mu.Unlock()
	if r.chans.parked == nil {
		r.chans.parked = make(map[chanKey]*parkedChannel)
	}
	if _, dup := r.chans.parked[key]; dup {
		return false
	}
	p := &parkedChannel{ch: ch}
	p.timer = time.AfterFunc(channelParkTimeout, func() {
		r.chans.mu.Lock()
		cur := r.chans.parked[key]
		if cur == p {
			delete(r.chans.parked, key)
		}
		r.chans.mu.Unlock()
		if cur == p {
			r.log.Warn("channel not claimed in time; closed", "src", ch.Src, "channel", ch.ID, "service", ch.Service)
			ch.Abort()
		}
	})
	r.chans.parked[key] = p
	return true
}

// acceptChannels serves the channels the peer of p opens, until p closes.
// The link admits at most stream.Config.MaxChannels of them at once (it
// resets the rest as they arrive), so the goroutines here are bounded too;
// each channel has only yamux's initial window until it is claimed here
// or accepted beyond this node (stream.Link.GrantWindow).
func (r *Router) acceptChannels(p *Port) {
	// The link accepts them on a goroutine that runs only while channels
	// wait, so an idle link holds no acceptor.
	p.Link.ServeChannels(func(s net.Conn) { go r.serveChannel(p, s) })
}

// serveChannel reads the open frame of a stream that arrived on in and
// parks it here or splices it toward its destination.
func (r *Router) serveChannel(in *Port, s net.Conn) {
	_ = s.SetDeadline(time.Now().Add(channelOpenTimeout))
	var hb [wire.HeaderSize]byte
	h, payload, err := wire.ReadFrame(s, hb[:], maxChannelOpen)
	if err != nil {
		r.log.Debug("channel closed before its open frame", "link", in.String(), "error", err)
		abortConn(s)
		return
	}
	var op ChannelOpen
	if h.Handle != wire.HandleChannel || h.Flags != 0 {
		r.refuseChannel(s, h, fmt.Sprintf("bad channel open frame %s", h))
		return
	}
	if err := wire.Unmarshal(payload, &op); err != nil {
		r.refuseChannel(s, h, fmt.Sprintf("bad channel open payload: %v", err))
		return
	}
	v := r.decide(in, &h)
	switch {
	case v.spoofed:
		abortConn(s)
		return
	case v.local:
		r.acceptHere(in, s, h, op)
		return
	case v.refuse != "":
		r.refuseChannel(s, h, v.refuse)
		return
	}
	out := v.out
	deadline := time.Now().Add(channelOpenTimeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	ns, err := out.Link.OpenChannelContext(ctx)
	cancel()
	if err != nil {
		r.refuseChannel(s, h, fmt.Sprintf("%s: %s", out, errs.Reason(err)))
		return
	}
	_ = ns.SetDeadline(deadline)
	if _, err := ns.Write(wire.AppendFrame(nil, h, payload)); err != nil {
		abortConn(ns)
		r.refuseChannel(s, h, fmt.Sprintf("%s: %v", out, err))
		return
	}
	// The destination's answer passes back before anything else: only a
	// channel it accepted gets its full window on the link it came in on,
	// so channels on their way to a refusal hold little here.
	var ab [wire.HeaderSize]byte
	ah, apayload, err := wire.ReadFrame(ns, ab[:], maxChannelOpen)
	if err == nil {
		_, err = s.Write(wire.AppendFrame(nil, ah, apayload))
	}
	if err != nil || ah.IsDead() || ah.Flags&wire.FlagReply == 0 {
		r.log.Debug("channel not accepted beyond this node", "open", h.String(), "answer", ah.String(), "error", err)
		abortConn(ns)
		if err != nil {
			abortConn(s)
		} else {
			s.Close() // the refusal was passed on
			_ = s.SetReadDeadline(time.Now())
		}
		return
	}
	in.Link.GrantWindow(s)
	_ = ns.SetDeadline(time.Time{})
	_ = s.SetDeadline(time.Time{})
	r.splice(in, s, out, ns, h, op)
}

func (r *Router) acceptHere(in *Port, s net.Conn, h wire.Header, op ChannelOpen) {
	r.chans.mu.Lock()
	policy := r.chans.policy
	r.chans.mu.Unlock()
	if policy == nil {
		policy = AncestorsOnly(r)
	}
	if !policy(&Message{Header: h, Port: in}) {
		r.log.Warn("channel refused by policy", "auth", h.Auth, "src", h.Src, "service", op.Service)
		r.refuseChannel(s, h, ReasonRefused)
		return
	}
	ch := &Channel{Conn: s, ID: op.ID, Src: h.Src, Dst: r.id, Service: op.Service,
		grant: func() { in.Link.GrantWindow(s) }}
	if !r.park(ch) {
		r.refuseChannel(s, h, fmt.Sprintf("duplicate channel %d from node %d", op.ID, h.Src))
		return
	}
	ack := wire.Header{Dst: h.Src, Src: r.id, Auth: r.id, Handle: wire.HandleChannel, Flags: wire.FlagReply}
	if _, err := s.Write(wire.AppendFrame(nil, ack, nil)); err != nil {
		if c, err := r.ClaimChannel(h.Src, op.ID); err == nil {
			c.Abort()
		}
		return
	}
	_ = s.SetDeadline(time.Time{})
}

// refuseChannel answers an open frame with a DEAD frame and closes s.
func (r *Router) refuseChannel(s net.Conn, h wire.Header, reason string) {
	r.log.Debug("channel refused", "reason", reason, "open", h.String())
	dead := wire.Header{Dst: h.Src, Src: r.id, Auth: r.id, Handle: wire.HandleChannel, Flags: wire.FlagDead}
	_ = s.SetWriteDeadline(time.Now().Add(channelOpenTimeout))
	_, _ = s.Write(wire.AppendFrame(nil, dead, wire.EncodeDeadReason(reason)))
	s.Close()
	_ = s.SetReadDeadline(time.Now())
}

func abortConn(c net.Conn) {
	_ = c.SetDeadline(time.Now())
	c.Close()
}

var spliceBufs = sync.Pool{New: func() any { b := make([]byte, SpliceBuffer); return &b }}

// splice copies a↔b until both directions have ended. EOF in one
// direction is passed on as a half close; an error in either direction, or
// the loss of either link, aborts both at once, so the ends read EOF early
// and their protocols' trailers tell them the channel was cut short.
func (r *Router) splice(ap *Port, a net.Conn, bp *Port, b net.Conn, h wire.Header, op ChannelOpen) {
	r.chans.splices.Add(1)
	defer r.chans.splices.Add(-1)
	var once sync.Once
	abort := func(why string) {
		once.Do(func() {
			r.log.Debug("channel aborted", "src", h.Src, "dst", h.Dst, "channel", op.ID, "why", why)
			abortConn(a)
			abortConn(b)
		})
	}
	var wg sync.WaitGroup
	wg.Add(2)
	pump := func(dst net.Conn, dstPort *Port, src net.Conn, srcPort *Port) {
		defer wg.Done()
		bp := spliceBufs.Get().(*[]byte)
		defer spliceBufs.Put(bp)
		_, err := io.CopyBuffer(dst, src, *bp)
		select {
		case <-srcPort.Link.Done():
			err = fmt.Errorf("%s: %s", srcPort, errs.Reason(srcPort.Link.Err()))
		default:
		}
		if err != nil {
			abort(errs.Reason(err))
			return
		}
		dst.Close() // half close: EOF travels on
	}
	go pump(b, bp, a, ap)
	go pump(a, ap, b, bp)
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return
	case <-ap.Link.Done():
		abort(fmt.Sprintf("%s lost", ap))
	case <-bp.Link.Done():
		abort(fmt.Sprintf("%s lost", bp))
	case <-r.closed:
		abort("router closed")
	}
	<-done
}
