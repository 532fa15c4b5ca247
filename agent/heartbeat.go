package agent

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream/wire"
)

// Heartbeat states of a child link, as NODE_STATE, `arbor tree` and
// `arbor watch` name them.
const (
	StateUp           = "up"
	StateUnresponsive = "unresponsive"
	StateDown         = "down"
)

// HeartbeatConfig says how a node watches its child links. A parent probes
// each child link that has been idle for Interval with a PING; any frame
// from the child counts as life. With no frame for UnresponsiveAfter the
// child is UNRESPONSIVE (calls still go through; it recovers to UP when a
// frame arrives); with none for DownAfter the link is closed with cause
// "heartbeat timeout", so DEL_ROUTE covers the child's subtree and pending
// calls fail. Children inherit the thresholds through the hello.
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

// HeartbeatFromHello is the configuration a parent passed down.
func HeartbeatFromHello(h wire.Hello) HeartbeatConfig {
	return HeartbeatConfig{Interval: h.HeartbeatInterval, UnresponsiveAfter: h.UnresponsiveAfter, DownAfter: h.DownAfter}
}

// heartbeatHello puts this node's thresholds in a child's hello.
func (n *Node) heartbeatHello(h *wire.Hello) {
	c := n.opts.Heartbeat.withDefaults()
	h.HeartbeatInterval, h.UnresponsiveAfter, h.DownAfter = c.Interval, c.UnresponsiveAfter, c.DownAfter
}

// heartbeat probes a node's child links. One goroutine ticks over every
// child link; a probe is sent from a short-lived goroutine (at most one
// per link at a time) so that a link whose send queue is full never stalls
// the others; state reports go to the root through a bounded queue.
type heartbeat struct {
	n      *Node
	cfg    HeartbeatConfig
	handle uint32 // where PING replies arrive

	mu    sync.Mutex
	links map[*router.Port]*linkHealth

	reports chan wire.NodeState
	dropped atomic.Uint64
	done    chan struct{}

	lastCheck time.Time // run's goroutine only
}

// linkHealth is one child link's heartbeat state. hb.mu guards it.
type linkHealth struct {
	state       string
	frames      uint64    // the link's inbound frame count at the last look
	heard       time.Time // when that count was last seen to move
	pingSent    time.Time // last probe not yet answered; zero: none
	sending     bool
	rtt         time.Duration
	reportedRTT time.Duration
}

func startHeartbeat(n *Node) *heartbeat {
	hb := &heartbeat{
		n:       n,
		cfg:     n.opts.Heartbeat.withDefaults(),
		links:   make(map[*router.Port]*linkHealth),
		reports: make(chan wire.NodeState, 256),
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
		case ns := <-hb.reports:
			hb.send(ns)
		case <-t.C:
			now := time.Now()
			// A tick far later than due means this process was stopped or
			// starved: its links look idle only because it did not read.
			// Judge them from the next tick on.
			paused := !hb.lastCheck.IsZero() && now.Sub(hb.lastCheck) > 2*hb.cfg.tick()+hb.cfg.UnresponsiveAfter/2
			hb.lastCheck = now
			hb.check(now, paused)
		}
	}
}

func (hb *heartbeat) send(ns wire.NodeState) {
	body, err := wire.Marshal(ns)
	if err != nil {
		return
	}
	if err := hb.n.Router.Send(wire.Header{Dst: wire.RootID, Handle: wire.HandleNodeState}, body); err != nil {
		hb.n.Log.Debug("node state not sent", "child", ns.ID, "error", err)
	}
}

// report queues a state report for the root without blocking.
func (hb *heartbeat) report(ns wire.NodeState) {
	select {
	case hb.reports <- ns:
	default:
		hb.dropped.Add(1)
	}
}

// flushReports sends every queued report now.
func (hb *heartbeat) flushReports() {
	for {
		select {
		case ns := <-hb.reports:
			hb.send(ns)
		default:
			return
		}
	}
}

