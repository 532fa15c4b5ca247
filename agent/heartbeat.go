package agent

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
)

// Heartbeat states of a child link, as NODE_STATE, `arbor tree` and
// `arbor watch` name them.
const (
	StateUp           = "up"
	StateUnresponsive = "unresponsive"
	StateDown         = "down"
	// StateLeaving is a node's own word that it is shutting down on
	// purpose (arbor kill, stop, its parent's shutdown).
	StateLeaving = "leaving"
)

// HeartbeatConfig says how a node watches its links. It is the one
// liveness mechanism of a tree: links have no transport keepalive.
//
// A parent probes each child link every Interval with a PING (on the
// link's urgent lane, ahead of queued data); only answers to its own
// probes count as life, so a child that keeps sending but no longer
// answers is not alive. With no answer for UnresponsiveAfter the child is
// UNRESPONSIVE (calls still go through; it recovers to UP when an answer
// arrives); with none for DownAfter the link is closed with cause
// "heartbeat timeout", so DEL_ROUTE covers the child's subtree and pending
// calls fail. The watch is symmetric: a child that hears nothing from its
// parent (whose probes arrive every Interval) for DownAfter closes its
// parent link the same way, shuts down and kills what it runs. Children
// inherit the thresholds through the hello.
type HeartbeatConfig struct {
	Interval          time.Duration
	UnresponsiveAfter time.Duration
	DownAfter         time.Duration
}

// DefaultHeartbeat is 3 s / 10 s / 30 s: an idle link costs one small frame
// each way every 3 s; a node is flagged after about three missed probes,
// which a GC pause or a congested ssh hop does not cause; and a hung node
// fails its callers within half a minute, short enough for someone waiting
// at a terminal yet longer than a TCP retransmission storm.
func DefaultHeartbeat() HeartbeatConfig {
	return HeartbeatConfig{Interval: 3 * time.Second, UnresponsiveAfter: 10 * time.Second, DownAfter: 30 * time.Second}
}

// withDefaults fills zero fields from DefaultHeartbeat.
func (c HeartbeatConfig) withDefaults() HeartbeatConfig {
	d := DefaultHeartbeat()
	if c.Interval == 0 {
		c.Interval = d.Interval
	}
	if c.UnresponsiveAfter == 0 {
		c.UnresponsiveAfter = max(d.UnresponsiveAfter, c.Interval)
	}
	if c.DownAfter == 0 {
		c.DownAfter = max(d.DownAfter, c.UnresponsiveAfter)
	}
	return c
}

// Validate reports the first threshold that cannot work.
func (c HeartbeatConfig) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Interval < 0 || c.UnresponsiveAfter < 0 || c.DownAfter < 0:
		return fmt.Errorf("arbor: heartbeat: durations must be positive")
	case c.UnresponsiveAfter < c.Interval:
		return fmt.Errorf("arbor: heartbeat: unresponsive-after (%s) must be at least the heartbeat interval (%s)", c.UnresponsiveAfter, c.Interval)
	case c.DownAfter <= c.UnresponsiveAfter:
		return fmt.Errorf("arbor: heartbeat: down-after (%s) must be longer than unresponsive-after (%s)", c.DownAfter, c.UnresponsiveAfter)
	}
	return nil
}

// ErrHeartbeatTimeout matches the cause of a link the heartbeat closed
// because its peer stopped answering (errors.Is).
var ErrHeartbeatTimeout = errors.New("arbor: heartbeat timeout")

// heartbeatTimeout is that cause, with the silence it measured.
type heartbeatTimeout struct{ msg string }

func (e *heartbeatTimeout) Error() string        { return e.msg }
func (e *heartbeatTimeout) Is(target error) bool { return target == ErrHeartbeatTimeout }

// HeartbeatFromHello is the configuration a parent passed down.
func HeartbeatFromHello(h wire.Hello) HeartbeatConfig {
	return HeartbeatConfig{Interval: h.HeartbeatInterval, UnresponsiveAfter: h.UnresponsiveAfter, DownAfter: h.DownAfter}
}

// writeTimeout is the write timeout for this node's links: above the down
// threshold, so the heartbeat is what decides a peer is gone.
func (c HeartbeatConfig) writeTimeout(def time.Duration) time.Duration {
	return max(def, 2*c.withDefaults().DownAfter)
}

