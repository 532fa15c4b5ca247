package agent

import (
	"context"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/arbor-project/arbor/builtin"
	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/internal/logsafe"
	"github.com/arbor-project/arbor/routemonitor"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/spawn"
	"github.com/arbor-project/arbor/stream/wire"
)

// NodeMeta is what the root knows about one node of its tree.
type NodeMeta struct {
	ID     uint32
	Parent uint32
	Name   string
	// Label is the name asked for when the node was spawned ("" for the
	// default); leading hops are reused by (Parent, Method, Target, Label).
	Label  string
	Method string
	Target string
	Host   string
	PID    int
	State  string
	RTT    time.Duration
	// leaving is why the node said it is shutting down (State is
	// StateLeaving); its route's withdrawal is reported with it.
	leaving string
	// known is set once the parent's NODE_STATE has described the node.
	known bool
}

// maxCause is the longest cause a TreeEvent carries: a NODE_STATE's cause
// comes from a node that may be hostile and reaches `arbor watch` and the
// logs, so it is clipped to this and escaped (logsafe.Clip) when the report
// is accepted.
const maxCause = 1 << 10

// TreeEvent is a change the root saw: a route added or withdrawn, or a
// node's heartbeat state changing.
type TreeEvent struct {
	Kind  string // "add_route", "del_route", StateUp, StateUnresponsive, StateDown
	ID    uint32
	Name  string
	Time  time.Time
	Cause string // escaped, at most maxCause bytes
}

// Tree is the root's live view of its tree: every node's parent, method,
// host, pid and heartbeat state, fed by the RouteMonitor (routes) and by
// NODE_STATE reports that each parent sends about its children. Clients
// of the control socket are attached as nodes but hidden from it. It is
// safe for concurrent use.
type Tree struct {
	n *Node

	mu      sync.Mutex
	nodes   map[uint32]*NodeMeta
	clients map[uint32]bool
	subs    map[int]func(TreeEvent)
	nsub    int
}

func newTree(n *Node) *Tree {
	t := &Tree{n: n, nodes: map[uint32]*NodeMeta{}, clients: map[uint32]bool{}, subs: map[int]func(TreeEvent){}}
	n.Router.Handle(wire.HandleNodeState, t.onNodeState, router.Descendants(n.Router))
	n.Monitor.Subscribe(t.onRoute)
	return t
}

// MarkClient hides node id (a control-socket client about to attach) from
// the tree and its events, until its route is withdrawn or UnmarkClient.
func (t *Tree) MarkClient(id uint32) {
	t.mu.Lock()
	t.clients[id] = true
	t.mu.Unlock()
}

// UnmarkClient forgets client id, marked by MarkClient, that never attached
// (its hello failed): no route of it will ever be withdrawn to do so.
func (t *Tree) UnmarkClient(id uint32) {
	t.mu.Lock()
	delete(t.clients, id)
	t.mu.Unlock()
}

// Clients is how many control-socket clients the tree hides: attached, or
// marked and about to attach.
func (t *Tree) Clients() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.clients)
}

// Subscribe calls fn for every event until the returned function is
// called. fn runs on a link's read loop and must not block.
func (t *Tree) Subscribe(fn func(TreeEvent)) (unsubscribe func()) {
	t.mu.Lock()
	id := t.nsub
	t.nsub++
	t.subs[id] = fn
	t.mu.Unlock()
	return func() {
		t.mu.Lock()
		delete(t.subs, id)
		t.mu.Unlock()
	}
}

// emit delivers e to every subscriber. t.mu is held on entry, so events
// reach subscribers in the order the tree changed.
func (t *Tree) emit(e TreeEvent) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	for _, fn := range t.subs {
		fn(e)
	}
}

func (t *Tree) onRoute(e routemonitor.Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch e.Kind {
	case routemonitor.AddRoute:
		if t.clients[e.ID] {
			return
		}
		if t.nodes[e.ID] == nil {
			t.nodes[e.ID] = &NodeMeta{ID: e.ID, Parent: e.Parent, Name: e.Name, State: StateUp}
		}
		t.emit(TreeEvent{Kind: "add_route", ID: e.ID, Name: e.Name, Time: e.Time})
	case routemonitor.DelRoute:
		if t.clients[e.ID] {
			delete(t.clients, e.ID)
			return
		}
		name := e.Name
		if m := t.nodes[e.ID]; m != nil && name == "" {
			name = m.Name
		}
		cause := logsafe.Clip(e.Cause, maxCause)
		if m := t.nodes[e.ID]; m != nil && m.State == StateLeaving {
			cause = m.leaving // clipped and escaped when it came
		}
		delete(t.nodes, e.ID)
		t.emit(TreeEvent{Kind: "del_route", ID: e.ID, Name: name, Time: e.Time, Cause: cause})
	}
}

