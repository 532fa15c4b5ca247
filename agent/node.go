package agent

import (
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
	r.Handle(wire.HandlePing, func(m *router.Message) { _ = r.ReplyUrgent(m, nil) }, router.Anyone)
	r.Handle(wire.HandleShutdown, func(*router.Message) { go n.Close() }, nil)
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
				_ = n.Router.SendControl(wire.Header{Dst: c.port.PeerID, Handle: wire.HandleShutdown}, nil)
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
		<-n.hb.done
		for _, c := range kids {
			c.proc.Wait(time.Second)
			c.proc.Kill()
		}
		n.Dispatcher.Close()
		close(n.closed)
	})
	return nil
}

// LevelFromEnv is the log level named by ARBOR_LOG_LEVEL, or def.
func LevelFromEnv(def string) string {
	if v := strings.TrimSpace(os.Getenv("ARBOR_LOG_LEVEL")); v != "" {
		return v
	}
	return def
}