// heartbeatHello puts this node's thresholds in a child's hello.
func (n *Node) heartbeatHello(h *wire.Hello) {
	c := n.opts.Heartbeat.withDefaults()
	h.HeartbeatInterval, h.UnresponsiveAfter, h.DownAfter = c.Interval, c.UnresponsiveAfter, c.DownAfter
}

// heartbeat watches a node's links. One goroutine ticks over every child
// link, probing and judging it, and over the parent link, judging it; no
// send ever happens under mu (onPong takes it on every child's read loop).
// State reports go to the root through a bounded queue.
type heartbeat struct {
	n      *Node
	cfg    HeartbeatConfig
	handle uint32 // where PING replies arrive

	mu    sync.Mutex
	links map[*router.Port]*linkHealth

	// pending are the state reports not yet sent, the latest per child
	// (see report); wake tells run there are some.
	pendMu  sync.Mutex
	pending map[uint32]wire.NodeState
	order   []uint32 // the children with a pending report, oldest first
	wake    chan struct{}
	done    chan struct{}

	// The parent link's inbound byte count at the last look and when it
	// last moved: run's goroutine only.
	parentPort  *router.Port
	parentBytes uint64
	parentHeard time.Time

	lastCheck time.Time // run's goroutine only
}

// linkHealth is one child link's heartbeat state. hb.mu guards it.
type linkHealth struct {
	state string
	heard time.Time // when the child last answered a probe (or the link came up)
	// The link's counters at the last look (see busy).
	inFrames, inBytes, outBytes uint64
	pingSent                    time.Time     // first probe not yet answered; zero: none
	lastProbe                   time.Time     // when the last probe went out
	rtt                         time.Duration // smoothed (smoothRTT)
	reportedRTT                 time.Duration // what the root was last told
	rttReportedAt               time.Time
	// outstanding are the probes not yet answered, oldest first, at most
	// probeWindow of them: only an answer echoing one of their tokens is
	// life.
	outstanding []probe
}

// A probe's payload is probeTokenLen bytes from crypto/rand, and the child
// echoes it in its answer. The heartbeat reply handle is fixed for the
// node's lifetime, so the handle alone proves nothing: a child that stopped
// reading could keep "answering" on a timer. With the token it cannot answer
// a probe it has not read. An answer to any of the last probeWindow probes
// counts (an answer may be overtaken by the next probe on a slow hop); it
// retires that probe and every older one, so no token counts twice, and a
// token the child read but kept back stops counting once probeWindow newer
// probes went out.
const (
	probeTokenLen = 16
	probeWindow   = 4
	// maxPingEcho is the longest PING payload a node echoes; a longer one
	// is answered with an empty payload.
	maxPingEcho = 64
)

// probe is one outstanding heartbeat probe.
type probe struct {
	token [probeTokenLen]byte
	sent  time.Time
}

// answerPing is the PING handler: it answers on the urgent lane, echoing
// the probe's payload (up to maxPingEcho bytes; a heartbeat probe's token,
// or nothing for a plain ping), from the read loop it arrived on.
func answerPing(r *router.Router) func(*router.Message) {
	return func(m *router.Message) {
		var echo []byte
		if len(m.Payload) <= maxPingEcho {
			echo = bytes.Clone(m.Payload)
		}
		_ = r.ReplyUrgent(m, echo)
	}
}

// sentProbe is a probe chosen under hb.mu, sent after it is released.
type sentProbe struct {
	p     *router.Port
	token [probeTokenLen]byte
}

