package agent

import (
	"context"
	"fmt"
	"time"

	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/spawn"
	"github.com/arbor-project/arbor/stream"
	"github.com/arbor-project/arbor/stream/wire"
)

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
