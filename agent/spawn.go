package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
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
	// SSH, SSHConfig and Agents carry the root's ssh settings and agent
	// binaries to the node that spawns, so every ssh hop of a path is
	// started alike: SSHConfig is the text of SSH.ConfigFile (the file
	// may not exist on that node's host); Agents maps platform → SHA-256
	// of the binaries the root can hand out (agent.binary).
	SSH       *spawn.SSHOptions `cbor:"ssh,omitempty" json:"ssh,omitempty"`
	SSHConfig []byte            `cbor:"ssh_config,omitempty" json:"ssh_config,omitempty"`
	Agents    map[string]string `cbor:"agents,omitempty" json:"agents,omitempty"`
	// ConnectTimeoutMS is the root's --connect-timeout, so a hop spawned
	// by an intermediate node gives up when one spawned by the root would.
	ConnectTimeoutMS int64 `cbor:"connect_timeout_ms,omitempty" json:"connect_timeout_ms,omitempty"`
}

// SpawnResult names the new child.
type SpawnResult struct {
	ID   uint32 `cbor:"id" json:"id"`
	Name string `cbor:"name" json:"name"`
	PID  int    `cbor:"pid" json:"pid"`
	// Bootstrap is how a remote agent started: "hit" (cached on the
	// remote host) or "upload" (sent first); empty for local children.
	Bootstrap string `cbor:"bootstrap,omitempty" json:"bootstrap,omitempty"`
}

func (n *Node) registerSpawn(reg *funcs.Registry) {
	funcs.Register(reg, "agent.spawn", func(ctx context.Context, _ *funcs.Call, req SpawnRequest) (SpawnResult, error) {
		res, err := n.spawn(ctx, req)
		if err != nil && !errors.As(err, new(*spawn.HopError)) {
			// The caller's HopFailed leaves this error as it is: it
			// must name the hop itself.
			err = fmt.Errorf("%w (spawning %s)", err, spawn.Hop{Method: req.Method, Target: req.Target})
		}
		return res, err
	})
	funcs.Register(reg, "agent.binary", func(ctx context.Context, c *funcs.Call, req BinaryRequest) ([]byte, error) {
		return n.serveBinary(ctx, c, req)
	}, funcs.WithPolicy(funcs.Anyone))
}

// Spawn starts a child of this node over hop. The child's route reaches
// the root (ADD_ROUTE) before Spawn returns to a remote caller, because
// both travel up the same link in order.
func (n *Node) Spawn(ctx context.Context, hop spawn.Hop, name string) (SpawnResult, error) {
	return n.spawn(ctx, SpawnRequest{Method: hop.Method, Target: hop.Target, Name: name})
}

