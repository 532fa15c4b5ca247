package agent

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/arbor-project/arbor/builtin"
	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/routemonitor"
	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/spawn"
	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
)

// Options configure a root node.
type Options struct {
	// Logger is where the root logs, and where forwarded records from the
	// rest of the tree are printed. Nil: hclog.Default().
	Logger hclog.Logger
	// LogLevel is passed to every node of the tree ("" means info).
	LogLevel string
	// MaxMessage is the largest payload in the tree (default 64 MiB).
	MaxMessage uint32
	// ConnectTimeout bounds each spawn's hello (default 30 s).
	ConnectTimeout time.Duration
	// Registry is the functions served; nil means the built-ins only.
	Registry *funcs.Registry
	// Exe is the agent binary for local children (default: this executable).
	Exe string
}

// Node is one running node. It is safe for concurrent use.
type Node struct {
	Router     *router.Router
	Monitor    *routemonitor.Monitor
	Dispatcher *funcs.Dispatcher
	Log        hclog.Logger

	opts Options

	mu       sync.Mutex
	children map[uint32]*child
	closing  bool
	// beforeClose runs after the children are down and before the links
	// close: a child flushes its forwarded logs there.
	beforeClose func()
	closed      chan struct{}
	once        sync.Once
}

type child struct {
	proc *spawn.Process
	port *router.Port
}

// NewRoot starts the root node (ID 0) of a new tree in this process.
func NewRoot(o Options) (*Node, error) {
	if o.Logger == nil {
		o.Logger = hclog.Default()
	}
	cfg := router.DefaultConfig()
	if o.MaxMessage != 0 {
		cfg.MaxMessage = o.MaxMessage
	}
	cfg.Logger = o.Logger
	r, err := router.New(cfg)
	if err != nil {
		return nil, err
	}
	n := newNode(r, o)
	r.Handle(wire.HandleForwardLog, n.onForwardLog, router.Descendants(r))
	return n, nil
}

func newNode(r *router.Router, o Options) *Node {
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = 30 * time.Second
	}
	reg := o.Registry
	if reg == nil {
		reg = funcs.NewRegistry()
		builtin.Register(reg)
	}
	n := &Node{
		Router:   r,
		Monitor:  routemonitor.New(r),
		Log:      r.Logger(),
		opts:     o,
		children: make(map[uint32]*child),
		closed:   make(chan struct{}),
	}
	n.registerSpawn(reg)
	n.Dispatcher = funcs.Serve(r, reg, funcs.DefaultConfig(), map[string]any{"node": n})
	r.Handle(wire.HandlePing, func(m *router.Message) { _ = r.Reply(m, nil) }, router.Anyone)
	r.Handle(wire.HandleShutdown, func(*router.Message) { go n.Close() }, nil)
	return n
}

// Done is closed when the node has shut down.
func (n *Node) Done() <-chan struct{} { return n.closed }

// Remote returns the handle for node id.
func (n *Node) Remote(id uint32, name string) *arborctx.Remote {
	return arborctx.New(n.Router, n.Monitor, id, name)
}

// SpawnRequest asks a node to start a child.
type SpawnRequest struct {
	Method string `cbor:"method" json:"method"`
	Target string `cbor:"target,omitempty" json:"target,omitempty"`
	Name   string `cbor:"name,omitempty" json:"name,omitempty"`
}

// SpawnResult names the new child.
type SpawnResult struct {
	ID   uint32 `cbor:"id" json:"id"`
	Name string `cbor:"name" json:"name"`
	PID  int    `cbor:"pid" json:"pid"`
}

func (n *Node) registerSpawn(reg *funcs.Registry) {
	funcs.Register(reg, "agent.spawn", func(ctx context.Context, _ *funcs.Call, req SpawnRequest) (SpawnResult, error) {
		return n.Spawn(ctx, spawn.Hop{Method: req.Method, Target: req.Target}, req.Name)
	})
}

