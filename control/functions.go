package control

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/builtin"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/routemonitor"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/spawn"
	"github.com/arbor-project/arbor/stream/wire"
)

// SpawnArgs are serve.spawn's arguments: a path of hops below the root,
// and the name of its last hop ("" for the default name).
type SpawnArgs struct {
	Path string `cbor:"path"`
	Name string `cbor:"name,omitempty"`
}

// SpawnResult names the node at the end of the path.
type SpawnResult struct {
	ID   uint32 `cbor:"id" json:"id"`
	Name string `cbor:"name" json:"name"`
}

// NodeEntry is one node of serve.tree's answer. The answer is a flat list,
// parents before children (CBOR nesting is bounded; trees are not).
type NodeEntry struct {
	ID     uint32  `cbor:"id" json:"id"`
	Parent *uint32 `cbor:"parent" json:"parent"` // nil for the root
	Name   string  `cbor:"name" json:"name"`
	Method string  `cbor:"method" json:"method"`
	Host   string  `cbor:"host" json:"host"`
	PID    int     `cbor:"pid" json:"pid"`
	State  string  `cbor:"state" json:"state"`
	RTTMs  float64 `cbor:"rtt_ms" json:"rtt_ms"`
}

// WatchArgs name the handle on the calling client where events go.
type WatchArgs struct {
	Handle uint32 `cbor:"handle"`
}

// EventSubscribed is the first WatchEvent of every watch: it carries no
// node and says that every later change will be reported.
const EventSubscribed = "subscribed"

// WatchEvent is one event of serve.watch, as the client receives it.
type WatchEvent struct {
	Event string `cbor:"event" json:"event"` // add_route, del_route, up, unresponsive, down
	ID    uint32 `cbor:"id" json:"id"`
	Name  string `cbor:"name" json:"name"`
	Time  string `cbor:"time" json:"time"` // RFC 3339
	Cause string `cbor:"cause,omitempty" json:"cause,omitempty"`
}

// register adds the serve.* functions. They keep the default policy
// (AncestorsOnly): at the root that admits the root's own authority only,
// which its control-socket clients carry and the nodes of the tree do not.
func (s *Server) register(reg *funcs.Registry) {
	funcs.Register(reg, "serve.spawn", func(ctx context.Context, _ *funcs.Call, a SpawnArgs) (SpawnResult, error) {
		return s.spawnPath(ctx, a)
	})
	funcs.Register(reg, "serve.tree", func(context.Context, *funcs.Call, builtin.Empty) ([]NodeEntry, error) {
		return s.tree(), nil
	})
	funcs.Register(reg, "serve.routes", func(context.Context, *funcs.Call, builtin.Empty) (router.Table, error) {
		return s.routes(), nil
	})
	funcs.Register(reg, "serve.watch", func(ctx context.Context, c *funcs.Call, a WatchArgs) (builtin.Empty, error) {
		return builtin.Empty{}, s.watch(ctx, c.Src, a.Handle)
	})
	funcs.Register(reg, "serve.stop", func(context.Context, *funcs.Call, builtin.Empty) (builtin.Empty, error) {
		s.stopOnce.Do(func() { close(s.stopReq) })
		return builtin.Empty{}, nil
	})
}

// spawnPath builds the chain a.Path below the root, reusing every leading
// hop that already exists with the same parent, method, target and name
// (the last hop too when it is named), and returns its last node. A name
// already used elsewhere in the tree is refused (bad arguments) before
// anything is built. When a hop fails, the hops this call built are shut
// down, so a failed spawn leaves the tree as it was.
func (s *Server) spawnPath(ctx context.Context, a SpawnArgs) (SpawnResult, error) {
	hops, err := spawn.ParsePath(a.Path)
	if err != nil {
		return SpawnResult{}, funcs.BadArgs(err)
	}
	if strings.Contains(a.Name, "/") {
		return SpawnResult{}, funcs.BadArgs(fmt.Errorf("node name %q contains '/'", a.Name))
	}
	s.spawnMu.Lock()
	defer s.spawnMu.Unlock()
	tree := s.root.Tree
	if a.Name != "" {
		if m, ok := tree.FindLabel(a.Name); ok {
			if id, whole := s.existing(hops, a.Name); !whole || id != m.ID {
				return SpawnResult{}, funcs.BadArgs(fmt.Errorf("name %q is already used by node %d (%s)", a.Name, m.ID, m.Name))
			}
		}
	}
	parent, parentName := s.root.Router.ID(), s.root.Router.Name()
	var last SpawnResult
	var built *SpawnResult // the first hop this call built: its subtree holds the rest
	for i, hop := range hops {
		label := ""
		if i == len(hops)-1 {
			label = a.Name
		}
		if built == nil && (i < len(hops)-1 || label != "") {
			if m, ok := tree.FindChild(parent, hop, label); ok {
				parent, parentName, last = m.ID, m.Name, SpawnResult{ID: m.ID, Name: m.Name}
				continue
			}
		}
		var res agent.SpawnResult
		if parent == s.root.Router.ID() {
			res, err = s.root.Spawn(ctx, hop, label)
		} else {
			via := s.root.Remote(parent, parentName)
			res, err = s.root.SpawnVia(ctx, via, hop, label)
			via.Release()
		}
		if err != nil {
			if built != nil {
				s.rollback(*built)
			}
			return SpawnResult{}, agent.HopFailed(err, i, hop, a.Path)
		}
		parent, parentName, last = res.ID, res.Name, SpawnResult{ID: res.ID, Name: res.Name}
		if built == nil {
			first := last
			built = &first
		}
	}
	return last, nil
}