// spawn is Spawn with the settings a spawn request carries.
func (n *Node) spawn(ctx context.Context, req SpawnRequest) (SpawnResult, error) {
	hop, name := spawn.Hop{Method: req.Method, Target: req.Target}, req.Name
	switch hop.Method {
	case "local", "ssh", "sudo":
	default:
		return SpawnResult{}, fmt.Errorf("%w: %s (want local, ssh or sudo)", spawn.ErrUnsupported, hop)
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
	label := name
	if name == "" {
		name = defaultName(hop)
	}
	if n.Router.ID() != wire.RootID {
		name = n.Router.Name() + "/" + name
	}
	lcfg := stream.DefaultConfig()
	lcfg.MaxMessage = n.Router.MaxMessage()
	lcfg.HelloTimeout = n.opts.ConnectTimeout
	lcfg.WriteTimeout = n.opts.Heartbeat.writeTimeout(lcfg.WriteTimeout)
	if req.ConnectTimeoutMS > 0 {
		lcfg.HelloTimeout = time.Duration(req.ConnectTimeoutMS) * time.Millisecond
	}
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
	n.heartbeatHello(&hello)
	env := []string{}
	if n.opts.LogLevel != "" {
		env = append(env, "ARBOR_LOG_LEVEL="+n.opts.LogLevel)
	}
	l, proc, err := n.start(ctx, hop, req, hello, lcfg, env)
	if err != nil {
		return SpawnResult{}, err
	}
	// The child is listed before its link is attached, so that a Close
	// from here on kills its process; a Close that began while it started
	// has not seen it, so it is not started at all. Close reads a listed
	// child without n.mu: a listed child is never written to, and the
	// attached one replaces it.
	pending := &child{proc: proc}
	n.mu.Lock()
	if n.closing {
		n.mu.Unlock()
		l.Close()
		proc.Wait(0) // kills its group and reaps it
		return SpawnResult{}, fmt.Errorf("arbor: node %d is shutting down", n.Router.ID())
	}
	n.children[id] = pending
	n.mu.Unlock()
	port, err := n.Router.AttachChild(l)
	if err != nil {
		n.mu.Lock()
		if n.children[id] == pending {
			delete(n.children, id)
		}
		n.mu.Unlock()
		proc.Wait(0)
		return SpawnResult{}, err
	}
	c := &child{proc: proc, port: port}
	n.mu.Lock()
	if n.children[id] == pending {
		n.children[id] = c
	}
	n.mu.Unlock()
	n.reportSpawned(port, hop, label, proc.PID())
	go n.reap(id, c)
	return SpawnResult{ID: id, Name: l.Hello().Name, PID: proc.PID(), Bootstrap: proc.Bootstrap}, nil
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
			var req SpawnRequest
			if req, err = n.spawnRequest(hop); err == nil {
				err = out[i-1].Call(ctx, "agent.spawn", req, &res)
			}
		}
		if err != nil {
			return out, HopFailed(err, i, hop, "")
		}
		out = append(out, n.Remote(res.ID, res.Name))
	}
	return out, nil
}

// HopFailed is the error of a path whose hop i (from 0) failed with err.
// A *spawn.HopError, or the failure of agent.spawn on the node before the
// hop (a *funcs.RemoteError), already names the node being spawned and its
// hop, and is returned as it is; any other error (ours, with its prefix)
// gets the hop behind it: "... (hop 2 (local) of local/local)". path may
// be "".
func HopFailed(err error, i int, hop spawn.Hop, path string) error {
	var re *funcs.RemoteError
	if errors.As(err, new(*spawn.HopError)) || (errors.As(err, &re) && re.Fn == "agent.spawn") {
		return err
	}
	if path != "" {
		return fmt.Errorf("%w (hop %d (%s) of %s)", err, i+1, hop, path)
	}
	return fmt.Errorf("%w (hop %d (%s))", err, i+1, hop)
}

// defaultName names a child after its hop: local children by PID (the
// "%d"), remote ones by their hop.
func defaultName(hop spawn.Hop) string {
	switch {
	case hop.Method == "local":
		return "local.%d"
	case hop.Method == "sudo" && hop.Target == "":
		return "sudo:root"
	}
	return hop.String()
}

// start starts the process for hop and opens the link to the child.
func (n *Node) start(ctx context.Context, hop spawn.Hop, req SpawnRequest, hello wire.Hello, lcfg *stream.Config, env []string) (*stream.Link, *spawn.Process, error) {
	if hop.Method == "local" {
		l, proc, _, err := spawn.Local(ctx, spawn.LocalOptions{
			Exe: n.opts.Exe, Env: env, Hello: hello, Link: lcfg, Logger: n.Log,
		})
		return l, proc, err
	}
	sshOpts, cleanup, err := n.sshOptions(req)
	if err != nil {
		return nil, nil, err
	}
	defer cleanup() // ssh has read its config once it is connected
	o := spawn.RemoteOptions{Hello: hello, Link: lcfg, Logger: n.Log, Env: env, SSH: sshOpts, Binaries: n.binaries(req)}
	var l *stream.Link
	var proc *spawn.Process
	if hop.Method == "ssh" {
		l, proc, _, err = spawn.SSH(ctx, hop.Target, o)
	} else {
		l, proc, _, err = spawn.Sudo(ctx, hop.Target, o)
	}
	return l, proc, err
}