// Spawn starts a child of this node over hop. The child's route reaches
// the root (ADD_ROUTE) before Spawn returns to a remote caller, because
// both travel up the same link in order.
func (n *Node) Spawn(ctx context.Context, hop spawn.Hop, name string) (SpawnResult, error) {
	if hop.Method != "local" {
		return SpawnResult{}, fmt.Errorf("%w: %s (ssh and sudo hops arrive in a later release)", spawn.ErrUnsupported, hop)
	}
	n.mu.Lock()
	closing := n.closing
	n.mu.Unlock()
	if closing {
		return SpawnResult{}, fmt.Errorf("arbor: node %d is shutting down", n.Router.ID())
	}
	id, err := n.Router.AllocateID(ctx)
	if err != nil {
		return SpawnResult{}, err
	}
	if name == "" {
		name = "local.%d"
	}
	if n.Router.ID() != wire.RootID {
		name = n.Router.Name() + "/" + name
	}
	lcfg := stream.DefaultConfig()
	lcfg.MaxMessage = n.Router.MaxMessage()
	lcfg.HelloTimeout = n.opts.ConnectTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < lcfg.HelloTimeout {
		lcfg.HelloTimeout = max(time.Until(dl), time.Millisecond)
	}
	lcfg.Logger = n.Log
	hello := wire.Hello{
		ID: id, Name: name, ParentID: n.Router.ID(),
		Ancestors:          append([]uint32{n.Router.ID()}, n.Router.Ancestors()...),
		MaxMessage:         n.Router.MaxMessage(),
		AllowSiblingRoutes: n.Router.AllowSiblingRoutes(),
	}
	env := []string{}
	if n.opts.LogLevel != "" {
		env = append(env, "ARBOR_LOG_LEVEL="+n.opts.LogLevel)
	}
	l, proc, _, err := spawn.Local(ctx, spawn.LocalOptions{
		Exe: n.opts.Exe, Env: env, Hello: hello, Link: lcfg, Logger: n.Log,
	})
	if err != nil {
		return SpawnResult{}, err
	}
	c := &child{proc: proc}
	n.mu.Lock()
	n.children[id] = c
	n.mu.Unlock()
	port, err := n.Router.AttachChild(l)
	if err != nil {
		proc.Kill()
		return SpawnResult{}, err
	}
	c.port = port
	go n.reap(id, c)
	return SpawnResult{ID: id, Name: l.Hello().Name, PID: proc.PID()}, nil
}

// reap waits for a child's link to end, then for its process, killing its
// group if it lingers.
func (n *Node) reap(id uint32, c *child) {
	select {
	case <-c.port.Link.Done():
		// The link is gone; the child exits on its own when it sees EOF.
		c.proc.Wait(2 * time.Second)
	case <-c.proc.Exited():
		c.port.Link.Abort(fmt.Errorf("child process exited"))
	}
	c.proc.Kill() // anything left in its group
	n.mu.Lock()
	delete(n.children, id)
	n.mu.Unlock()
}

// ShutdownGrace is how long a node waits for its children to shut down
// their own subtrees (and forward their last log records) before it
// closes their links and kills what is left.
const ShutdownGrace = 3 * time.Second

// Close shuts the node down, cascading: every child is asked to shut down
// (SHUTDOWN) and given ShutdownGrace to take its own subtree down and send
// its last records up; then the links close, running calls are cancelled,
// and stragglers are killed as process groups. It is idempotent and
// returns when the node is down.
func (n *Node) Close() error {
	n.once.Do(func() {
		n.mu.Lock()
		n.closing = true
		kids := make([]*child, 0, len(n.children))
		for _, c := range n.children {
			kids = append(kids, c)
		}
		n.mu.Unlock()
		grace := time.NewTimer(ShutdownGrace)
		defer grace.Stop()
		for _, c := range kids {
			if c.port != nil {
				_ = n.Router.Send(wire.Header{Dst: c.port.PeerID, Handle: wire.HandleShutdown}, nil)
			}
		}
		for _, c := range kids {
			if c.port == nil {
				continue
			}
			select {
			case <-c.port.Link.Done():
			case <-grace.C:
			}
		}
		if n.beforeClose != nil {
			n.beforeClose()
		}
		n.Router.Close()
		for _, c := range kids {
			c.proc.Wait(time.Second)
			c.proc.Kill()
		}
		n.Dispatcher.Close()
		close(n.closed)
	})
	return nil
}

// SpawnPath builds a chain of hops below this node (reusing nothing) and
// returns a handle per hop, first hop first. Later hops are spawned by the
// node before them (via), so the spawn request travels down the chain.
func (n *Node) SpawnPath(ctx context.Context, hops []spawn.Hop) ([]*arborctx.Remote, error) {
	var out []*arborctx.Remote
	for i, hop := range hops {
		var res SpawnResult
		var err error
		if i == 0 {
			res, err = n.Spawn(ctx, hop, "")
		} else {
			err = out[i-1].Call(ctx, "agent.spawn", SpawnRequest{Method: hop.Method, Target: hop.Target}, &res)
		}
		if err != nil {
			return out, fmt.Errorf("hop %d (%s): %w", i+1, hop, err)
		}
		out = append(out, n.Remote(res.ID, res.Name))
	}
	return out, nil
}

// LevelFromEnv is the log level named by ARBOR_LOG_LEVEL, or def.
func LevelFromEnv(def string) string {
	if v := strings.TrimSpace(os.Getenv("ARBOR_LOG_LEVEL")); v != "" {
		return v
	}
	return def
}