// existing follows hops through the tree without building anything and
// returns the node the whole path (its last hop named label) reaches.
func (s *Server) existing(hops []spawn.Hop, label string) (uint32, bool) {
	parent := s.root.Router.ID()
	for i, hop := range hops {
		l := ""
		if i == len(hops)-1 {
			l = label
		}
		m, ok := s.root.Tree.FindChild(parent, hop, l)
		if !ok {
			return 0, false
		}
		parent = m.ID
	}
	return parent, true
}

// rollback shuts down node n, which a failed spawnPath built, with its
// subtree.
func (s *Server) rollback(n SpawnResult) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*agent.ShutdownGrace)
	defer cancel()
	rm := s.root.Remote(n.ID, n.Name)
	defer rm.Release()
	if err := rm.Shutdown(ctx); err != nil {
		s.log.Warn("node built by a failed spawn not shut down", "id", n.ID, "name", n.Name, "error", err)
	}
}

// tree lists the root and every node the root knows, parents first.
func (s *Server) tree() []NodeEntry {
	host, _ := os.Hostname()
	out := []NodeEntry{{ID: s.root.Router.ID(), Name: s.root.Router.Name(), Method: "root", Host: host, PID: os.Getpid(), State: agent.StateUp}}
	nodes := s.root.Tree.Nodes()
	present := map[uint32]bool{s.root.Router.ID(): true}
	for _, m := range nodes {
		present[m.ID] = true
	}
	byParent := map[uint32][]agent.NodeMeta{}
	for _, m := range nodes {
		p := m.Parent
		if !present[p] || p == m.ID {
			p = s.root.Router.ID()
		}
		byParent[p] = append(byParent[p], m)
	}
	var walk func(id uint32)
	walk = func(id uint32) {
		for _, m := range byParent[id] {
			p := id
			out = append(out, NodeEntry{ID: m.ID, Parent: &p, Name: m.Name, Method: m.Method, Host: m.Host,
				PID: m.PID, State: m.State, RTTMs: float64(m.RTT.Microseconds()) / 1000})
			walk(m.ID)
		}
	}
	walk(s.root.Router.ID())
	return out
}

// routes is the root's route table without its control-socket clients.
func (s *Server) routes() router.Table {
	t := s.root.Router.Table()
	known := map[uint32]bool{}
	for _, m := range s.root.Tree.Nodes() {
		known[m.ID] = true
	}
	kept := t.Routes[:0]
	for _, r := range t.Routes {
		if known[r.ID] {
			kept = append(kept, r)
		}
	}
	t.Routes = kept
	return t
}

// watch streams tree events to handle on client until ctx ends (the client
// cancels the call) or the client goes away. Events are queued without
// blocking the link that produced them; a watcher too slow for a burst of
// more than the queue loses events and is told how many.
func (s *Server) watch(ctx context.Context, client, handle uint32) error {
	if handle < wire.FirstDynamicHandle {
		return fmt.Errorf("watch handle %d is not a dynamic handle", handle)
	}
	q := make(chan agent.TreeEvent, 4096)
	var dropped atomic.Int64
	unsub := s.root.Tree.Subscribe(func(e agent.TreeEvent) {
		select {
		case q <- e:
		default:
			dropped.Add(1)
		}
	})
	defer unsub()
	gone := make(chan struct{})
	var once sync.Once
	unsubGone := s.root.Monitor.Subscribe(func(e routemonitor.Event) {
		if e.Kind == routemonitor.DelRoute && e.ID == client {
			once.Do(func() { close(gone) })
		}
	})
	defer unsubGone()
	if _, _, ok := s.root.Router.Lookup(client); !ok {
		return nil
	}
	// The first message says the subscription is in place: events from
	// here on reach the client.
	if body, err := wire.Marshal(WatchEvent{Event: EventSubscribed, Time: time.Now().Format(time.RFC3339Nano)}); err == nil {
		if err := s.root.Router.SendContext(ctx, wire.Header{Dst: client, Handle: handle}, body); err != nil {
			return err
		}
	}
	defer func() {
		if n := dropped.Load(); n > 0 {
			s.log.Warn("watcher too slow: events dropped", "client", client, "dropped", n)
		}
	}()
	for {
		select {
		case e := <-q:
			body, err := wire.Marshal(WatchEvent{Event: e.Kind, ID: e.ID, Name: e.Name, Time: e.Time.Format(time.RFC3339Nano), Cause: e.Cause})
			if err != nil {
				return err
			}
			if err := s.root.Router.SendContext(ctx, wire.Header{Dst: client, Handle: handle}, body); err != nil {
				return nil // the root or the client is going: the watch is over
			}
		case <-ctx.Done():
			return nil
		case <-gone:
			return nil
		}
	}
}