func startHeartbeat(n *Node) *heartbeat {
	hb := &heartbeat{
		n:       n,
		cfg:     n.opts.Heartbeat.withDefaults(),
		links:   make(map[*router.Port]*linkHealth),
		pending: make(map[uint32]wire.NodeState),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	// Replies come from the child itself; anything else (a dead reply for a
	// probe whose link just closed) is ignored in onPong.
	hb.handle = n.Router.AddHandler(hb.onPong, router.Anyone)
	go hb.run()
	return hb
}

// tick is how often link states are evaluated: fine enough that each
// threshold is noticed within a fraction of its length.
func (c HeartbeatConfig) tick() time.Duration {
	t := min(c.Interval, c.UnresponsiveAfter/4, (c.DownAfter-c.UnresponsiveAfter)/4)
	return max(t, 10*time.Millisecond)
}

func (hb *heartbeat) run() {
	defer close(hb.done)
	t := time.NewTicker(hb.cfg.tick())
	defer t.Stop()
	for {
		select {
		case <-hb.n.Router.Done():
			return
		case <-hb.wake:
			hb.flushReports()
		case <-t.C:
			hb.flushReports() // what the parent link refused before
			now := time.Now()
			// A tick far later than due means this process was stopped or
			// starved: its links look idle only because it did not read.
			// Judge them from the next tick on.
			paused := !hb.lastCheck.IsZero() && now.Sub(hb.lastCheck) > 2*hb.cfg.tick()+hb.cfg.UnresponsiveAfter/2
			hb.lastCheck = now
			hb.check(now, paused)
			hb.checkParent(now, paused)
		}
	}
}

// send puts a state report on the parent link's control queue: in order
// with the route updates it must precede, never blocking. It fails only
// when the queue is full.
func (hb *heartbeat) send(ns wire.NodeState) error {
	body, err := wire.Marshal(ns)
	if err != nil {
		return nil // cannot happen; nothing to retry
	}
	err = hb.n.Router.SendControl(wire.Header{Dst: wire.RootID, Handle: wire.HandleNodeState}, body)
	if errors.Is(err, stream.ErrQueueFull) {
		return err
	}
	if err != nil {
		hb.n.Log.Debug("node state not sent", "child", ns.ID, "error", err)
	}
	return nil
}

// report queues a state report for the root without blocking. Reports
// are never dropped: one per child waits, the latest, which carries the
// child's current state (and the older one's cause when it has none of
// its own), so however many come while the parent link is congested,
// they take one entry per child and the root ends up told the truth.
func (hb *heartbeat) report(ns wire.NodeState) {
	hb.pendMu.Lock()
	if old, ok := hb.pending[ns.ID]; ok {
		ns = newerReport(old, ns)
	} else {
		hb.order = append(hb.order, ns.ID)
	}
	hb.pending[ns.ID] = ns
	hb.pendMu.Unlock()
	select {
	case hb.wake <- struct{}{}:
	default:
	}
}

// newerReport is what waits when report ns about a child comes while old
// waits: ns, with old's cause when ns has none and the state is the same.
func newerReport(old, ns wire.NodeState) wire.NodeState {
	if ns.Cause == "" && ns.State == old.State {
		ns.Cause = old.Cause
	}
	return ns
}

// flushReports sends the pending reports, oldest first. Those the parent
// link's queue refuses stay pending (unless a newer one came meanwhile)
// for the next tick.
func (hb *heartbeat) flushReports() {
	hb.pendMu.Lock()
	order, pending := hb.order, hb.pending
	hb.order, hb.pending = nil, make(map[uint32]wire.NodeState, len(pending))
	hb.pendMu.Unlock()
	for i, id := range order {
		if err := hb.send(pending[id]); err != nil {
			hb.pendMu.Lock()
			for _, id := range order[i:] {
				if ns, newer := hb.pending[id]; newer {
					hb.pending[id] = newerReport(pending[id], ns)
					continue
				}
				hb.pending[id] = pending[id]
				hb.order = append(hb.order, id)
			}
			hb.pendMu.Unlock()
			return
		}
	}
}

// lostLink is a child link the heartbeat declared DOWN.
type lostLink struct {
	p     *router.Port
	state wire.NodeState
}

// check evaluates every child link at now; paused says this process was
// not running for a while, so silence seen now proves nothing. It decides
// under hb.mu and acts (probes, reports, closing links) after releasing it.
func (hb *heartbeat) check(now time.Time, paused bool) {
	ports := hb.n.Router.Children()
	live := make(map[*router.Port]bool, len(ports))
	var probes []sentProbe
	var lost []lostLink
	hb.mu.Lock()
	for _, p := range ports {
		live[p] = true
		lh := hb.links[p]
		if lh == nil {
			lh = &linkHealth{state: StateUp, heard: now}
			hb.links[p] = lh
		}
		if hb.busy(p, lh) {
			lh.heard = now
		}
		silent := now.Sub(lh.heard)
		if paused {
			silent = min(silent, hb.cfg.tick())
			lh.heard = now.Add(-silent)
		}
		switch {
		case silent >= hb.cfg.DownAfter:
			cause := fmt.Sprintf("heartbeat timeout (no answer for %s)", silent.Round(time.Millisecond))
			lost = append(lost, lostLink{p, wire.NodeState{ID: p.PeerID, Parent: hb.n.Router.ID(), State: StateDown, RTT: lh.rtt, Cause: cause}})
			delete(hb.links, p)
			continue
		case silent >= hb.cfg.UnresponsiveAfter:
			if lh.state == StateUp {
				lh.state = StateUnresponsive
				cause := fmt.Sprintf("no answer for %s", silent.Round(time.Millisecond))
				hb.n.Log.Warn("child unresponsive", "child", p.PeerID, "name", p.PeerName, "cause", cause)
				hb.report(wire.NodeState{ID: p.PeerID, Parent: hb.n.Router.ID(), State: StateUnresponsive, RTT: lh.rtt, Cause: cause})
			}
		}
		if now.Sub(lh.lastProbe) >= hb.cfg.Interval {
			lh.lastProbe = now
			if lh.pingSent.IsZero() {
				lh.pingSent = now
			}
			pr := probe{sent: now}
			rand.Read(pr.token[:])
			if len(lh.outstanding) == probeWindow {
				lh.outstanding = append(lh.outstanding[:0], lh.outstanding[1:]...)
			}
			lh.outstanding = append(lh.outstanding, pr)
			probes = append(probes, sentProbe{p, pr.token})
		}
	}
	for p := range hb.links {
		if !live[p] {
			delete(hb.links, p)
		}
	}
	hb.mu.Unlock()
	for _, l := range lost {
		hb.n.Log.Warn("child link down", "child", l.p.PeerID, "name", l.p.PeerName, "cause", l.state.Cause)
		// The report goes before the link closes, after the reports
		// queued before it, so the root hears DOWN before DEL_ROUTE.
		hb.flushReports()
		_ = hb.send(l.state) // refused: the DEL_ROUTE that follows names the cause too
		l.p.Link.Abort(&heartbeatTimeout{l.state.Cause})
	}
	for _, sp := range probes {
		p := sp.p
		err := p.Link.SendUrgent(wire.Header{Dst: p.PeerID, Src: hb.n.Router.ID(), Auth: hb.n.Router.ID(),
			Handle: wire.HandlePing, ReplyTo: hb.handle}, sp.token[:])
		if err != nil {
			hb.n.Log.Debug("heartbeat probe not sent", "child", p.PeerID, "error", err)
		}
	}
}

// busy reports whether an answer cannot have come since the last look
// because a big frame is on its way in either direction: one still
// arriving from the child (bytes moved, no whole frame did), which holds
// up its answer behind it; or one of ours still going out to a child that
// reads it (bytes written moved) with our probe queued behind it. Either
// shows the child at work. A child that takes nothing and sends nothing
// shows neither, and its silence counts. hb.mu is held on entry.
func (hb *heartbeat) busy(p *router.Port, lh *linkHealth) bool {
	f, in, out := p.Link.InboundFrames(), p.Link.InboundBytes(), p.Link.OutboundBytes()
	arriving := in != lh.inBytes && f == lh.inFrames
	sending := out != lh.outBytes && !lh.pingSent.IsZero() && p.Link.UrgentWritten().Before(lh.pingSent)
	lh.inFrames, lh.inBytes, lh.outBytes = f, in, out
	return arriving || sending
}

// checkParent closes the parent link when nothing (not a byte) has come
// from the parent for DownAfter: its probes arrive every Interval, so
// silence means it is gone (or cut off by a partition that closed no
// socket). Bytes of a big frame still arriving count, as the probe behind
// it cannot overtake it. The node then shuts down like on any loss of its
// parent, and kills what it runs.
func (hb *heartbeat) checkParent(now time.Time, paused bool) {
	p := hb.n.Router.Parent()
	if p == nil {
		return
	}
	if p != hb.parentPort {
		hb.parentPort, hb.parentBytes, hb.parentHeard = p, p.Link.InboundBytes(), now
		return
	}
	if b := p.Link.InboundBytes(); b != hb.parentBytes || paused {
		hb.parentBytes, hb.parentHeard = b, now
		return
	}
	if silent := now.Sub(hb.parentHeard); silent >= hb.cfg.DownAfter {
		cause := fmt.Sprintf("heartbeat timeout (nothing from parent node %d for %s)", p.PeerID, silent.Round(time.Millisecond))
		hb.n.Log.Warn("parent link down", "parent", p.PeerID, "cause", cause)
		p.Link.Abort(&heartbeatTimeout{cause})
	}
}

// recovered moves an UNRESPONSIVE link back to UP. hb.mu is held on entry;
// report never blocks.
func (hb *heartbeat) recovered(p *router.Port, lh *linkHealth) {
	if lh.state != StateUnresponsive {
		return
	}
	lh.state = StateUp
	hb.n.Log.Info("child responsive again", "child", p.PeerID, "name", p.PeerName)
	hb.report(wire.NodeState{ID: p.PeerID, Parent: hb.n.Router.ID(), State: StateUp, RTT: lh.rtt})
}

// onPong runs on the child link's read loop when a probe is answered: the
// one evidence of the child's life. Only an answer echoing the token of an
// outstanding probe counts (see probeWindow); anything else arriving on the
// heartbeat handle is ignored.
func (hb *heartbeat) onPong(m *router.Message) {
	p := m.Port
	if m.IsDead() || p == nil || p.IsParent || m.Src != p.PeerID || len(m.Payload) != probeTokenLen {
		return
	}
	now := time.Now()
	hb.mu.Lock()
	defer hb.mu.Unlock()
	lh := hb.links[p]
	if lh == nil {
		return
	}
	i := slices.IndexFunc(lh.outstanding, func(pr probe) bool { return bytes.Equal(pr.token[:], m.Payload) })
	if i < 0 {
		return // not an answer to a probe still outstanding: no evidence
	}
	sent := lh.outstanding[i].sent
	lh.outstanding = append(lh.outstanding[:0], lh.outstanding[i+1:]...)
	lh.pingSent = time.Time{}
	if len(lh.outstanding) > 0 {
		lh.pingSent = lh.outstanding[0].sent
	}
	lh.heard = now
	lh.rtt = smoothRTT(lh.rtt, now.Sub(sent))
	if lh.state == StateUnresponsive {
		hb.recovered(p, lh)
		lh.reportedRTT, lh.rttReportedAt = lh.rtt, now
		return
	}
	if rttDue(lh.reportedRTT, lh.rtt, lh.rttReportedAt, now, hb.cfg.rttRefresh()) {
		lh.reportedRTT, lh.rttReportedAt = lh.rtt, now
		hb.report(wire.NodeState{ID: p.PeerID, Parent: hb.n.Router.ID(), State: lh.state, RTT: lh.rtt})
	}
}

// smoothRTT folds a new sample into the link's RTT as TCP does (RFC 6298,
// but with a gain of 1/4): one slow answer moves it a little, a lasting
// change within a few probes. The first sample is taken as it is.
func smoothRTT(srtt, sample time.Duration) time.Duration {
	if srtt == 0 {
		return sample
	}
	return srtt + (sample-srtt)/4
}

// rttDue says whether the RTT travels to the root: at once when it moved
// by a fifth (and at least rttStep) from what the root has, and otherwise,
// if it moved at all, once the root's figure is refresh old. So `arbor
// tree` is never more than refresh behind, while an idle tree of many
// nodes sends one report per link per refresh at most.
func rttDue(reported, srtt time.Duration, reportedAt, now time.Time, refresh time.Duration) bool {
	if reported == 0 {
		return true
	}
	diff := srtt - reported
	if diff < 0 {
		diff = -diff
	}
	if diff > max(reported/5, rttStep) {
		return true
	}
	return diff >= rttNoise && now.Sub(reportedAt) >= refresh
}

const (
	// rttStep is the smallest RTT change reported at once.
	rttStep = 200 * time.Microsecond
	// rttNoise is a change too small to report at all: the tree prints
	// RTTs to the microsecond.
	rttNoise = 10 * time.Microsecond
)

// rttRefresh is how old the root's figure of a link's RTT may get when it
// moves only a little: ten probes.
func (c HeartbeatConfig) rttRefresh() time.Duration { return 10 * c.Interval }

// LinkState is the heartbeat view of one child link.
type LinkState struct {
	ID    uint32
	State string
	RTT   time.Duration
}

// ChildStates lists the heartbeat state of each child link, by child ID.
func (n *Node) ChildStates() map[uint32]LinkState {
	out := map[uint32]LinkState{}
	if n.hb == nil {
		return out
	}
	n.hb.mu.Lock()
	defer n.hb.mu.Unlock()
	for p, lh := range n.hb.links {
		out[p.PeerID] = LinkState{ID: p.PeerID, State: lh.state, RTT: lh.rtt}
	}
	return out
}
