package agent

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/arbor-project/arbor/router"
	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
	"github.com/hashicorp/go-hclog"
)

// Attach makes this process a node of a running tree over conn, whose
// other end opened the link as the parent (stream.Open): a CLI client of
// arbor serve, attached to its root. It waits at most helloTimeout for the
// hello, then returns the node, which serves the built-ins like any other;
// Close detaches it.
func Attach(conn io.ReadWriteCloser, o Options, helloTimeout time.Duration) (*Node, error) {
	if o.Logger == nil {
		o.Logger = hclog.Default()
	}
	lcfg := stream.DefaultConfig()
	lcfg.Logger = o.Logger
	if helloTimeout > 0 {
		lcfg.HelloTimeout = helloTimeout
	}
	l, hello, err := stream.Accept(conn, lcfg, os.Getpid())
	if err != nil {
		return nil, fmt.Errorf("%w (attaching to the tree)", err)
	}
	cfg := router.FromHello(hello)
	cfg.Logger = o.Logger.Named(hello.Name)
	r, err := router.New(cfg)
	if err != nil {
		l.Close()
		return nil, err
	}
	o.Heartbeat = HeartbeatFromHello(hello)
	n := newNode(r, o)
	// What the client sent last (the cancel of a call it gave up on) goes
	// out before its link closes.
	n.beforeClose = func() {
		if p := r.Parent(); p != nil {
			_ = p.Link.Flush(time.Second)
		}
	}
	if _, err := r.AttachParent(l); err != nil {
		n.Close()
		l.Close()
		return nil, err
	}
	return n, nil
}

// ParentLost is closed when the node's parent link has closed (at once for
// the root, which has none).
func (n *Node) ParentLost() <-chan struct{} {
	if p := n.Router.Parent(); p != nil {
		return p.Link.Done()
	}
	ch := make(chan struct{})
	close(ch)
	return ch
}

// ChildHello is the hello for a new child id named name that this node
// attaches itself rather than through Spawn (a control-socket client): it
// carries this node's limits and heartbeat thresholds.
func (n *Node) ChildHello(id uint32, name string) wire.Hello {
	h := wire.Hello{
		ID: id, Name: name, ParentID: n.Router.ID(),
		Ancestors:          append([]uint32{n.Router.ID()}, n.Router.Ancestors()...),
		MaxMessage:         n.Router.MaxMessage(),
		AllowSiblingRoutes: n.Router.AllowSiblingRoutes(),
	}
	n.heartbeatHello(&h)
	return h
}
