package control

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arbor-project/arbor/agent"
	"github.com/arbor-project/arbor/builtin"
	arborctx "github.com/arbor-project/arbor/context"
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

// NodeEntry is one node of serve.tree's answer. The answer is a flat list
// ordered by ID, parents before children (CBOR nesting is bounded; trees
// are not), and comes in pages (builtin.PageArgs; ReadTree reads them all).
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

// EventStopping says arbor serve was asked to stop (arbor stop): its tree
// is about to shut down and the watch to end, as it should.
const EventStopping = "stopping"

// WatchEvent is one event of serve.watch, as the client receives it.
type WatchEvent struct {
	Event string `cbor:"event" json:"event"` // add_route, del_route, up, unresponsive, down, pool_* (see PoolBuild), stopping
	ID    uint32 `cbor:"id" json:"id"`
	Path  string `cbor:"path,omitempty" json:"path,omitempty"` // pool events: the path
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
	funcs.Register(reg, "serve.tree", func(_ context.Context, _ *funcs.Call, a builtin.PageArgs) ([]NodeEntry, error) {
		return s.tree(a)
	})
	funcs.Register(reg, "serve.routes", func(_ context.Context, _ *funcs.Call, a builtin.PageArgs) (router.Table, error) {
		return s.routes(a)
	})
	funcs.Register(reg, "serve.watch", func(ctx context.Context, c *funcs.Call, a WatchArgs) (builtin.Empty, error) {
		return builtin.Empty{}, s.watch(ctx, c.Src, a.Handle)
	})
	funcs.Register(reg, "serve.acquire", func(ctx context.Context, c *funcs.Call, a AcquireArgs) (AcquireResult, error) {
		if a.DeadlineUnixNano > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadline(ctx, time.Unix(0, a.DeadlineUnixNano))
			defer cancel()
		}
		id, n, err := s.pool.Acquire(ctx, c.Src, a.Path, a.Wait)
		return AcquireResult{ID: n.ID, Name: n.Name, Lease: id}, err
	})
	funcs.Register(reg, "serve.release", func(_ context.Context, c *funcs.Call, a ReleaseArgs) (builtin.Empty, error) {
		s.pool.Release(c.Src, a.Lease)
		return builtin.Empty{}, nil
	})
	funcs.Register(reg, "serve.pool", func(context.Context, *funcs.Call, builtin.Empty) ([]PoolPath, error) {
		return s.pool.List(), nil
	})
	funcs.Register(reg, "serve.pool.keep", func(_ context.Context, _ *funcs.Call, a KeepArgs) (builtin.Empty, error) {
		return builtin.Empty{}, s.pool.Keep(a.Path, a.Min)
	})
	funcs.Register(reg, "serve.stop", func(context.Context, *funcs.Call, builtin.Empty) (builtin.Empty, error) {
		s.stopOnce.Do(func() {
			s.tellWatchersStopping()
			close(s.stopReq)
		})
		return builtin.Empty{}, nil
	})
}

// tellWatchersStopping sends every watcher the stopping event, as control
// on its link, and waits (at most stoppingFlush) until it has been written:
// the tree goes down next and closes the clients' links, and an event
// still queued then would be lost (seen under load when the tree had no
// children left to wait for).
func (s *Server) tellWatchersStopping() {
	s.watchMu.Lock()
	s.stopping = true
	clients := make(map[uint32]bool)
	for w := range s.watchers {
		s.tellStopping(w)
		clients[w.client] = true
	}
	s.watchMu.Unlock()
	var wg sync.WaitGroup
	for _, p := range s.root.Router.Children() {
		if clients[p.PeerID] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = p.Link.Flush(stoppingFlush)
			}()
		}
	}
	wg.Wait()
}

// stoppingFlush bounds the wait for the stopping events to go out.
const stoppingFlush = 2 * time.Second

// tellStopping sends watcher w the stopping event.
func (s *Server) tellStopping(w watcher) {
	body, err := wire.Marshal(WatchEvent{Event: EventStopping, Name: s.root.Router.Name(), Time: time.Now().Format(time.RFC3339Nano), Cause: "arbor stop"})
	if err != nil {
		return
	}
	if err := s.root.Router.SendControl(wire.Header{Dst: w.client, Handle: w.handle}, body); err != nil {
		s.log.Debug("stopping not sent to a watcher", "client", w.client, "error", err)
	}
}

// watcher is one running watch: the client and the handle its events go to.
type watcher struct{ client, handle uint32 }

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
	// Locks, so spawns of different paths run at once: the name for the
	// whole call (one node per name), and each hop that may be reused
	// while it is looked up. The first hop this call builds stays locked
	// until the call ends: another spawn sharing it waits, then reuses it,
	// or builds it anew if this call failed and rolled it back.
	if a.Name != "" {
		unlock, err := s.spawnLocks.lock(ctx, spawnName(a.Name))
		if err != nil {
			return SpawnResult{}, err
		}
		defer unlock()
	}
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
			unlock, err := s.spawnLocks.lock(ctx, spawnHop{parent, hop.Method, hop.Target, label})
			if err != nil {
				return SpawnResult{}, err
			}
			if m, ok := tree.FindChild(parent, hop, label); ok {
				unlock()
				parent, parentName, last = m.ID, m.Name, SpawnResult{ID: m.ID, Name: m.Name}
				continue
			}
			defer unlock() // built below: held until this call's outcome is known
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

