package agent

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	arborctx "github.com/arbor-project/arbor/context"
	"github.com/arbor-project/arbor/funcs"
	"github.com/arbor-project/arbor/internal/errs"
	"github.com/arbor-project/arbor/router"
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
	// Tools and ToolConfigs carry the root's settings for every other
	// method's tool (path, global options, the cmd: templates of its
	// config file), so every hop of a method is started alike wherever it
	// is spawned. ToolConfigs holds the text of a Tool.ConfigFile by
	// method (the file may not exist on that node's host).
	Tools       *spawn.ToolOptions `cbor:"tools,omitempty" json:"tools,omitempty"`
	ToolConfigs map[string][]byte  `cbor:"tool_configs,omitempty" json:"tool_configs,omitempty"`
	// BinaryGrant lets the node that spawns fetch one agent binary from
	// the root (agent.binary) for this spawn, if its bootstrap needs one
	// it does not hold. The root issues it with each ssh or sudo spawn
	// request it sends and honours it once, while the spawn can still be
	// running (see grantTable).
	BinaryGrant string `cbor:"binary_grant,omitempty" json:"binary_grant,omitempty"`
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
	// Any node may ask (the callers are descendants); the grant decides.
	funcs.Register(reg, "agent.binary", func(ctx context.Context, c *funcs.Call, req BinaryRequest) (BinaryOffer, error) {
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
	if !spawn.Known(hop.Method) {
		return SpawnResult{}, fmt.Errorf("%w: %s (want one of %s)", spawn.ErrUnsupported, hop, strings.Join(spawn.Methods(), ", "))
	}
	n.mu.Lock()
	closing := n.closing
	n.mu.Unlock()
	if closing {
		return SpawnResult{}, fmt.Errorf("arbor: node %d is shutting down", n.Router.ID())
	}
	label := name
	if name == "" {
		name = defaultName(hop)
	}
	if n.Router.ID() != wire.RootID {
		name = n.Router.Name() + "/" + name
	}
	if err := wire.CheckName(name); err != nil {
		return SpawnResult{}, err
	}
	id, err := n.Router.AllocateID(ctx)
	if err != nil {
		return SpawnResult{}, err
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
	l, proc, ack, err := n.start(ctx, hop, req, hello, lcfg, env)
	if err != nil {
		// No link, so no route to id was ever announced: it can be
		// handed out again.
		n.Router.ReleaseID(id)
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
	// The tree shows the agent's own pid (from its hello ack), not that of
	// the ssh or sudo process in front of it, and the host as the agent
	// itself names it.
	pid := ack.PID
	if pid == 0 {
		pid = proc.PID()
	}
	n.reportSpawned(port, hop, label, pid, n.childHost(ctx, hop, id, l.Hello().Name))
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
			if req, err = n.spawnRequest(hop, out[i-1].ID()); err == nil {
				err = out[i-1].Call(ctx, "agent.spawn", req, &res)
				n.grants.revoke(req.BinaryGrant) // the spawn is over
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
	case (hop.Method == "sudo" || hop.Method == "su" || hop.Method == "doas") && hop.Target == "":
		return hop.Method + ":root"
	}
	return hop.String()
}

// start starts the process for hop and opens the link to the child; the
// child's hello ack carries its own pid.
func (n *Node) start(ctx context.Context, hop spawn.Hop, req SpawnRequest, hello wire.Hello, lcfg *stream.Config, env []string) (*stream.Link, *spawn.Process, wire.HelloAck, error) {
	if hop.Method == "local" {
		return spawn.Local(ctx, spawn.LocalOptions{
			Exe: n.opts.Exe, Env: env, Hello: hello, Link: lcfg, Logger: n.Log,
		})
	}
	sshOpts, cleanup, err := n.sshOptions(req)
	if err != nil {
		return nil, nil, wire.HelloAck{}, err
	}
	defer cleanup() // ssh has read its config once it is connected
	tools, tcleanup, err := n.toolOptions(req)
	if err != nil {
		return nil, nil, wire.HelloAck{}, err
	}
	defer tcleanup() // the tool has read its config once the link is up
	o := spawn.RemoteOptions{Hello: hello, Link: lcfg, Logger: n.Log, Env: env, SSH: sshOpts, Tools: tools,
		Spawner: n.Router.Name(), Binaries: n.binaries(req)}
	return spawn.Remote(ctx, hop, o)
}

// toolOptions are the method tools' settings for a spawn: the request's,
// else this node's own. Below the root, a tool's config file travels as
// its text and is written to a private temporary file for the spawn
// (cleanup removes it), as the ssh config is.
func (n *Node) toolOptions(req SpawnRequest) (spawn.ToolOptions, func(), error) {
	none := func() {}
	if req.Tools == nil {
		return n.opts.Tools, none, nil
	}
	o := spawn.ToolOptions{Commands: req.Tools.Commands, Tools: map[string]spawn.Tool{}}
	for m, t := range req.Tools.Tools {
		o.Tools[m] = t
	}
	if n.Router.ID() == wire.RootID {
		return o, none, nil
	}
	var files []string
	cleanup := func() {
		for _, f := range files {
			os.Remove(f)
		}
	}
	for m, t := range o.Tools {
		text, ok := req.ToolConfigs[m]
		if t.ConfigFile == "" || !ok {
			continue
		}
		f, err := os.CreateTemp("", "arbor-"+m+"-config-*") // mode 0600
		if err != nil {
			cleanup()
			return o, none, fmt.Errorf("arbor: node %s: writing the %s config: %w", n.Router.Name(), m, err)
		}
		files = append(files, f.Name())
		_, werr := f.Write(text)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			cleanup()
			return o, none, fmt.Errorf("arbor: node %s: writing the %s config: %w", n.Router.Name(), m, werr)
		}
		t.ConfigFile = f.Name()
		o.Tools[m] = t
	}
	return o, cleanup, nil
}

// binaries are the agent binaries this node can ship: its own, those in
// its agent dir, and (below the root) those the root listed in the
// request, fetched from the root when needed.
func (n *Node) binaries(req SpawnRequest) *spawn.Binaries {
	b := &spawn.Binaries{Self: n.opts.Exe, Dir: n.opts.AgentDir, Known: req.Agents}
	if n.Router.ID() != wire.RootID {
		b.Fetch = func(ctx context.Context, platform string) ([]byte, error) {
			return n.fetchBinary(ctx, platform, req.BinaryGrant)
		}
	}
	return b
}

// fetchBinary asks the root for the agent binary of platform with the
// grant of the spawn under way, and reads it from the channel the root
// streams it on (see serveBinary).
func (n *Node) fetchBinary(ctx context.Context, platform, grant string) ([]byte, error) {
	if grant == "" {
		return nil, fmt.Errorf("arbor: node %d (%s) holds no agent binary for %s, and the spawn request carries no grant to fetch one from the root",
			n.Router.ID(), n.Router.Name(), platform)
	}
	n.Log.Debug("asking the root for an agent binary", "platform", platform)
	root := n.Remote(wire.RootID, "root")
	defer root.Release()
	var offer BinaryOffer
	if err := root.Call(ctx, "agent.binary", BinaryRequest{Platform: platform, Grant: grant}, &offer); err != nil {
		return nil, fmt.Errorf("%w (asking the root for an agent binary for %s)", err, platform)
	}
	ch, err := n.Router.ClaimChannel(wire.RootID, offer.Channel)
	if err != nil {
		return nil, fmt.Errorf("%w (the agent binary for %s from the root)", err, platform)
	}
	defer ch.Close()
	stop := context.AfterFunc(ctx, ch.Abort)
	defer stop()
	if offer.Size <= 0 || offer.Size > spawn.MaxBinary {
		return nil, fmt.Errorf("arbor: the root offers an agent binary for %s of %d bytes; a node accepts 1 to %d", platform, offer.Size, spawn.MaxBinary)
	}
	data := make([]byte, offer.Size)
	if k, err := io.ReadFull(ch, data); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, errs.Wrap(err, fmt.Sprintf("the agent binary for %s from the root ended after %d of %d bytes", platform, k, offer.Size))
	}
	return data, nil
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
// table of agent binaries it can hand out; for every remote method, its
// tools' settings too.
func (n *Node) spawnRequest(hop spawn.Hop, via uint32) (SpawnRequest, error) {
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
	tools := n.opts.Tools
	req.Tools = &tools
	for m, t := range tools.Tools {
		if t.ConfigFile == "" {
			continue
		}
		data, err := os.ReadFile(t.ConfigFile)
		if err != nil {
			return req, fmt.Errorf("arbor: reading the %s config: %w", m, err)
		}
		if req.ToolConfigs == nil {
			req.ToolConfigs = map[string][]byte{}
		}
		req.ToolConfigs[m] = data
	}
	if n.Router.ID() == wire.RootID {
		req.BinaryGrant = n.grants.issue(via, n.opts.ConnectTimeout+grantSlack)
	}
	return req, nil
}

// BinaryRequest asks the root for the agent binary of a platform.
type BinaryRequest struct {
	Platform string `cbor:"platform" json:"platform"` // "GOOS/GOARCH"
	// Grant is the BinaryGrant of the spawn request being served.
	Grant string `cbor:"grant" json:"grant"`
}

// BinaryOffer is the root's answer to agent.binary: the binary follows on
// the channel the root opened to the caller, Size bytes, then the end of
// the channel. The caller claims the channel (router.ClaimChannel with
// the root's ID) and checks the bytes against the SHA-256 it expects.
type BinaryOffer struct {
	Channel uint32 `cbor:"channel" json:"channel"`
	Size    int64  `cbor:"size" json:"size"`
	SHA256  string `cbor:"sha256" json:"sha256"`
}

// serveBinary is agent.binary: the root streams an agent binary for
// another platform to a node below it that must bootstrap a host of that
// platform. Other nodes refuse.
//
// What a caller can make the root spend is bounded by the grants the root
// issued, not by what the caller does. A call without a live grant of
// this root is refused at once, with a small error; a grant is good for
// one transfer, so each ssh or sudo spawn the root asked for costs it at
// most one binary, however often the node asks. The binary is never read
// into memory: it is streamed from its file over a channel (a copy buffer
// in flight), the yamux window stops the copy when the caller stops
// reading, and the grant's end is the copy's write deadline.
func (n *Node) serveBinary(ctx context.Context, c *funcs.Call, req BinaryRequest) (BinaryOffer, error) {
	if n.Router.ID() != wire.RootID {
		return BinaryOffer{}, fmt.Errorf("arbor: agent.binary is served by the root only, not node %d (%s)", n.Router.ID(), n.Router.Name())
	}
	expires, ok := n.grants.take(req.Grant, c.Src)
	if !ok {
		n.Log.Debug("agent binary refused: no grant", "to", c.Src, "platform", req.Platform)
		return BinaryOffer{}, fmt.Errorf("arbor: node %d may not fetch the agent binary for %s: it holds no live grant (the root grants one transfer for each ssh or sudo spawn it asks a node for, while that spawn runs)",
			c.Src, req.Platform)
	}
	f, size, hash, err := (&spawn.Binaries{Self: n.opts.Exe, Dir: n.opts.AgentDir}).Open(req.Platform)
	if err != nil {
		if errors.Is(err, spawn.ErrNoBinary) {
			return BinaryOffer{}, fmt.Errorf("%w at the root; %s", err, spawn.BuildHint(req.Platform))
		}
		return BinaryOffer{}, err
	}
	octx, cancel := context.WithDeadline(ctx, expires)
	defer cancel()
	ch, err := n.Router.OpenChannel(octx, c.Src, "agent.binary")
	if err != nil {
		f.Close()
		return BinaryOffer{}, fmt.Errorf("%w (sending the agent binary for %s)", err, req.Platform)
	}
	n.Log.Debug("handing out agent binary", "platform", req.Platform, "to", c.Src, "bytes", size)
	go n.sendBinary(ch, f, size, expires)
	return BinaryOffer{Channel: ch.ID, Size: size, SHA256: hash}, nil
}

// sendBinary copies size bytes of f to ch, then closes both. It ends at
// deadline, or when the link or this node closes, if the receiver stops
// reading. One runs per grant used, so their number is bounded by the
// spawns under way.
func (n *Node) sendBinary(ch *router.Channel, f *os.File, size int64, deadline time.Time) {
	defer f.Close()
	_ = ch.SetWriteDeadline(deadline)
	if _, err := io.CopyN(ch, f, size); err != nil {
		n.Log.Debug("agent binary transfer cut short", "to", ch.Dst, "error", err)
		ch.Abort()
		return
	}
	ch.Close()
}

// grantSlack is how much longer than the connect timeout a grant lives:
// the spawn request travels down and the node allocates an ID before its
// connect timeout starts.
const grantSlack = 10 * time.Second

// grantTable holds the grants for agent.binary that a root has issued
// and not seen used. A grant is an unguessable token that travels in a
// spawn request (SpawnRequest.BinaryGrant) to the node that spawns; it is
// good for one transfer, to that node only, until it expires. Entries are
// swept as grants are issued, so the table holds no more than the spawns
// started within one grant lifetime. It is safe for concurrent use; its
// zero value is ready.
type grantTable struct {
	mu sync.Mutex
	m  map[string]grant
}

type grant struct {
	node    uint32 // the node the spawn request went to: the one that may use it
	expires time.Time
}

// issue makes a grant for node valid for ttl.
func (t *grantTable) issue(node uint32, ttl time.Duration) string {
	token := rand.Text()
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[string]grant)
	}
	for k, g := range t.m {
		if !now.Before(g.expires) {
			delete(t.m, k)
		}
	}
	t.m[token] = grant{node: node, expires: now.Add(ttl)}
	return token
}

// take uses up grant token if it is live and was issued for node src, and
// says when it expires. A token shown by another node is not used up: it
// stays good for the node it was issued to.
func (t *grantTable) take(token string, src uint32) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	g, ok := t.m[token]
	if !ok || g.node != src {
		return time.Time{}, false
	}
	delete(t.m, token)
	return g.expires, time.Now().Before(g.expires)
}

// revoke ends a grant whose spawn is over ("" is none).
func (t *grantTable) revoke(token string) {
	if token == "" {
		return
	}
	t.mu.Lock()
	delete(t.m, token)
	t.mu.Unlock()
}