// onNodeState runs at the root for each NODE_STATE: a parent describing one
// of its children. Reports about nodes no longer routed are stale. A report
// is believed only from the node's parent as its route told it (a node
// cannot describe its sibling), and the node's name is the route's: a
// report changes state, RTT and how the node was spawned, never who it is.
// The one exception is a node's own StateLeaving: it says only why its
// route is about to be withdrawn, which the node decides anyway.
func (t *Tree) onNodeState(m *router.Message) {
	var ns wire.NodeState
	if err := wire.Unmarshal(m.Payload, &ns); err != nil {
		t.n.Log.Warn("bad NODE_STATE", "src", m.Src, "error", err)
		return
	}
	self := ns.State == StateLeaving && ns.ID == m.Auth
	if self {
		t.onLeaving(ns)
		return
	}
	if ns.Parent != m.Auth {
		t.n.Log.Warn("NODE_STATE refused: a node reports only on its own children", "src", m.Src, "parent", ns.Parent, "child", ns.ID)
		return
	}
	if _, _, routed := t.n.Router.Lookup(ns.ID); !routed {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.clients[ns.ID] {
		return
	}
	meta := t.nodes[ns.ID]
	if meta == nil {
		// The route is known (checked above) but its event has not reached
		// the tree yet: nothing to check the report against.
		return
	}
	if meta.Parent != ns.Parent {
		t.n.Log.Warn("NODE_STATE refused: the reporter is not the node's parent",
			"src", m.Src, "child", ns.ID, "claimed_parent", ns.Parent, "parent", meta.Parent)
		return
	}
	if ns.Spawned {
		if err := checkSpawnReport(ns); err != nil {
			t.n.Log.Warn("NODE_STATE refused", "src", m.Src, "child", ns.ID, "error", err)
			return
		}
		meta.known = true
		meta.Method, meta.Target = ns.Method, ns.Target
		meta.Host, meta.PID = ns.Host, ns.PID
		if m.Port == nil {
			// The root's own report on a child it spawned: the label is
			// the one it was asked for. Any other node's label is a
			// claim (a leaf could label its child "db" to catch the
			// operator's "arbor exec db"); the root records the labels
			// it asked for with SetLabel instead.
			meta.Label = ns.Label
		}
	}
	if ns.RTT != 0 {
		meta.RTT = ns.RTT
	}
	switch ns.State {
	case "", StateUp, StateUnresponsive, StateDown:
	default:
		t.n.Log.Warn("NODE_STATE refused: unknown state", "src", m.Src, "child", ns.ID, "state", termsafeQuote(ns.State))
		return
	}
	if meta.State == StateLeaving && ns.State != StateDown {
		return // the node said it is going; only its loss changes that
	}
	if ns.State != "" && ns.State != meta.State {
		meta.State = ns.State
		t.emit(TreeEvent{Kind: ns.State, ID: ns.ID, Name: meta.Name, Cause: logsafe.Clip(ns.Cause, maxCause)})
	}
}

// onLeaving records a node's own report that it is shutting down.
func (t *Tree) onLeaving(ns wire.NodeState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	meta := t.nodes[ns.ID]
	if meta == nil || t.clients[ns.ID] {
		return
	}
	meta.State = StateLeaving
	meta.leaving = logsafe.Clip(ns.Cause, maxCause)
	if meta.leaving == "" {
		meta.leaving = "shut down"
	}
}

// SetLabel records label for node id, which the root asked node parent to
// spawn with that label and which parent said it spawned as id: labels
// are the root's own knowledge, never a report's (see onNodeState). It
// refuses (false) an id the tree does not know as a child of parent, so a
// lying spawner can label nothing outside its own subtree.
func (t *Tree) SetLabel(id, parent uint32, label string) bool {
	if wire.CheckName(label) != nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	meta := t.nodes[id]
	if meta == nil || meta.Parent != parent || t.clients[id] {
		return false
	}
	meta.Label = label
	return true
}

// checkSpawnReport checks the strings of a spawn report the way route
// names are checked: they reach listings, logs and the path resolver.
func checkSpawnReport(ns wire.NodeState) error {
	for _, f := range [...]string{ns.Label, ns.Method, ns.Target, ns.Host} {
		if err := wire.CheckName(f); err != nil {
			return err
		}
	}
	return nil
}

// termsafeQuote quotes a peer's string for a log line.
func termsafeQuote(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	return strconv.Quote(s)
}

// Nodes is a snapshot of every node below the root, ordered by ID.
func (t *Tree) Nodes() []NodeMeta {
	t.mu.Lock()
	out := make([]NodeMeta, 0, len(t.nodes))
	for _, m := range t.nodes {
		out = append(out, *m)
	}
	t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Node returns what the tree knows of id.
func (t *Tree) Node(id uint32) (NodeMeta, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.nodes[id]
	if m == nil {
		return NodeMeta{}, false
	}
	return *m, true
}

// FindChild returns the child of parent spawned with hop and label, the
// one with the lowest ID if several match. A node that said it is leaving
// (StateLeaving) is not found: it is going, and would refuse to spawn.
func (t *Tree) FindChild(parent uint32, hop spawn.Hop, label string) (NodeMeta, bool) {
	for _, m := range t.Nodes() {
		if m.known && m.State != StateLeaving && m.Parent == parent && m.Method == hop.Method && m.Target == hop.Target && m.Label == label {
			return m, true
		}
	}
	return NodeMeta{}, false
}

// FindLabel returns a node spawned with label, anywhere in the tree.
func (t *Tree) FindLabel(label string) (NodeMeta, bool) {
	for _, m := range t.Nodes() {
		if m.known && m.Label == label {
			return m, true
		}
	}
	return NodeMeta{}, false
}

// reportSpawned tells the root about a child that just came up: pid is
// the agent's own and host the one it runs on, as it names it. It is sent
// before Spawn returns, on the link the spawn's reply takes, so the root
// knows the child before a remote caller of agent.spawn does.
func (n *Node) reportSpawned(p *router.Port, hop spawn.Hop, label string, pid int, host string) {
	ns := wire.NodeState{
		ID: p.PeerID, Parent: n.Router.ID(), Name: p.PeerName, Label: label,
		Method: hop.Method, Target: hop.Target, Host: host, PID: pid,
		State: StateUp, Spawned: true,
	}
	body, err := wire.Marshal(ns)
	if err != nil {
		return
	}
	if err := n.Router.SendControl(wire.Header{Dst: wire.RootID, Handle: wire.HandleNodeState}, body); err != nil {
		n.Log.Debug("node state not sent", "child", p.PeerID, "error", err)
	}
}

// childHost is the host child id runs on as the child itself names it
// (its agent.info hostname), so ssh, sudo and container nodes are shown
// alike. A local child shares this node's host and is not asked; a child
// that cannot say (an old or foreign agent, or one too slow to answer
// within the spawn's time) is shown by its hop's host.
func (n *Node) childHost(ctx context.Context, hop spawn.Hop, id uint32, name string) string {
	if hop.Method == "local" {
		host, _ := os.Hostname()
		return host
	}
	ctx, cancel := context.WithTimeout(ctx, n.opts.ConnectTimeout)
	defer cancel()
	rm := n.Remote(id, name)
	defer rm.Release() // a long-lived root spawns many: no subscription left behind
	var info builtin.Info
	if err := rm.Call(ctx, "agent.info", nil, &info); err != nil || wire.CheckName(info.Hostname) != nil {
		n.Log.Debug("child's hostname not known, showing its hop's", "child", id, "error", err)
		return hostOf(hop)
	}
	return info.Hostname
}

// hostOf is the host a hop runs on, as far as the hop tells: this host for
// local and sudo, the target's host for ssh.
func hostOf(hop spawn.Hop) string {
	if hop.Method == "ssh" {
		h := hop.Target
		if i := strings.LastIndexByte(h, '@'); i >= 0 {
			h = h[i+1:]
		}
		if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[:i], ":") {
			h = h[:i]
		}
		return h
	}
	host, _ := os.Hostname()
	return host
}

// SpawnVia asks node via, below this one, to spawn a child over hop named
// name, with this node's spawn settings (ssh options, agent binaries). At
// the root it records name as the new node's label (Tree.SetLabel): the
// root believes no other node's word for a label.
func (n *Node) SpawnVia(ctx context.Context, via *arborctx.Remote, hop spawn.Hop, name string) (SpawnResult, error) {
	req, err := n.spawnRequest(hop, via.ID())
	if err != nil {
		return SpawnResult{}, err
	}
	defer n.grants.revoke(req.BinaryGrant) // the spawn is over
	req.Name = name
	var res SpawnResult
	if err = via.Call(ctx, "agent.spawn", req, &res); err != nil {
		return res, err
	}
	if n.Tree != nil && name != "" && !n.Tree.SetLabel(res.ID, via.ID(), name) {
		n.Log.Warn("spawned node not labelled: the tree does not know it as the spawner's child",
			"via", via.ID(), "child", res.ID, "label", termsafeQuote(name))
	}
	return res, nil
}