// spawnName and spawnHop are the keys of Server.spawnLocks.
type (
	spawnName string
	spawnHop  struct {
		parent                uint32
		method, target, label string
	}
)

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

// tree is page a of serve.tree (see builtin.PageArgs): the root and every
// node the root knows, ordered by ID. A node's parent is the one its route
// named if that is the root or a known node with a lower ID (every honest
// parent: IDs are handed out down the tree, so a child's is above its
// parent's), else the root. So each node's parent comes before it, and no
// parent a node claims can make a loop or hide another node.
func (s *Server) tree(a builtin.PageArgs) ([]NodeEntry, error) {
	n, err := a.Count()
	if err != nil {
		return nil, err
	}
	if n == 0 {
		n = math.MaxInt
	}
	rootID := s.root.Router.ID()
	nodes := s.root.Tree.Nodes()
	out := []NodeEntry{}
	if a.From <= rootID {
		host, _ := os.Hostname()
		out = append(out, NodeEntry{ID: rootID, Name: s.root.Router.Name(), Method: "root", Host: host, PID: os.Getpid(), State: agent.StateUp})
	}
	i, _ := slices.BinarySearchFunc(nodes, a.From, byID)
	for _, m := range nodes[i:] {
		if len(out) >= n {
			break
		}
		p := m.Parent
		if p >= m.ID || p != rootID && !listed(nodes, p) {
			p = rootID
		}
		out = append(out, NodeEntry{ID: m.ID, Parent: &p, Name: m.Name, Method: m.Method, Host: m.Host,
			PID: m.PID, State: m.State, RTTMs: float64(m.RTT.Microseconds()) / 1000})
	}
	return builtin.FitPage(out, a, s.root.Router.MaxMessage(), nil)
}

// routes is page a of serve.routes: the root's route table without its
// control-socket clients.
func (s *Server) routes(a builtin.PageArgs) (router.Table, error) {
	nodes := s.root.Tree.Nodes()
	return builtin.RoutesPage(s.root.Router, a, func(id uint32) bool { return listed(nodes, id) })
}

// ReadTree reads serve.tree's whole answer from root, the root's handle on
// a control-socket client, page by page: the root, then every node in ID
// order, each node's parent before it.
func ReadTree(ctx context.Context, root *arborctx.Remote) ([]NodeEntry, error) {
	return builtin.ReadPages(func(e NodeEntry) uint32 { return e.ID }, func(a builtin.PageArgs) ([]NodeEntry, error) {
		var es []NodeEntry
		err := builtin.CallPage(ctx, root, "serve.tree", a, &es)
		return es, err
	})
}

// listed reports whether id is in nodes (ordered by ID).
func listed(nodes []agent.NodeMeta, id uint32) bool {
	_, ok := slices.BinarySearchFunc(nodes, id, byID)
	return ok
}

func byID(m agent.NodeMeta, id uint32) int { return cmp.Compare(m.ID, id) }

// watch streams tree events to handle on client until ctx ends (the client
// cancels the call) or the client goes away. Events are queued without
// blocking the link that produced them; a watcher too slow for a burst of
// more than the queue loses events and is told how many.
func (s *Server) watch(ctx context.Context, client, handle uint32) error {
	if handle < wire.FirstDynamicHandle {
		return fmt.Errorf("watch handle %d is not a dynamic handle", handle)
	}
	q := make(chan WatchEvent, 4096)
	var dropped atomic.Int64
	put := func(e WatchEvent) {
		select {
		case q <- e:
		default:
			dropped.Add(1)
		}
	}
	unsub := s.root.Tree.Subscribe(func(e agent.TreeEvent) {
		put(WatchEvent{Event: e.Kind, ID: e.ID, Name: e.Name, Time: e.Time.Format(time.RFC3339Nano), Cause: e.Cause})
	})
	defer unsub()
	unsubPool := s.pool.Subscribe(func(e PoolEvent) {
		put(WatchEvent{Event: e.Kind, ID: e.ID, Name: e.Name, Path: e.Path, Time: e.Time.Format(time.RFC3339Nano), Cause: e.Cause})
	})
	defer unsubPool()
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
	w := watcher{client, handle}
	s.watchMu.Lock()
	s.watchers[w] = struct{}{}
	stopping := s.stopping
	s.watchMu.Unlock()
	defer func() {
		s.watchMu.Lock()
		delete(s.watchers, w)
		s.watchMu.Unlock()
	}()
	// The first message says the subscription is in place: events from
	// here on reach the client.
	if body, err := wire.Marshal(WatchEvent{Event: EventSubscribed, Time: time.Now().Format(time.RFC3339Nano)}); err == nil {
		if err := s.root.Router.SendContext(ctx, wire.Header{Dst: client, Handle: handle}, body); err != nil {
			return err
		}
	}
	if stopping {
		s.tellStopping(w) // serve.stop came before this watch
	}
	defer func() {
		if n := dropped.Load(); n > 0 {
			s.log.Warn("watcher too slow: events dropped", "client", client, "dropped", n)
		}
	}()
	for {
		select {
		case e := <-q:
			body, err := wire.Marshal(e)
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