// check evaluates every child link at now; paused says this process was
// not running for a while, so idleness seen now proves nothing.
func (hb *heartbeat) check(now time.Time, paused bool) {
	ports := hb.n.Router.Children()
	live := make(map[*router.Port]bool, len(ports))
	hb.mu.Lock()
	defer hb.mu.Unlock()
	for _, p := range ports {
		live[p] = true
		lh := hb.links[p]
		if lh == nil {
			lh = &linkHealth{state: StateUp, heard: now}
			hb.links[p] = lh
		}
		if f := p.Link.InboundFrames(); f != lh.frames {
			lh.frames, lh.heard = f, now
		}
		idle := now.Sub(lh.heard)
		if paused {
			idle = min(idle, hb.cfg.tick())
		}
		switch {
		case idle >= hb.cfg.DownAfter:
			cause := fmt.Sprintf("heartbeat timeout (no frame for %s)", idle.Round(time.Millisecond))
			hb.n.Log.Warn("child link down", "child", p.PeerID, "name", p.PeerName, "cause", cause)
			// The report goes before the link closes, after the reports
			// queued before it, so the root hears DOWN before DEL_ROUTE.
			hb.flushReports()
			hb.send(wire.NodeState{ID: p.PeerID, Parent: hb.n.Router.ID(), State: StateDown, RTT: lh.rtt, Cause: cause})
			p.Link.Abort(fmt.Errorf("%s", cause))
			delete(hb.links, p)
			continue
		case idle >= hb.cfg.UnresponsiveAfter:
			if lh.state == StateUp {
				lh.state = StateUnresponsive
				cause := fmt.Sprintf("no frame for %s", idle.Round(time.Millisecond))
				hb.n.Log.Warn("child unresponsive", "child", p.PeerID, "name", p.PeerName, "cause", cause)
				hb.report(wire.NodeState{ID: p.PeerID, Parent: hb.n.Router.ID(), State: StateUnresponsive, RTT: lh.rtt, Cause: cause})
			}
		default:
			hb.recovered(p, lh)
		}
		if idle >= hb.cfg.Interval && !lh.sending && (lh.pingSent.IsZero() || now.Sub(lh.pingSent) >= hb.cfg.Interval) {
			lh.pingSent, lh.sending = now, true
			go hb.probe(p)
		}
	}
	for p := range hb.links {
		if !live[p] {
			delete(hb.links, p)
		}
	}
}

// recovered moves an UNRESPONSIVE link back to UP. hb.mu is held on entry.
func (hb *heartbeat) recovered(p *router.Port, lh *linkHealth) {
	if lh.state != StateUnresponsive {
		return
	}
	lh.state = StateUp
	hb.n.Log.Info("child responsive again", "child", p.PeerID, "name", p.PeerName)
	hb.report(wire.NodeState{ID: p.PeerID, Parent: hb.n.Router.ID(), State: StateUp, RTT: lh.rtt})
}

// probe sends one PING down p. It may block while p's send queue is full.
func (hb *heartbeat) probe(p *router.Port) {
	err := p.Link.Send(wire.Header{Dst: p.PeerID, Src: hb.n.Router.ID(), Auth: hb.n.Router.ID(),
		Handle: wire.HandlePing, ReplyTo: hb.handle}, nil)
	hb.mu.Lock()
	if lh := hb.links[p]; lh != nil {
		lh.sending = false
		if err != nil {
			lh.pingSent = time.Time{}
		}
	}
	hb.mu.Unlock()
}

// onPong runs on the child link's read loop when a probe is answered.
func (hb *heartbeat) onPong(m *router.Message) {
	p := m.Port
	if m.IsDead() || p == nil || p.IsParent || m.Src != p.PeerID {
		return
	}
	now := time.Now()
	hb.mu.Lock()
	defer hb.mu.Unlock()
	lh := hb.links[p]
	if lh == nil || lh.pingSent.IsZero() {
		return
	}
	lh.rtt = now.Sub(lh.pingSent)
	lh.pingSent = time.Time{}
	if lh.state == StateUnresponsive {
		hb.recovered(p, lh)
		lh.reportedRTT = lh.rtt
		return
	}
	// RTT travels to the root only when it changed markedly, so an idle
	// tree of many nodes does not report every probe.
	diff := lh.rtt - lh.reportedRTT
	if diff < 0 {
		diff = -diff
	}
	if lh.reportedRTT == 0 || diff > max(lh.reportedRTT/2, 5*time.Millisecond) {
		lh.reportedRTT = lh.rtt
		hb.report(wire.NodeState{ID: p.PeerID, Parent: hb.n.Router.ID(), State: lh.state, RTT: lh.rtt})
	}
}

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