// binaries are the agent binaries this node can ship: its own, those in
// its agent dir, and (below the root) those the root listed in the
// request, fetched from the root when needed.
func (n *Node) binaries(req SpawnRequest) *spawn.Binaries {
	b := &spawn.Binaries{Self: n.opts.Exe, Dir: n.opts.AgentDir, Known: req.Agents}
	if n.Router.ID() != wire.RootID {
		b.Fetch = func(ctx context.Context, platform string) ([]byte, error) {
			var data []byte
			n.Log.Debug("asking the root for an agent binary", "platform", platform)
			root := n.Remote(wire.RootID, "root")
			defer root.Release()
			err := root.Call(ctx, "agent.binary", BinaryRequest{Platform: platform}, &data)
			if err != nil {
				return nil, fmt.Errorf("%w (asking the root for an agent binary for %s)", err, platform)
			}
			return data, nil
		}
	}
	return b
}

// sshOptions are the ssh settings for a spawn: the request's, else this
// node's own. Below the root, a config file travels as its text and is
// written to a private temporary file for the spawn (cleanup removes it).
func (n *Node) sshOptions(req SpawnRequest) (spawn.SSHOptions, func(), error) {
	none := func() {}
	if req.SSH == nil {
		return n.opts.SSH, none, nil
	}
	o := *req.SSH
	if len(req.SSHConfig) == 0 || n.Router.ID() == wire.RootID {
		return o, none, nil
	}
	f, err := os.CreateTemp("", "arbor-ssh-config-*") // mode 0600
	if err != nil {
		return o, none, fmt.Errorf("arbor: node %s: writing the ssh config: %w", n.Router.Name(), err)
	}
	_, werr := f.Write(req.SSHConfig)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(f.Name())
		return o, none, fmt.Errorf("arbor: node %s: writing the ssh config: %w", n.Router.Name(), werr)
	}
	o.ConfigFile = f.Name()
	return o, func() { os.Remove(f.Name()) }, nil
}

// spawnRequest is the request this node sends to have hop spawned below
// it: for ssh and sudo hops it carries this node's ssh settings and the
// table of agent binaries it can hand out.
func (n *Node) spawnRequest(hop spawn.Hop) (SpawnRequest, error) {
	req := SpawnRequest{Method: hop.Method, Target: hop.Target, ConnectTimeoutMS: n.opts.ConnectTimeout.Milliseconds()}
	if hop.Method == "local" {
		return req, nil
	}
	o := n.opts.SSH
	req.SSH = &o
	if o.ConfigFile != "" {
		data, err := os.ReadFile(o.ConfigFile)
		if err != nil {
			return req, fmt.Errorf("arbor: reading the ssh config: %w", err)
		}
		req.SSHConfig = data
	}
	table, err := (&spawn.Binaries{Self: n.opts.Exe, Dir: n.opts.AgentDir}).Table()
	if err != nil {
		return req, err
	}
	req.Agents = table
	return req, nil
}

// BinaryRequest asks the root for the agent binary of a platform.
type BinaryRequest struct {
	Platform string `cbor:"platform" json:"platform"` // "GOOS/GOARCH"
}

// serveBinary is agent.binary: the root hands an agent binary for another
// platform to a node below it that must bootstrap a host of that platform.
// Every caller the root hears from is its descendant; other nodes refuse.
func (n *Node) serveBinary(ctx context.Context, c *funcs.Call, req BinaryRequest) ([]byte, error) {
	if n.Router.ID() != wire.RootID {
		return nil, fmt.Errorf("arbor: agent.binary is served by the root only, not node %d (%s)", n.Router.ID(), n.Router.Name())
	}
	b := &spawn.Binaries{Self: n.opts.Exe, Dir: n.opts.AgentDir}
	table, err := b.Table()
	if err != nil {
		return nil, err
	}
	hash, ok := table[req.Platform]
	if !ok {
		return nil, fmt.Errorf("%w %s at the root; %s", spawn.ErrNoBinary, req.Platform, spawn.BuildHint(req.Platform))
	}
	data, err := b.Binary(ctx, req.Platform, hash)
	if err != nil {
		return nil, err
	}
	n.Log.Debug("handing out agent binary", "platform", req.Platform, "to", c.Src, "bytes", len(data))
	return data, nil
}
