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
	// SSH configures every ssh hop of the tree (passed down in spawn
	// requests, so intermediate nodes run ssh alike).
	SSH spawn.SSHOptions
	// Tools configures every other method's tool and the cmd: methods
	// (passed down in spawn requests like SSH).
	Tools spawn.ToolOptions
	// AgentDir holds agent binaries for other platforms, named
	// arbor-GOOS-GOARCH, shipped to remote hosts of that platform.
	AgentDir string
	// Heartbeat is how this node watches its child links (zero fields:
	// DefaultHeartbeat); children inherit it.
	Heartbeat HeartbeatConfig
}

// Node is one running node. It is safe for concurrent use.
type Node struct {
	Router     *router.Router
	Monitor    *routemonitor.Monitor
	Dispatcher *funcs.Dispatcher
	Log        hclog.Logger
	// Tree is the live view of the whole tree; set at the root only.
	Tree *Tree

	opts Options
	hb   *heartbeat
	// grants are the agent.binary grants this root issued (spawn.go).
	grants grantTable
	// intake takes the records forwarded to this root (logs.go).
	intake     *logIntake
	intakeOnce sync.Once

	mu       sync.Mutex
	children map[uint32]*child
	closing  bool
	// beforeClose runs after the children are down and before the links
	// close: a child flushes its forwarded logs there.
	beforeClose func()
	// leaving is why this node shuts down, as told to the root (see
	// reportLeaving); "" until a SHUTDOWN names a reason.
	leaving string
	closed  chan struct{}
	once    sync.Once
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
	n.Tree = newTree(n)
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
	r.Handle(wire.HandlePing, answerPing(r), router.Anyone)
	r.Handle(wire.HandleShutdown, func(m *router.Message) {
		n.setLeaving(m.Src)
		go n.Close()
	}, nil)
	n.hb = startHeartbeat(n)
	return n
}

// Done is closed when the node has shut down.
func (n *Node) Done() <-chan struct{} { return n.closed }

// Remote returns the handle for node id.
func (n *Node) Remote(id uint32, name string) *arborctx.Remote {
	return arborctx.New(n.Router, n.Monitor, id, name)
}

// ShutdownGrace is how long a node waits for its children to shut down
// their own subtrees (and forward their last log records) before it
// closes their links and kills what is left.
const ShutdownGrace = 3 * time.Second

// closeStepTimeout bounds each later step of Close (closing the links,
// stopping the heartbeat, reaping the children, ending the calls), so no
// peer and no function can hold a shutdown up: a step still running then
// is left behind and logged.
const closeStepTimeout = 5 * time.Second

// Close shuts the node down, cascading: every child is asked to shut down
// (SHUTDOWN) and given ShutdownGrace to take its own subtree down and send
// its last records up; then the links close, running calls are cancelled,
// and stragglers are killed as process groups. Every step has a deadline
// (ShutdownGrace, then closeStepTimeout each): Close returns within about
// half a minute whatever a peer or a function does, with the children's
// process groups killed. It is idempotent and returns when the node is
// down.
func (n *Node) Close() error {
	n.once.Do(func() {
		n.reportLeaving()
		n.mu.Lock()
		n.closing = true
		kids := make([]*child, 0, len(n.children))
		for _, c := range n.children {
			kids = append(kids, c)
		}
		n.mu.Unlock()
		for _, c := range kids {
			if c.port != nil {
				_ = n.Router.SendControl(wire.Header{Dst: c.port.PeerID, Handle: wire.HandleShutdown}, nil)
			}
		}
		// One deadline for all: once it has passed, no child is waited for.
		grace, cancel := context.WithTimeout(context.Background(), ShutdownGrace)
		for _, c := range kids {
			if c.port == nil {
				continue
			}
			select {
			case <-c.port.Link.Done():
			case <-grace.Done():
			}
		}
		cancel()
		if n.beforeClose != nil {
			n.closeStep("flush the last records", n.beforeClose)
		}
		n.closeStep("close the links", func() { n.Router.Close() })
		n.closeStep("stop the heartbeat", func() { <-n.hb.done })
		n.closeStep("reap the children", func() {
			// Their links are closed, which tells them to exit: a second
			// more, then their groups are killed, all at once.
			exited, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			for _, c := range kids {
				select {
				case <-c.proc.Exited():
				case <-exited.Done():
				}
			}
			for _, c := range kids {
				c.proc.Kill()
			}
			for _, c := range kids {
				<-c.proc.Exited() // reaped
			}
		})
		n.closeStep("end the running calls", n.Dispatcher.Close)
		close(n.closed)
	})
	return nil
}

// closeStep runs one step of Close, waiting for it at most
// closeStepTimeout; a step still running then is logged and left behind.
func (n *Node) closeStep(what string, step func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		step()
	}()
	t := time.NewTimer(closeStepTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		n.Log.Warn("shutdown: a step did not finish in time; going on without it", "step", what, "waited", closeStepTimeout)
	}
}

// KillChildren kills the process group of every child this node runs, at
// once, without asking: the last resort of a shutdown that could not
// finish. It never blocks for long.
func (n *Node) KillChildren() {
	n.mu.Lock()
	kids := make([]*child, 0, len(n.children))
	for _, c := range n.children {
		kids = append(kids, c)
	}
	n.mu.Unlock()
	for _, c := range kids {
		c.proc.Kill()
	}
}

// LevelFromEnv is the log level named by ARBOR_LOG_LEVEL, or def.
func LevelFromEnv(def string) string {
	if v := strings.TrimSpace(os.Getenv("ARBOR_LOG_LEVEL")); v != "" {
		return v
	}
	return def
}

// setLeaving records why this node is about to shut down: the SHUTDOWN
// of node src (arbor kill, or its parent shutting down its subtree).
func (n *Node) setLeaving(src uint32) {
	n.mu.Lock()
	if n.leaving == "" {
		n.leaving = fmt.Sprintf("shut down on request of node %d", src)
	}
	n.mu.Unlock()
}

// reportLeaving tells the root, before anything closes, that this node is
// leaving on purpose, so the root reports its route's withdrawal as a
// shutdown and not as a lost link. It is the one NODE_STATE a node sends
// about itself: it can only describe its own going, which it could bring
// about anyway. Sent as control, in order before the links close.
func (n *Node) reportLeaving() {
	p := n.Router.Parent()
	if p == nil {
		return
	}
	n.mu.Lock()
	reason := n.leaving
	n.mu.Unlock()
	if reason == "" {
		reason = "shut down"
	}
	body, err := wire.Marshal(wire.NodeState{ID: n.Router.ID(), Parent: p.PeerID, State: StateLeaving, Cause: reason})
	if err != nil {
		return
	}
	if err := n.Router.SendControl(wire.Header{Dst: wire.RootID, Handle: wire.HandleNodeState}, body); err != nil {
		n.Log.Debug("leaving not reported", "error", err)
	}
}
